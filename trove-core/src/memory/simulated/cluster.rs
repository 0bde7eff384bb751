//! The simulated engines as cluster members: Redis members own hash slots (spread evenly by `rebalance`, given
//! away by `drain`), MySQL-family members (Galera) hold everything and copy a running member's data when they
//! join (a state transfer). Load figures are what a test set with [`SimulatedEngine::set_load`].

use async_trait::async_trait;
use uuid::Uuid;

use super::{lock, SimSnapshot, SimulatedEngine, SimulatedStrategy};
use crate::error::{Error, Result};
use crate::model::Manager;
use crate::model::Secret;
use crate::ports::{ClusterFacet, ClusterMemberStatus, ClusterSpec, LoadMetrics, Moved};
use std::collections::BTreeSet;

/// Redis Cluster's hash slots.
pub(crate) const SLOTS: u32 = 16384;

/// A simulated engine's membership.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimCluster {
    /// The cluster.
    pub id: Uuid,
    /// Who belongs, as this member was last told.
    pub members: Vec<Uuid>,
    /// Hash slots owned (Redis).
    pub slots: u32,
    /// Redis: the `host:port` of the primary it serves as a replica.
    pub replica_of: Option<String>,
}

/// The fair share of slots of the `i`th of `n` primaries.
pub(crate) fn share(i: usize, n: usize) -> u32 {
    let n32 = u32::try_from(n).unwrap_or(u32::MAX).max(1);
    SLOTS / n32 + u32::from(i < (SLOTS % n32) as usize)
}

impl SimulatedEngine {
    /// Sets the load figures the engine reports.
    pub fn set_load(&self, load: LoadMetrics) {
        lock(&self.state).load = load;
    }
    /// The cluster the engine is a member of.
    pub fn cluster_id(&self) -> Option<Uuid> {
        lock(&self.state).cluster.as_ref().map(|c| c.id)
    }
    /// Hash slots the engine owns (Redis members).
    pub fn cluster_slots(&self) -> u32 {
        lock(&self.state).cluster.as_ref().map_or(0, |c| c.slots)
    }
}

impl SimulatedStrategy {
    fn redis(&self) -> bool {
        self.manager == Manager::Redis
    }

    /// The running engine of member `id` of `spec`, joined to it.
    fn member_engine(&self, spec: &ClusterSpec, id: Uuid) -> Result<SimulatedEngine> {
        let e = lock(&self.peers).get(&id).cloned().ok_or_else(|| {
            Error::backend("simulated", format!("member {id} has no engine"), true)
        })?;
        let st = lock(&e.state);
        if !st.running || st.cluster.as_ref().map(|c| c.id) != Some(spec.cluster_id) {
            return Err(Error::backend(
                "simulated",
                format!("member {id} is not a running member of the cluster"),
                true,
            ));
        }
        drop(st);
        Ok(e)
    }

    /// Gives each of `primaries` its fair share; answers the slots that changed hands.
    fn spread(&self, spec: &ClusterSpec, primaries: &[Uuid], away: &[Uuid]) -> Result<Moved> {
        let mut engines = Vec::new();
        for id in primaries.iter().chain(away) {
            engines.push((*id, self.member_engine(spec, *id)?));
        }
        let mut moved = 0;
        for (i, (id, e)) in engines.iter().enumerate() {
            let target = if away.contains(id) {
                0
            } else {
                share(i, primaries.len())
            };
            let mut st = lock(&e.state);
            if let Some(c) = st.cluster.as_mut() {
                moved += c.slots.saturating_sub(target);
                c.slots = target;
            }
        }
        Ok(Moved {
            slots: moved,
            keys: 0,
        })
    }
}

#[async_trait]
impl ClusterFacet for SimulatedStrategy {
    async fn join(&self, spec: &ClusterSpec) -> Result<()> {
        if spec.member(self.instance_id).is_none() {
            return Err(Error::bad_request(
                "This instance is not a member of the cluster it was asked to join.",
            ));
        }
        let already = lock(&self.engine.state).cluster.as_ref().map(|c| c.id);
        if already == Some(spec.cluster_id) {
            return Ok(());
        }
        if let Some(other) = already {
            return Err(Error::conflict(format!(
                "This instance is already a member of cluster {other}."
            )));
        }
        // Galera: a joiner takes a running member's data (a state transfer).
        if !self.redis() {
            let donor = spec
                .members
                .iter()
                .filter(|m| m.instance_id != self.instance_id)
                .find_map(|m| self.member_engine(spec, m.instance_id).ok());
            if let Some(d) = donor {
                let snap = SimSnapshot::of(&lock(&d.state));
                snap.apply(&mut *self.running()?);
            }
        }
        let replica_of = spec
            .member(self.instance_id)
            .and_then(|me| me.replica_of)
            .and_then(|p| spec.member(p))
            .filter(|_| self.redis())
            .map(|p| format!("{}:{}", p.host, p.port));
        let mut st = self.running()?;
        st.cluster = Some(SimCluster {
            id: spec.cluster_id,
            members: spec.members.iter().map(|m| m.instance_id).collect(),
            slots: 0,
            replica_of,
        });
        Ok(())
    }

    async fn set_members(&self, spec: &ClusterSpec) -> Result<()> {
        let mut st = self.running()?;
        match st.cluster.as_mut() {
            Some(c) if c.id == spec.cluster_id => {
                c.members = spec.members.iter().map(|m| m.instance_id).collect();
                Ok(())
            }
            _ => Err(Error::bad_request(
                "This instance is not a member of the cluster.",
            )),
        }
    }

    async fn rebalance(&self, spec: &ClusterSpec) -> Result<Moved> {
        self.member_engine(spec, self.instance_id)?;
        if !self.redis() {
            return Ok(Moved::default());
        }
        let primaries: Vec<Uuid> = spec.primaries().map(|m| m.instance_id).collect();
        self.spread(spec, &primaries, &[])
    }

    async fn drain(&self, spec: &ClusterSpec, leaving: &[Uuid]) -> Result<Moved> {
        let staying: Vec<Uuid> = spec
            .primaries()
            .map(|m| m.instance_id)
            .filter(|id| !leaving.contains(id))
            .collect();
        if staying.is_empty() {
            return Err(Error::bad_request(
                "No member would stay to take over the leaving members' data.",
            ));
        }
        if !self.redis() {
            return Ok(Moved::default());
        }
        self.spread(spec, &staying, leaving)
    }

    async fn status(&self) -> Result<ClusterMemberStatus> {
        let (cluster, redis) = {
            let st = self.running()?;
            (st.cluster.clone(), self.redis())
        };
        let Some(c) = cluster else {
            return Ok(ClusterMemberStatus {
                state: "not a member".into(),
                ..Default::default()
            });
        };
        let peers = lock(&self.peers).clone();
        let seen = c
            .members
            .iter()
            .filter(|m| {
                peers.get(m).is_some_and(|e| {
                    let st = lock(&e.state);
                    st.running && st.cluster.as_ref().map(|x| x.id) == Some(c.id)
                })
            })
            .count();
        Ok(ClusterMemberStatus {
            ready: true,
            members_seen: u32::try_from(seen).unwrap_or(u32::MAX),
            slots: redis.then_some(c.slots),
            keys: None,
            state: if redis { "ok" } else { "Synced" }.into(),
            replica_of: c.replica_of.clone(),
        })
    }

    /// Redis members: each user as JSON (name, host, password, databases: a simulation keeps passwords).
    async fn users(&self) -> Result<Vec<Secret>> {
        if !self.redis() {
            return Ok(Vec::new());
        }
        let st = self.running()?;
        Ok(st
            .users
            .iter()
            .map(|((name, host), u)| {
                Secret::new(
                    serde_json::json!([name, host, u.password.expose(), u.databases]).to_string(),
                )
            })
            .collect())
    }

    async fn set_users(&self, users: &[Secret]) -> Result<()> {
        if !self.redis() {
            return Ok(());
        }
        let mut st = self.running()?;
        for line in users {
            let (name, host, password, databases): (String, String, String, BTreeSet<String>) =
                serde_json::from_str(line.expose())
                    .map_err(|e| Error::bad_request(format!("not a user line: {e}")))?;
            st.users.insert(
                (name, host),
                super::SimUser {
                    password: Secret::new(password),
                    databases,
                },
            );
        }
        Ok(())
    }

    async fn load(&self) -> Result<LoadMetrics> {
        Ok(self.running()?.load.clone())
    }

    async fn recovery_position(&self) -> Result<Option<u64>> {
        let st = lock(&self.engine.state);
        Ok((!self.redis()).then_some(st.position))
    }

    async fn bootstrap(&self, spec: &ClusterSpec) -> Result<()> {
        let mut st = lock(&self.engine.state);
        if st.cluster.as_ref().map(|c| c.id) != Some(spec.cluster_id) {
            return Err(Error::bad_request(
                "This instance is not a member of the cluster.",
            ));
        }
        if !st.running {
            st.running = true;
            st.crashed = None;
            st.starts += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_every_slot_once() {
        for n in 1..9 {
            let total: u32 = (0..n).map(|i| share(i, n)).sum();
            assert_eq!(total, super::SLOTS, "{n} primaries");
        }
        assert_eq!(share(0, 3), 5462);
        assert_eq!(share(2, 3), 5461);
    }
}
