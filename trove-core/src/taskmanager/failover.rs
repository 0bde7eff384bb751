//! Automatic failover (beyond upstream, which leaves a dead source to its user and lets them eject it only after
//! 90 s of heartbeat expiry).
//!
//! On every scan a task manager looks at the replication sources with no task: a source whose guest keeps
//! reporting its engine down (not answering in time, crashed, stopped) for [`CoreConfig::failover_grace`], or
//! whose guest sent no report for [`CoreConfig::failover_silence`], is failed over by the eject workflow
//! ([`super::workflows::replication::Eject`], with the reason as `automatic`): fence the old source first (its
//! guest kills the engine and keeps it read only), promote the most advanced healthy replica, the others follow
//! it, the event is recorded. The failover starts in one commit of the source and every replica taking part at the
//! versions read, so of several task managers exactly one starts it. A report that says the engine runs again
//! inside the grace ends the suspicion: a short blip is not failed over.
//!
//! On by default ([`CoreConfig::auto_failover`]); an instance's `auto_failover` overrides the deployment's.
//!
//! **Bounded loss**: replication is asynchronous, so a failover loses what the old source acknowledged and had not
//! shipped. While a source is healthy, the monitor samples its position every report interval; when it must be
//! failed over, the best candidate's position is compared with those samples: if it does not cover the source's
//! position of more than [`CoreConfig::failover_max_loss`] before the source's last sample, the failover waits
//! (re-judged on every scan: a replica may still be applying what it received) and the source's fault says why and
//! how far behind the replica is. A user who accepts the loss ejects the source by hand.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use uuid::Uuid;

use super::workflows::replication::EjectParams;
use super::TaskManager;
use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::model::{Instance, InstanceFault, InstanceFilter, ServiceStatusRecord, Workflow};
use crate::ports::{ChangeSet, Expect, ReplicaPosition, Write};
use crate::rpc::GuestTimeouts;
use crate::state::{ServiceStatus, TaskStatus};

/// How many position samples of one source are kept (at one per report interval, minutes of history).
const KEPT_SAMPLES: usize = 120;
/// How long the monitor waits for a guest's position.
const POSITION_TIMEOUT: Duration = Duration::from_secs(1);
/// The start of the fault message of a held failover (so it is written once and replaced when the failover runs).
const HELD: &str = "Automatic failover is held";

/// Whether `source`'s fault is a held failover's.
fn held(source: &Instance) -> bool {
    source
        .fault
        .as_ref()
        .is_some_and(|f| f.message.starts_with(HELD))
}

/// Positions of one healthy source, oldest first, with when they were read.
#[derive(Debug, Default)]
pub(crate) struct Samples(VecDeque<(chrono::DateTime<chrono::Utc>, ReplicaPosition)>);

impl Samples {
    fn push(&mut self, at: chrono::DateTime<chrono::Utc>, p: ReplicaPosition) {
        if self.0.len() == KEPT_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back((at, p));
    }

    fn last_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.back().map(|(t, _)| *t)
    }

    /// How far (in time) `best` is behind the source's last sample: zero when it covers it; from the last sample
    /// it covers otherwise (from the oldest kept when it covers none). `None` without samples.
    pub(crate) fn behind(&self, best: &ReplicaPosition) -> Option<Duration> {
        let (last_at, last) = self.0.back()?;
        if best.covers(last) == Some(true) {
            return Some(Duration::ZERO);
        }
        let covered = self
            .0
            .iter()
            .rev()
            .find(|(_, p)| best.covers(p) == Some(true))
            .or(self.0.front())
            .map(|(t, _)| *t)?;
        Some((*last_at - covered).to_std().unwrap_or_default())
    }
}

/// Whether a reported status says the engine is down (as opposed to running, or not there yet / on purpose).
fn engine_down(status: ServiceStatus) -> bool {
    !status.is_datastore_running()
        && !matches!(
            status,
            ServiceStatus::New
                | ServiceStatus::Building
                | ServiceStatus::Deleted
                | ServiceStatus::RestartRequired
        )
}

/// Whether failover is on for source `s`.
fn failover_on(config: &CoreConfig, s: &Instance) -> bool {
    s.auto_failover.unwrap_or(config.auto_failover)
}

fn idle(i: &Instance) -> bool {
    !i.deleted && matches!(i.task, TaskStatus::None | TaskStatus::RestartRequired)
}

/// Why source `s` must be failed over now, judged on its latest report and when this monitor first saw it down
/// (`suspect`, updated here); `None` while it is healthy or within the grace.
pub(super) fn verdict(
    config: &CoreConfig,
    st: Option<&ServiceStatusRecord>,
    now: chrono::DateTime<chrono::Utc>,
    suspect: &mut Option<chrono::DateTime<chrono::Utc>>,
) -> Option<String> {
    let st = st?;
    let silent = (now - st.updated_at).to_std().unwrap_or_default();
    if silent >= config.failover_silence {
        return Some(format!(
            "its guest sent no report for {} s",
            silent.as_secs()
        ));
    }
    if !engine_down(st.status) {
        *suspect = None;
        return None;
    }
    let since = *suspect.get_or_insert(st.updated_at);
    let down = (now - since).to_std().unwrap_or_default();
    if down < config.failover_grace {
        return None;
    }
    Some(format!(
        "its engine was reported {} for {:.1} s{}",
        st.status.description(),
        down.as_secs_f64(),
        st.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    ))
}

impl TaskManager {
    /// Starts the failovers due now (see the module docs); answers their workflows.
    pub async fn check_failovers(&self) -> Result<Vec<Uuid>> {
        let store = &self.engine.store;
        let config = &self.engine.config;
        let now = self.engine.clock.now();
        let all = store
            .list_instances(&InstanceFilter {
                include_clustered: true,
                ..Default::default()
            })
            .await?;
        let mut replicas: HashMap<Uuid, Vec<&Instance>> = HashMap::new();
        for r in all.iter().filter(|i| !i.deleted) {
            if let Some(s) = r.replica_of {
                replicas.entry(s).or_default().push(r);
            }
        }
        let mut started = Vec::new();
        let mut open: Option<Vec<Workflow>> = None;
        for s in all.iter().filter(|i| replicas.contains_key(&i.id)) {
            if !idle(s) || !failover_on(config, s) {
                self.suspects().remove(&s.id);
                continue;
            }
            let st = store.get_service_status(s.id).await?;
            let why = {
                let mut suspects = self.suspects();
                let mut suspect = suspects.get(&s.id).copied();
                let why = verdict(config, st.as_ref(), now, &mut suspect);
                match suspect {
                    Some(t) => suspects.insert(s.id, t),
                    None => suspects.remove(&s.id),
                };
                why
            };
            let Some(why) = why else {
                // Only a source reported healthy and unsuspected is asked (a frozen engine answers nothing).
                let healthy_now = st.as_ref().is_some_and(|x| {
                    x.status == ServiceStatus::Healthy
                        && (now - x.updated_at).to_std().unwrap_or_default()
                            < config.report_interval * 2
                });
                if healthy_now && !self.suspects().contains_key(&s.id) {
                    self.sample(s.id, now).await;
                }
                if held(s) {
                    // It recovered: the hold is over.
                    self.set_fault(s, None).await?;
                }
                continue;
            };
            let open = match &open {
                Some(o) => o,
                None => open.insert(store.list_open_workflows().await?),
            };
            if open.iter().any(|w| w.instance_id == s.id) {
                continue;
            }
            // The candidates: idle replicas whose engine runs and reports.
            let mut healthy = Vec::new();
            for r in &replicas[&s.id] {
                if !idle(r) || open.iter().any(|w| w.instance_id == r.id) {
                    continue;
                }
                let rs = store.get_service_status(r.id).await?;
                if rs.as_ref().is_some_and(|x| {
                    x.status.is_datastore_running()
                        && (now - x.updated_at).to_std().unwrap_or_default()
                            < config.failover_silence
                }) {
                    healthy.push(*r);
                }
            }
            if healthy.is_empty() {
                tracing::warn!(source = %s.id, reason = %why, "a replication source is down and no replica is healthy: no failover");
                continue;
            }
            if let Some(held) = self.loss_beyond_bound(s.id, &healthy).await {
                tracing::warn!(source = %s.id, reason = %why, held = %held, "automatic failover held");
                self.hold(s, &held).await?;
                continue;
            }
            match self.start_failover(s, &healthy, &why).await {
                Ok(wf) => {
                    tracing::warn!(source = %s.id, reason = %why, workflow = %wf, "failing a replication source over");
                    self.suspects().remove(&s.id);
                    started.push(wf);
                }
                Err(Error::Conflict { .. }) => {
                    tracing::debug!(source = %s.id, "the source changed (another task manager fails it over)");
                }
                Err(e) => return Err(e),
            }
        }
        self.samples().retain(|id, _| replicas.contains_key(id));
        Ok(started)
    }

    /// Commits the failover of `source` to one of `replicas`: the eject workflow, every member EJECTING.
    async fn start_failover(
        &self,
        source: &Instance,
        replicas: &[&Instance],
        why: &str,
    ) -> Result<Uuid> {
        let now = self.engine.clock.now();
        let params = EjectParams {
            replicas: replicas.iter().map(|r| r.id).collect(),
            automatic: Some(why.to_string()),
        };
        let wf = Workflow::new(source.id, &params, now)?;
        let mut cs = ChangeSet::new().with(Write::Workflow {
            workflow: wf.clone(),
            expect: Expect::Absent,
        });
        for m in std::iter::once(source).chain(replicas.iter().copied()) {
            let mut m = m.clone();
            let expect = Expect::Version(m.version);
            m.task = TaskStatus::Ejecting;
            m.updated = now;
            cs.push(Write::Instance {
                instance: m,
                expect,
            });
        }
        self.engine.store.commit(cs).await?;
        Ok(wf.id)
    }

    /// Samples the position of healthy source `id` (once a report interval).
    async fn sample(&self, id: Uuid, now: chrono::DateTime<chrono::Utc>) {
        let due = self
            .samples()
            .get(&id)
            .and_then(Samples::last_at)
            .is_none_or(|t| {
                (now - t).to_std().unwrap_or_default() >= self.engine.config.report_interval
            });
        if !due {
            return;
        }
        if let Ok(p) = self.quick_guest(id).replication_position().await {
            self.samples().entry(id).or_default().push(now, p);
        }
    }

    /// Why failing source `id` over to the best of `candidates` would lose more than the bound, if it would.
    async fn loss_beyond_bound(&self, id: Uuid, candidates: &[&Instance]) -> Option<String> {
        let bound = self.engine.config.failover_max_loss;
        if bound.is_zero() {
            return None;
        }
        let mut best: Option<(Uuid, ReplicaPosition)> = None;
        for c in candidates {
            if let Ok(p) = self.quick_guest(c.id).replication_position().await {
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| p.ahead_of(b) == Some(true))
                {
                    best = Some((c.id, p));
                }
            }
        }
        // No candidate answers: the eject workflow says so.
        let (best_id, best) = best?;
        let behind = self.samples().get(&id)?.behind(&best)?;
        (behind > bound).then(|| {
            format!(
                "{HELD}: the most advanced replica {best_id} is {:.1} s behind what this source had acknowledged \
                 when it was last seen healthy (failover_max_loss {:.1} s); it fails over once a replica catches up. \
                 To fail over now and lose those writes, eject this source (`openstack database instance eject`).",
                behind.as_secs_f64(),
                bound.as_secs_f64()
            )
        })
    }

    /// Records why the failover of `source` waits in its fault (once).
    async fn hold(&self, source: &Instance, why: &str) -> Result<()> {
        if held(source) {
            return Ok(());
        }
        let fault = InstanceFault {
            message: why.to_string(),
            details: "automatic failover".into(),
            created: self.engine.clock.now(),
        };
        self.set_fault(source, Some(fault)).await
    }

    /// Sets (or clears) `source`'s fault at the version read; a concurrent change wins (the next scan judges again).
    async fn set_fault(&self, source: &Instance, fault: Option<InstanceFault>) -> Result<()> {
        let mut s = source.clone();
        let expect = Expect::Version(s.version);
        s.fault = fault;
        s.updated = self.engine.clock.now();
        match self
            .engine
            .store
            .commit(ChangeSet::new().with(Write::Instance {
                instance: s,
                expect,
            }))
            .await
        {
            Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn quick_guest(&self, id: Uuid) -> crate::rpc::GuestClient {
        self.engine.guest_within(
            id,
            GuestTimeouts {
                low: POSITION_TIMEOUT,
                high: POSITION_TIMEOUT,
            },
        )
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Samples>> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn suspects(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, chrono::DateTime<chrono::Utc>>> {
        self.suspects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(status: ServiceStatus, at: chrono::DateTime<chrono::Utc>) -> ServiceStatusRecord {
        ServiceStatusRecord {
            instance_id: Uuid::nil(),
            status,
            reason: None,
            volume: None,
            load: None,
            updated_at: at,
        }
    }

    #[test]
    fn the_loss_of_a_failover_is_measured_against_the_sampled_positions() {
        let t0 = chrono::Utc::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let off = |o| ReplicaPosition::Offset { offset: o };
        let mut s = Samples::default();
        assert_eq!(s.behind(&off(0)), None, "no samples: unknown");
        for (t, o) in [(0, 10), (2, 20), (4, 30), (6, 40)] {
            s.push(at(t), off(o));
        }
        assert_eq!(s.behind(&off(40)), Some(Duration::ZERO));
        assert_eq!(s.behind(&off(45)), Some(Duration::ZERO));
        assert_eq!(s.behind(&off(35)), Some(Duration::from_secs(2)));
        assert_eq!(s.behind(&off(20)), Some(Duration::from_secs(4)));
        assert_eq!(
            s.behind(&off(5)),
            Some(Duration::from_secs(6)),
            "at least the kept history"
        );
        for i in 0..KEPT_SAMPLES as i64 {
            s.push(at(10 + i), off(100 + i as u64));
        }
        assert_eq!(s.0.len(), KEPT_SAMPLES);
    }

    #[test]
    fn a_source_is_failed_over_after_the_grace_or_the_silence_and_a_blip_is_not() {
        let config = CoreConfig::default();
        let t0 = chrono::Utc::now();
        let secs = |s: f64| t0 + chrono::Duration::from_std(Duration::from_secs_f64(s)).unwrap();
        let mut suspect = None;
        // Healthy: nothing.
        assert_eq!(
            verdict(
                &config,
                Some(&report(ServiceStatus::Healthy, t0)),
                secs(1.0),
                &mut suspect
            ),
            None
        );
        // Reported down at 1 s: suspected, not failed over inside the grace.
        let down = report(ServiceStatus::Blocked, secs(1.0));
        assert_eq!(verdict(&config, Some(&down), secs(1.5), &mut suspect), None);
        assert_eq!(suspect, Some(secs(1.0)));
        // Healthy again inside the grace (a blip): the suspicion ends.
        assert_eq!(
            verdict(
                &config,
                Some(&report(ServiceStatus::Healthy, secs(2.0))),
                secs(2.5),
                &mut suspect
            ),
            None
        );
        assert_eq!(suspect, None);
        // Down for the whole grace: failed over.
        let down = report(ServiceStatus::Crashed, secs(3.0));
        assert_eq!(verdict(&config, Some(&down), secs(3.1), &mut suspect), None);
        let why = verdict(
            &config,
            Some(&down),
            secs(3.0) + chrono::Duration::from_std(config.failover_grace).unwrap(),
            &mut suspect,
        );
        assert!(why.is_some_and(|w| w.contains("engine was reported")));
        // A guest silent for failover_silence: failed over at once.
        let mut fresh = None;
        let old = report(ServiceStatus::Healthy, t0);
        let why = verdict(
            &config,
            Some(&old),
            t0 + chrono::Duration::from_std(config.failover_silence).unwrap(),
            &mut fresh,
        );
        assert!(why.is_some_and(|w| w.contains("no report")));
        // Building or never reported: nothing.
        assert_eq!(verdict(&config, None, t0, &mut fresh), None);
        assert!(!engine_down(ServiceStatus::Building));
    }
}
