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

use std::collections::HashMap;
use uuid::Uuid;

use super::workflows::replication::EjectParams;
use super::TaskManager;
use crate::config::CoreConfig;
use crate::error::{Error, Result};
use crate::model::{Instance, InstanceFilter, ServiceStatusRecord, Workflow};
use crate::ports::{ChangeSet, Expect, Write};
use crate::state::{ServiceStatus, TaskStatus};

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
            let Some(why) = why else { continue };
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
            updated_at: at,
        }
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
