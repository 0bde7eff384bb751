//! Load-driven scaling (beyond upstream): on every scan a task manager judges each cluster's scaling policy on its
//! members' latest load reports (guests send them with their heartbeats) and grows or shrinks the cluster through
//! the same workflows a user's `grow` and `shrink` start.
//!
//! - The policy's metric is averaged over the members; every member must have reported it within three report
//!   intervals (a cluster with a silent member is not judged: its load is unknown).
//! - A breach (the average above `grow_above`, or below `shrink_below`) must last `breach_secs` as this worker saw
//!   it; a scan that sees the average back inside the band ends it.
//! - After each action the cluster waits `cooldown_secs` (from when the action ended: the workflow records it).
//! - Never beyond `min_members`..=`max_members` (and never below the datastore's own minimum: the policy was
//!   checked against it), never while another cluster task runs: the decision starts its workflow in one commit
//!   of the cluster at the version read, so of several task managers exactly one acts.
//! - A shrink removes the newest members; the shrink workflow moves their data away first and refuses (a fault,
//!   nothing deleted) what cannot be drained.
//! - Every decision is recorded as a `scaling` event of the cluster (metric values per member, the average, the
//!   threshold, the action, or why it could not be taken), listed by `GET /clusters/{id}/events`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::workflows::cluster::{
    cluster_members, member_rows, ClusterGrowParams, ClusterShrinkParams, NewMember,
};
use super::TaskManager;
use crate::error::{Error, Result};
use crate::model::{Cluster, ClusterTask, Event, Instance, Resource, ScalingPolicy, Workflow};
use crate::ports::{ChangeSet, Expect, Write};

/// A breach of a policy's band that a worker is watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Breach {
    /// Above the band (grow) or below it (shrink).
    grow: bool,
    /// When this worker first saw it.
    since: DateTime<Utc>,
}

/// What one scan decided for one cluster.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    Grow(u32),
    Shrink(u32),
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TaskManager {
    /// One scaling scan over every cluster with a policy; answers the workflows it started (the new members'
    /// creates and the cluster's grow or shrink).
    pub async fn check_scaling(&self) -> Result<Vec<Uuid>> {
        let mut started = Vec::new();
        for c in self.engine.store.list_clusters(None).await? {
            match c.scaling.clone() {
                Some(p) if c.task == ClusterTask::None => match self.judge(&c, &p).await {
                    Ok(ids) => started.extend(ids),
                    Err(e) => {
                        tracing::warn!(cluster = %c.id, error = %e, "scaling decision failed")
                    }
                },
                Some(_) => {}
                None => {
                    lock(&self.breaches).remove(&c.id);
                }
            }
        }
        Ok(started)
    }

    async fn judge(&self, c: &Cluster, p: &ScalingPolicy) -> Result<Vec<Uuid>> {
        let e = &self.engine;
        let now = e.clock.now();
        let members = cluster_members(e.store.as_ref(), c.id).await?;
        if members.is_empty()
            || members
                .iter()
                .any(|m| m.task != crate::state::TaskStatus::None)
        {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
        let fresh = chrono::Duration::from_std(e.config.report_interval * 3)
            .unwrap_or(chrono::Duration::seconds(6));
        let values: Vec<(Uuid, f64)> = e
            .store
            .get_service_statuses(&ids)
            .await?
            .into_iter()
            .filter(|s| now - s.updated_at <= fresh)
            .filter_map(|s| Some((s.instance_id, s.load.as_ref()?.get(p.metric)?)))
            .collect();
        if values.len() < members.len() {
            return Ok(Vec::new());
        }
        let average = values.iter().map(|(_, v)| v).sum::<f64>() / values.len() as f64;
        let above = average > p.grow_above;
        let below = average < p.shrink_below;
        let breach = {
            let mut b = lock(&self.breaches);
            if !above && !below {
                b.remove(&c.id);
                return Ok(Vec::new());
            }
            let entry = b.entry(c.id).or_insert(Breach {
                grow: above,
                since: now,
            });
            if entry.grow != above {
                *entry = Breach {
                    grow: above,
                    since: now,
                };
            }
            *entry
        };
        let lasted = (now - breach.since).num_milliseconds() as f64 / 1000.0;
        if lasted < p.breach_secs as f64 {
            return Ok(Vec::new());
        }
        if let Some(last) = c.last_scaled {
            if (now - last).num_seconds() < p.cooldown_secs as i64 {
                return Ok(Vec::new());
            }
        }
        // Bounds count primaries (a Redis cluster's replicas serve their shards, they do not add any).
        let n = members
            .iter()
            .filter(|m| !c.replicas.contains_key(&m.id))
            .count() as u32;
        let decision = if above && n + p.step <= p.max_members {
            Decision::Grow(p.step)
        } else if below && n >= p.min_members + p.step {
            Decision::Shrink(p.step)
        } else {
            // At a bound: nothing to do, nothing to record again and again.
            return Ok(Vec::new());
        };
        let threshold = if above { p.grow_above } else { p.shrink_below };
        let reason = format!(
            "{} averaged {average:.2} over {n} members for {lasted:.0} s, {} {threshold}",
            p.metric.as_str(),
            if above { "above" } else { "below" },
        );
        lock(&self.breaches).remove(&c.id);
        let details = |action: &str, after: u32| {
            serde_json::json!({
                "cluster_id": c.id, "metric": p.metric.as_str(), "average": average,
                "values": values.iter().map(|(id, v)| serde_json::json!({"id": id, "value": v})).collect::<Vec<_>>(),
                "threshold": threshold, "breach_secs": lasted, "action": action,
                "members_before": n, "members_after": after, "reason": reason,
            })
        };
        let mut cs = ChangeSet::new();
        let mut cast = Vec::new();
        let mut cluster = c.clone();
        let (action, after, wf) = match decision {
            Decision::Grow(k) => {
                let new = self.grow_rows(&mut cs, c, &members, k, now).await?;
                cast.extend(new.iter().map(|(_, w)| *w));
                let params = ClusterGrowParams {
                    cluster_id: c.id,
                    new_members: new.iter().map(|(i, _)| *i).collect(),
                    automatic: Some(reason.clone()),
                };
                cluster.task = ClusterTask::GrowingCluster;
                ("grow", n + k, Workflow::new(members[0].id, &params, now)?)
            }
            Decision::Shrink(k) => {
                // The newest primaries no replica serves (a replica would have to leave with its primary).
                let leaving: Vec<Uuid> = members
                    .iter()
                    .rev()
                    .filter(|m| {
                        !c.replicas.contains_key(&m.id) && !c.replicas.values().any(|p| *p == m.id)
                    })
                    .take(k as usize)
                    .map(|m| m.id)
                    .collect();
                if leaving.len() < k as usize {
                    return Ok(Vec::new());
                }
                let params = ClusterShrinkParams {
                    cluster_id: c.id,
                    leaving,
                    automatic: Some(reason.clone()),
                };
                cluster.task = ClusterTask::ShrinkingCluster;
                ("shrink", n - k, Workflow::new(members[0].id, &params, now)?)
            }
        };
        cast.push(wf.id);
        cluster.fault = None;
        cluster.updated = now;
        let event = |ok: bool, message: String, details: serde_json::Value| Event {
            id: Uuid::new_v4(),
            tenant_id: c.tenant_id.clone(),
            kind: "scaling".into(),
            instances: ids.clone(),
            at: now,
            ok,
            message,
            details,
        };
        cs.push(Write::Workflow {
            workflow: wf,
            expect: Expect::Absent,
        });
        cs.push(Write::Cluster {
            cluster,
            expect: Expect::Version(c.version),
        });
        cs.push(Write::Event(event(
            true,
            format!(
                "Cluster {} is to {action} to {after} members: {reason}.",
                c.id
            ),
            details(action, after),
        )));
        let cs = if action == "grow" {
            cs.check_quota(
                c.tenant_id.clone(),
                &[Resource::Instances, Resource::Ram, Resource::Volumes],
            )
        } else {
            cs
        };
        match e.store.commit(cs).await {
            Ok(()) => {
                tracing::info!(cluster = %c.id, action, members = after, %reason, "scaling decision");
                Ok(cast)
            }
            // Another worker (or a user) changed the cluster first: nothing was started.
            Err(Error::Conflict { .. }) => Ok(Vec::new()),
            Err(err) => {
                // Recorded once per breach: the breach starts again from now.
                let msg = format!("Cluster {} could not {action}: {err}", c.id);
                let mut d = details(action, after);
                d["error"] = serde_json::Value::String(err.to_string());
                e.store
                    .commit(ChangeSet::new().with(Write::Event(event(false, msg, d))))
                    .await?;
                Ok(Vec::new())
            }
        }
    }

    /// The rows of `k` new members equal to the cluster's first, pushed to `cs`; answers (member, workflow) ids.
    async fn grow_rows(
        &self,
        cs: &mut ChangeSet,
        c: &Cluster,
        members: &[Instance],
        k: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, Uuid)>> {
        let e = &self.engine;
        let first = &members[0];
        let flavor = e
            .store
            .get_flavor(&first.flavor_id)
            .await?
            .ok_or_else(|| Error::not_found("Flavor", first.flavor_id.clone()))?;
        let version = e
            .store
            .get_datastore_version(c.datastore_version_id)
            .await?
            .ok_or_else(|| Error::not_found("Datastore version", c.datastore_version_id))?;
        let overrides = match c.configuration_id {
            Some(id) => e
                .store
                .get_configuration(id)
                .await?
                .map(|g| g.values)
                .unwrap_or_default(),
            None => Default::default(),
        };
        let mut out = Vec::new();
        for i in 0..k {
            let (inst, wf) = member_rows(
                cs,
                &e.sealing.at_rest,
                c,
                NewMember {
                    name: format!("{}-member-{}", c.name, members.len() + i as usize + 1),
                    flavor: &flavor,
                    volume_size: first.volume_size,
                    volume_type: first.volume_type.clone(),
                    availability_zone: None,
                    region: first.region.clone(),
                    version: &version,
                    overrides: &overrides,
                    created: now + chrono::Duration::microseconds(i64::from(i)),
                },
            )?;
            out.push((inst.id, wf));
        }
        Ok(out)
    }
}
