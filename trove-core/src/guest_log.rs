//! Guest-log bookkeeping shared by every engine (upstream `guestagent/guest_log.py`): show, enable, disable,
//! publish and discard a log, whatever engine writes it.
//!
//! An engine describes its logs through [`LogEngine`] (turn a log on or off, its size, read a byte range,
//! remember a [`LogState`]); [`list_logs`] and [`log_action`] do the rest against the object store of
//! [`GuestLogContext::store`]. Publishing copies the bytes written since the last publish into one new object
//! `<container>/<prefix><part>` (parts numbered from 1, 8 digits) and rewrites the metafile
//! `<container>/<metafile>` (JSON: size published, parts); discarding deletes the parts and the metafile. Showing
//! or listing never touches the engine, so it adds nothing to the log it reports on.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    exposed_log_type, exposed_logs, log_metafile, log_prefix, log_status, GuestLog, LogAction,
    LogActionRequest, LogState, LogStatus, Manager,
};
use crate::ports::{ByteStream, DynBackupStore};

/// Where published logs go: an object store and the container (first key segment) inside it.
#[derive(Clone)]
pub struct LogStore {
    store: DynBackupStore,
    container: String,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Logs go to `container` in `store` (upstream default container: [`crate::model::DEFAULT_LOG_CONTAINER`]).
    pub fn new(store: DynBackupStore, container: impl Into<String>) -> LogStore {
        LogStore {
            store,
            container: container.into(),
        }
    }

    /// The container name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The object store.
    pub fn store(&self) -> &DynBackupStore {
        &self.store
    }

    /// The store key of an object of the container.
    pub fn key(&self, object: &str) -> String {
        format!("{}/{object}", self.container)
    }
}

/// What a guest passes to its strategy's log methods: which instance it is, and where logs are published
/// (`None`: this deployment has no log store, so publishing is refused).
#[derive(Debug, Clone)]
pub struct GuestLogContext {
    /// The instance whose logs these are (part of every object name).
    pub instance_id: Uuid,
    /// The object store for published logs.
    pub store: Option<LogStore>,
}

/// The engine side of guest logs: what differs from one engine to the next.
///
/// # Contract
/// - `set_enabled` changes the engine's logging now and durably (it survives an engine restart); it answers
///   whether the engine must restart for the change to take effect.
/// - `size` of a log that was never written is 0; `read(from, to)` yields exactly the bytes `from..to`.
/// - `state`/`save_state` remember a [`LogState`] per log across requests (and, for real engines, restarts).
#[async_trait]
pub trait LogEngine: Send + Sync {
    /// The manager (names the logs and their objects).
    fn manager(&self) -> Manager;
    /// The remembered state of a log (default state when none was saved).
    async fn state(&self, name: &str) -> Result<LogState>;
    /// Remembers the state of a log.
    async fn save_state(&self, name: &str, state: &LogState) -> Result<()>;
    /// Turns the engine's logging of `name` on or off; answers whether a restart is needed.
    async fn set_enabled(&self, name: &str, on: bool) -> Result<bool>;
    /// Bytes written to the log so far.
    async fn size(&self, name: &str) -> Result<u64>;
    /// The bytes `from..to` of the log.
    async fn read(&self, name: &str, from: u64, to: u64) -> Result<ByteStream>;
}

/// The metafile's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMetafile {
    /// Log name.
    pub name: String,
    /// Bytes published.
    pub log_size: u64,
    /// Published parts (object names, in order).
    pub parts: Vec<String>,
}

fn no_store(name: &str) -> Error {
    Error::not_implemented(format!(
        "Cannot publish or discard log '{}': no log store is configured for this guest.",
        name.escape_default()
    ))
}

async fn show(
    engine: &dyn LogEngine,
    ctx: &GuestLogContext,
    name: &str,
    restart_required: bool,
) -> Result<GuestLog> {
    let manager = engine.manager();
    let log_type = exposed_log_type(manager, name)?;
    let st = engine.state(name).await?;
    let size = engine.size(name).await?;
    let mut status = log_status(log_type, st.enabled, size, st.published);
    if restart_required {
        status = LogStatus::RestartRequired;
    }
    let pending = if size < st.published {
        size
    } else {
        size - st.published
    };
    let (container, prefix) = match (&ctx.store, st.published > 0) {
        (Some(s), true) => (
            Some(s.container().to_string()),
            Some(log_prefix(ctx.instance_id, manager, name)),
        ),
        _ => (None, None),
    };
    Ok(GuestLog {
        name: name.to_string(),
        log_type,
        status,
        published: st.published,
        pending,
        container,
        prefix,
        metafile: log_metafile(ctx.instance_id, manager, name),
    })
}

/// Every exposed log of the engine (upstream `guest_log_list`).
pub async fn list_logs(engine: &dyn LogEngine, ctx: &GuestLogContext) -> Result<Vec<GuestLog>> {
    let mut out = Vec::new();
    for name in exposed_logs(engine.manager()) {
        out.push(show(engine, ctx, name, false).await?);
    }
    Ok(out)
}

/// Deletes every published part and the metafile of a log; returns how many objects went.
async fn delete_parts(
    engine: &dyn LogEngine,
    ctx: &GuestLogContext,
    store: &LogStore,
    name: &str,
) -> Result<usize> {
    let manager = engine.manager();
    let prefix = store.key(&log_prefix(ctx.instance_id, manager, name));
    let mut n = 0;
    for o in store.store().list(&prefix).await? {
        store.store().delete(&o.key).await?;
        n += 1;
    }
    store
        .store()
        .delete(&store.key(&log_metafile(ctx.instance_id, manager, name)))
        .await?;
    Ok(n)
}

async fn publish(engine: &dyn LogEngine, ctx: &GuestLogContext, name: &str) -> Result<()> {
    let store = ctx.store.as_ref().ok_or_else(|| no_store(name))?;
    let manager = engine.manager();
    let mut st = engine.state(name).await?;
    let size = engine.size(name).await?;
    if size < st.published {
        // Rotated: what was published belongs to an older file.
        delete_parts(engine, ctx, store, name).await?;
        st.published = 0;
        st.next_part = 0;
        engine.save_state(name, &st).await?;
    }
    if size == st.published {
        return Ok(());
    }
    let part = st.next_part + 1;
    let object = format!("{}{part:08}", log_prefix(ctx.instance_id, manager, name));
    let data = engine.read(name, st.published, size).await?;
    store.store().put(&store.key(&object), data).await?;
    st.published = size;
    st.next_part = part;
    let parts = (1..=part)
        .map(|p| format!("{}{p:08}", log_prefix(ctx.instance_id, manager, name)))
        .collect();
    let meta = LogMetafile {
        name: name.to_string(),
        log_size: size,
        parts,
    };
    let bytes = serde_json::to_vec(&meta).map_err(|e| Error::backend("guest", e, false))?;
    let stream: ByteStream = Box::pin(futures::stream::iter([Ok(bytes)]));
    store
        .store()
        .put(
            &store.key(&log_metafile(ctx.instance_id, manager, name)),
            stream,
        )
        .await?;
    engine.save_state(name, &st).await
}

/// One action on one log (upstream `guest_log_action`); answers the log as it is afterwards.
///
/// Unknown logs are 404, more than one flag is 400. Publishing turns a user log on first when it is off (as
/// upstream does) and needs a log store (501 without one); discarding deletes the published parts and starts
/// the log's publishing from its beginning again.
pub async fn log_action(
    engine: &dyn LogEngine,
    ctx: &GuestLogContext,
    req: &LogActionRequest,
) -> Result<GuestLog> {
    let actions = req.actions()?;
    let name = req.name.as_str();
    exposed_log_type(engine.manager(), name)?;
    if actions.contains(&LogAction::Publish) && ctx.store.is_none() {
        return Err(no_store(name));
    }
    let mut restart_required = false;
    for action in actions {
        match action {
            LogAction::Show => {}
            LogAction::Enable | LogAction::Disable | LogAction::Publish => {
                let on = action != LogAction::Disable;
                let mut st = engine.state(name).await?;
                if st.enabled != on {
                    restart_required |= engine.set_enabled(name, on).await?;
                    st.enabled = on;
                    engine.save_state(name, &st).await?;
                }
                if action == LogAction::Publish {
                    publish(engine, ctx, name).await?;
                }
            }
            LogAction::Discard => {
                let mut st = engine.state(name).await?;
                match &ctx.store {
                    Some(store) => {
                        delete_parts(engine, ctx, store, name).await?;
                    }
                    None if st.published > 0 => return Err(no_store(name)),
                    None => {}
                }
                st.published = 0;
                st.next_part = 0;
                engine.save_state(name, &st).await?;
            }
        }
    }
    show(engine, ctx, name, restart_required).await
}

/// Logs kept in memory, for simulated engines and tests: a byte buffer per log that grows by
/// [`MemoryLogs::write`] while the log is on. Clones share the buffers; [`MemoryLogs::engine`] gives the
/// [`LogEngine`] of a manager over them.
#[derive(Debug, Clone, Default)]
pub struct MemoryLogs {
    logs: Arc<Mutex<LogBuffers>>,
}

/// Per log: the bytes written and the remembered state.
type LogBuffers = BTreeMap<String, (Vec<u8>, LogState)>;

impl MemoryLogs {
    /// No logs written, every log off.
    pub fn new() -> MemoryLogs {
        MemoryLogs::default()
    }

    /// The log engine of `manager` over these buffers.
    pub fn engine(&self, manager: Manager) -> MemoryLogEngine {
        MemoryLogEngine {
            manager,
            logs: self.clone(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LogBuffers) -> T) -> T {
        f(&mut self.logs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Appends a line to log `name` if it is on (an engine writes only to logs that are on).
    pub fn write(&self, name: &str, line: &str) {
        self.with(|m| {
            if let Some((buf, st)) = m.get_mut(name) {
                if st.enabled {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                }
            }
        });
    }

    /// The bytes written to log `name`.
    pub fn contents(&self, name: &str) -> Vec<u8> {
        self.with(|m| m.get(name).map(|(b, _)| b.clone()).unwrap_or_default())
    }

    /// Empties log `name` (a rotation).
    pub fn rotate(&self, name: &str) {
        self.with(|m| {
            if let Some((b, _)) = m.get_mut(name) {
                b.clear();
            }
        });
    }
}

/// The [`LogEngine`] of one manager over [`MemoryLogs`].
#[derive(Debug, Clone)]
pub struct MemoryLogEngine {
    manager: Manager,
    logs: MemoryLogs,
}

#[async_trait]
impl LogEngine for MemoryLogEngine {
    fn manager(&self) -> Manager {
        self.manager
    }
    async fn state(&self, name: &str) -> Result<LogState> {
        Ok(self
            .logs
            .with(|m| m.get(name).map(|(_, s)| *s).unwrap_or_default()))
    }
    async fn save_state(&self, name: &str, state: &LogState) -> Result<()> {
        self.logs
            .with(|m| m.entry(name.to_string()).or_default().1 = *state);
        Ok(())
    }
    async fn set_enabled(&self, name: &str, on: bool) -> Result<bool> {
        self.logs
            .with(|m| m.entry(name.to_string()).or_default().1.enabled = on);
        Ok(false)
    }
    async fn size(&self, name: &str) -> Result<u64> {
        Ok(self
            .logs
            .with(|m| m.get(name).map_or(0, |(b, _)| b.len() as u64)))
    }
    async fn read(&self, name: &str, from: u64, to: u64) -> Result<ByteStream> {
        let bytes = self.logs.with(|m| {
            m.get(name)
                .and_then(|(b, _)| b.get(from as usize..to as usize).map(<[u8]>::to_vec))
        });
        let bytes = bytes.ok_or_else(|| {
            Error::backend(
                "guest",
                format!("log {name} has no bytes {from}..{to}"),
                false,
            )
        })?;
        Ok(Box::pin(futures::stream::iter([Ok(bytes)])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackupStore;
    use crate::model::DEFAULT_LOG_CONTAINER;
    use futures::StreamExt;

    async fn object(store: &DynBackupStore, key: &str) -> Vec<u8> {
        let mut s = store.get(key).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend(c.unwrap());
        }
        out
    }

    fn ctx(store: Option<DynBackupStore>) -> GuestLogContext {
        GuestLogContext {
            instance_id: Uuid::new_v4(),
            store: store.map(|s| LogStore::new(s, DEFAULT_LOG_CONTAINER)),
        }
    }

    #[tokio::test]
    async fn enable_write_publish_partial_disable_discard() {
        let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
        let ctx = ctx(Some(store.clone()));
        let mem = MemoryLogs::new();
        let logs = mem.engine(Manager::Mysql);
        let act = |a| LogActionRequest::new("general", a);

        let all = list_logs(&logs, &ctx).await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|l| l.status == LogStatus::Disabled));
        mem.write("general", "not logged while off");
        assert_eq!(logs.size("general").await.unwrap(), 0);

        let l = log_action(&logs, &ctx, &act(LogAction::Enable))
            .await
            .unwrap();
        assert_eq!(
            (l.status, l.pending, l.published),
            (LogStatus::Enabled, 0, 0)
        );
        assert_eq!(l.container, None);

        mem.write("general", "SELECT 1");
        let l = log_action(&logs, &ctx, &act(LogAction::Show))
            .await
            .unwrap();
        assert_eq!((l.status, l.pending), (LogStatus::Ready, 9));

        let l = log_action(&logs, &ctx, &act(LogAction::Publish))
            .await
            .unwrap();
        assert_eq!(
            (l.status, l.published, l.pending),
            (LogStatus::Published, 9, 0)
        );
        assert_eq!(l.container.as_deref(), Some(DEFAULT_LOG_CONTAINER));
        let prefix = l.prefix.clone().unwrap();
        assert_eq!(prefix, format!("{}/mysql-general/", ctx.instance_id));
        let key1 = format!("{DEFAULT_LOG_CONTAINER}/{prefix}00000001");
        assert_eq!(object(&store, &key1).await, b"SELECT 1\n");

        mem.write("general", "SELECT 2");
        let l = log_action(&logs, &ctx, &act(LogAction::Show))
            .await
            .unwrap();
        assert_eq!(
            (l.status, l.published, l.pending),
            (LogStatus::Partial, 9, 9)
        );
        let l = log_action(&logs, &ctx, &act(LogAction::Publish))
            .await
            .unwrap();
        assert_eq!(l.status, LogStatus::Published);
        let key2 = format!("{DEFAULT_LOG_CONTAINER}/{prefix}00000002");
        assert_eq!(object(&store, &key2).await, b"SELECT 2\n");
        let meta: LogMetafile = serde_json::from_slice(
            &object(&store, &format!("{DEFAULT_LOG_CONTAINER}/{}", l.metafile)).await,
        )
        .unwrap();
        assert_eq!(meta.log_size, 18);
        assert_eq!(meta.parts.len(), 2);

        let l = log_action(&logs, &ctx, &act(LogAction::Disable))
            .await
            .unwrap();
        assert_eq!(l.status, LogStatus::Disabled);
        mem.write("general", "not logged while off");
        assert_eq!(logs.size("general").await.unwrap(), 18);

        let l = log_action(&logs, &ctx, &act(LogAction::Discard))
            .await
            .unwrap();
        assert_eq!((l.published, l.pending), (0, 18));
        assert_eq!(l.prefix, None);
        assert!(store
            .list(&format!("{DEFAULT_LOG_CONTAINER}/{}", ctx.instance_id))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn publish_turns_the_log_on_and_rotation_starts_afresh() {
        let store: DynBackupStore = Arc::new(MemoryBackupStore::new());
        let ctx = ctx(Some(store.clone()));
        let mem = MemoryLogs::new();
        let logs = mem.engine(Manager::Postgresql);
        let l = log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("general", LogAction::Publish),
        )
        .await
        .unwrap();
        assert_eq!(l.status, LogStatus::Enabled);
        mem.write("general", "a long line before rotation");
        log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("general", LogAction::Publish),
        )
        .await
        .unwrap();
        mem.rotate("general");
        mem.write("general", "new");
        let l = log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("general", LogAction::Show),
        )
        .await
        .unwrap();
        assert_eq!((l.status, l.pending), (LogStatus::Rotated, 4));
        let l = log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("general", LogAction::Publish),
        )
        .await
        .unwrap();
        assert_eq!((l.status, l.published), (LogStatus::Published, 4));
        let parts = store
            .list(&format!("{DEFAULT_LOG_CONTAINER}/{}", l.prefix.unwrap()))
            .await
            .unwrap();
        assert_eq!(parts.len(), 1, "the parts of the rotated file were deleted");
    }

    #[tokio::test]
    async fn bad_requests_and_no_store() {
        let logs = MemoryLogs::new().engine(Manager::Mariadb);
        let ctx = ctx(None);
        let e = log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("audit", LogAction::Show),
        )
        .await
        .unwrap_err();
        assert_eq!(e.fault().status, 404);
        let mut two = LogActionRequest::new("general", LogAction::Enable);
        two.disable = true;
        assert_eq!(
            log_action(&logs, &ctx, &two)
                .await
                .unwrap_err()
                .fault()
                .status,
            400
        );
        let e = log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("general", LogAction::Publish),
        )
        .await
        .unwrap_err();
        assert_eq!(e.fault().status, 501, "{e}");
        assert!(e.to_string().contains("no log store"), "{e}");
        // Nothing published: discarding without a store is harmless.
        log_action(
            &logs,
            &ctx,
            &LogActionRequest::new("general", LogAction::Discard),
        )
        .await
        .unwrap();
        assert!(list_logs(&MemoryLogs::new().engine(Manager::Redis), &ctx)
            .await
            .unwrap()
            .is_empty());
    }
}
