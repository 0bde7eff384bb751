//! What every engine's backups share: [`EngineBackup`] (the engine's own tool), pipelines of processes whose
//! output streams into the backup store ([`pipeline_output`]) or which are fed from it ([`feed_pipeline`]), and
//! the strategy's [`BackupFacet`] over them.

use async_trait::async_trait;
use futures::StreamExt;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use trove_core::ports::{
    BackupJob, BackupOutcome, BackupProgress, ByteStream, DynBackupStore, RestoreSpec,
};
use trove_core::{Error, Result};

use crate::common::{RunAs, BACKEND};

/// The compressor every engine's stream goes through (`zstd`, fast at level 3 and multi-threaded).
pub(crate) const COMPRESS: &[&str] = &["zstd", "-3", "-T0", "-q", "-c"];
/// Its inverse.
pub(crate) const DECOMPRESS: &[&str] = &["zstd", "-d", "-q", "-c"];

/// An engine's backup tool.
#[async_trait]
pub(crate) trait EngineBackup: Send + Sync {
    /// Whether backups can be incremental.
    fn incremental(&self) -> bool;
    /// Streams a backup of the running engine into `store` under `job.key` (see
    /// [`BackupFacet`](trove_core::ports::BackupFacet) for the contract).
    async fn backup(
        &self,
        store: &DynBackupStore,
        job: &BackupJob,
        progress: &BackupProgress,
    ) -> Result<BackupOutcome>;
    /// Makes the engine's (empty) data directory from the chain. Every object is verified before its bytes are
    /// applied to the data directory ([`trove_core::ports::verified_object`] into a staging directory).
    async fn restore(&self, store: &DynBackupStore, spec: &RestoreSpec) -> Result<()>;
}

/// One process of a pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Run as the engine user (else as the guest).
    pub as_engine: bool,
}

impl Step {
    /// `program args...`, run as the guest.
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Step {
        Step {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            as_engine: false,
        }
    }

    /// The same, with one more argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Step {
        self.args.push(a.into());
        self
    }

    /// Run as the engine user.
    pub fn engine_user(mut self) -> Step {
        self.as_engine = true;
        self
    }

    fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn command(&self, run_as: RunAs, cwd: &Path) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .current_dir(cwd)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("HOME", cwd)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.as_engine {
            run_as.apply_tokio(&mut c);
        }
        c
    }
}

/// The running processes of a pipeline, first to last.
struct Running {
    children: Vec<(String, Child)>,
}

impl Running {
    /// Waits for every process; the first failure names the process and the end of its error output.
    async fn finish(mut self) -> Result<()> {
        let mut first_err = None;
        for (name, child) in &mut self.children {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            let st = child
                .wait()
                .await
                .map_err(|e| Error::backend(BACKEND, format!("{name}: {e}"), false))?;
            if !st.success() && first_err.is_none() {
                let tail: String = err
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ");
                first_err = Some(Error::backend(
                    BACKEND,
                    format!("{name} failed ({st}): {}", crate::common::tail(&tail, 600)),
                    false,
                ));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn kill(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

fn spawn_err(name: &str, e: std::io::Error) -> Error {
    Error::backend(BACKEND, format!("cannot start {name}: {e}"), false)
}

/// Starts `steps` with each one's output piped into the next; the first reads `stdin`; answers the processes and
/// the last one's output.
fn spawn_pipeline(
    steps: &[Step],
    run_as: RunAs,
    cwd: &Path,
    stdin: Stdio,
) -> Result<(Running, Stdio)> {
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut input = Some(stdin);
    for s in steps {
        let mut c = s.command(run_as, cwd);
        c.stdin(input.take().unwrap_or_else(Stdio::null))
            .stdout(Stdio::piped());
        let mut child = c.spawn().map_err(|e| spawn_err(&s.name(), e))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| Error::backend(BACKEND, "no stdout pipe", false))?;
        let out: Stdio = out
            .try_into()
            .map_err(|e: std::io::Error| Error::backend(BACKEND, e, false))?;
        input = Some(out);
        children.push((s.name(), child));
    }
    Ok((Running { children }, input.unwrap_or_else(Stdio::null)))
}

/// The output of a pipeline as a byte stream; the stream ends with an error instead of its end when any process
/// of the pipeline fails, so a store's `put` of it leaves no object.
pub(crate) fn pipeline_output(steps: &[Step], run_as: RunAs, cwd: &Path) -> Result<ByteStream> {
    let (last, first) = steps
        .split_last()
        .ok_or_else(|| Error::backend(BACKEND, "empty pipeline", false))?;
    let (mut running, stdin) = spawn_pipeline(first, run_as, cwd, Stdio::null())?;
    let mut c = last.command(run_as, cwd);
    c.stdin(stdin).stdout(Stdio::piped());
    let mut child = c.spawn().map_err(|e| spawn_err(&last.name(), e))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| Error::backend(BACKEND, "no stdout pipe", false))?;
    running.children.push((last.name(), child));
    struct St {
        out: tokio::process::ChildStdout,
        running: Option<Running>,
        buf: Vec<u8>,
    }
    let st = St {
        out,
        running: Some(running),
        buf: vec![0u8; 256 * 1024],
    };
    Ok(futures::stream::unfold(st, |mut st| async move {
        let running = st.running.as_mut()?;
        match st.out.read(&mut st.buf).await {
            Ok(0) => {
                let r = st.running.take()?.finish().await;
                r.err().map(|e| (Err(e), st))
            }
            Ok(n) => Some((Ok(st.buf[..n].to_vec()), st)),
            Err(e) => {
                running.kill();
                st.running = None;
                Some((Err(Error::backend(BACKEND, e, true)), st))
            }
        }
    })
    .boxed())
}

/// Feeds `data` into a pipeline whose last process writes where it is told (its output is discarded); answers
/// once every process ended well. A stream error (a checksum mismatch at its end) kills the pipeline and is
/// answered.
pub(crate) async fn feed_pipeline(
    mut data: ByteStream,
    steps: &[Step],
    run_as: RunAs,
    cwd: &Path,
) -> Result<()> {
    let mut running = spawn_pipeline_stdin(steps, run_as, cwd)?;
    let mut stdin = running.0;
    let mut failed = None;
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(c) => {
                if let Err(e) = stdin.write_all(&c).await {
                    // The pipeline ended early: its own error explains why, unless the stream was damaged (a
                    // process choking on damaged bytes is no explanation), so the rest is read to its end.
                    while let Some(rest) = data.next().await {
                        if let Err(e) = rest {
                            drop(stdin);
                            let _ = running.1.finish().await;
                            return Err(e);
                        }
                    }
                    failed = Some(Error::backend(
                        BACKEND,
                        format!("pipeline closed: {e}"),
                        false,
                    ));
                    break;
                }
            }
            Err(e) => {
                running.1.kill();
                drop(stdin);
                let _ = running.1.finish().await;
                return Err(e);
            }
        }
    }
    drop(stdin);
    let r = running.1.finish().await;
    match (r, failed) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    }
}

fn spawn_pipeline_stdin(
    steps: &[Step],
    run_as: RunAs,
    cwd: &Path,
) -> Result<(tokio::process::ChildStdin, Running)> {
    let (first, rest) = steps
        .split_first()
        .ok_or_else(|| Error::backend(BACKEND, "empty pipeline", false))?;
    let mut c = first.command(run_as, cwd);
    c.stdin(Stdio::piped()).stdout(if rest.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    });
    let mut child = c.spawn().map_err(|e| spawn_err(&first.name(), e))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::backend(BACKEND, "no stdin pipe", false))?;
    let mut children = vec![(first.name(), child)];
    for (i, s) in rest.iter().enumerate() {
        let prev = children
            .last_mut()
            .and_then(|(_, c)| c.stdout.take())
            .ok_or_else(|| Error::backend(BACKEND, "no stdout pipe", false))?;
        let prev: Stdio = prev
            .try_into()
            .map_err(|e: std::io::Error| Error::backend(BACKEND, e, false))?;
        let mut c = s.command(run_as, cwd);
        c.stdin(prev).stdout(if i + 1 == rest.len() {
            Stdio::null()
        } else {
            Stdio::piped()
        });
        children.push((s.name(), c.spawn().map_err(|e| spawn_err(&s.name(), e))?));
    }
    Ok((stdin, Running { children }))
}

/// Unpacks the object of `piece` (zstd-compressed) with `extract`, the pipeline that reads it decompressed on its
/// standard input (`tar -x -C DIR`, `mbstream -x -C DIR`). The object's size and SHA-256 are verified as it
/// streams ([`trove_core::ports::verified_object`]): what `extract` wrote may be used only when this answers `Ok`.
pub(crate) async fn unpack_verified(
    store: &DynBackupStore,
    piece: &trove_core::ports::BackupPiece,
    extract: Vec<Step>,
    run_as: RunAs,
    cwd: &Path,
) -> Result<()> {
    let mut steps = vec![Step::new(DECOMPRESS[0], &DECOMPRESS[1..])];
    steps.extend(extract);
    let data = trove_core::ports::verified_object(store, piece).await?;
    feed_pipeline(data, &steps, run_as, cwd).await
}

/// A directory beside the data directory, on the same volume, emptied first: where a restore unpacks and checks
/// before anything moves into the data directory.
pub(crate) fn staging_dir(volume: &Path, name: &str, run_as: RunAs) -> Result<PathBuf> {
    let d = volume.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| crate::common::io_err("create", &d, e))?;
    crate::common::set_mode(&d, 0o700)?;
    run_as.own(&d)?;
    Ok(d)
}

/// Moves every entry of `from` into `to` (same filesystem) and removes `from`.
pub(crate) fn move_contents(from: &Path, to: &Path) -> Result<()> {
    let rd = std::fs::read_dir(from).map_err(|e| crate::common::io_err("read", from, e))?;
    for e in rd.flatten() {
        let dst = to.join(e.file_name());
        std::fs::rename(e.path(), &dst).map_err(|err| crate::common::io_err("move", &dst, err))?;
    }
    let _ = std::fs::remove_dir_all(from);
    Ok(())
}

/// The one full backup of a chain, for an engine that restores full backups only (an incremental or a longer
/// chain is refused before anything is read, and so is a point in time).
pub(crate) fn only_full(
    spec: &RestoreSpec,
    manager: trove_core::model::Manager,
) -> Result<&trove_core::ports::BackupPiece> {
    if spec.restore_time.is_some() {
        return Err(Error::unprocessable(format!(
            "Point-in-time restore is not supported for datastore {manager}."
        )));
    }
    match spec.chain.as_slice() {
        [full] if !full.incremental => Ok(full),
        [] => Err(Error::bad_request("A restore needs at least one backup.")),
        _ => Err(Error::unprocessable(format!(
            "Incremental backups are not supported for datastore {manager}: restore from a full backup."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> RunAs {
        RunAs::resolve(None).expect("current user")
    }

    #[tokio::test]
    async fn a_pipeline_streams_its_output_and_fails_when_a_process_fails() {
        let dir = tempfile::tempdir().expect("dir");
        let ok = [
            Step::new("/bin/sh", &["-c", "head -c 1000000 /dev/zero"]),
            Step::new("/bin/sh", &["-c", "cat"]),
        ];
        let mut s = pipeline_output(&ok, me(), dir.path()).expect("spawn");
        let mut n = 0;
        while let Some(c) = s.next().await {
            n += c.expect("chunk").len();
        }
        assert_eq!(n, 1_000_000);
        let bad = [
            Step::new("/bin/sh", &["-c", "echo partial; echo broken >&2; exit 3"]),
            Step::new("/bin/sh", &["-c", "cat"]),
        ];
        let mut s = pipeline_output(&bad, me(), dir.path()).expect("spawn");
        let mut last = None;
        while let Some(c) = s.next().await {
            last = Some(c);
        }
        let e = last
            .expect("an item")
            .expect_err("the failure ends the stream");
        assert!(e.to_string().contains("broken"), "{e}");
    }

    #[test]
    fn only_a_single_full_backup_restores_without_incrementals() {
        use trove_core::model::Manager;
        use trove_core::ports::BackupPiece;
        let piece = |incremental| BackupPiece {
            backup_id: uuid::Uuid::new_v4(),
            key: "c/k".into(),
            checksum: "00".into(),
            size: 1,
            position: None,
            incremental,
        };
        let spec = |chain| RestoreSpec {
            chain,
            restore_time: None,
            replica: false,
        };
        assert!(only_full(&spec(vec![piece(false)]), Manager::Redis).is_ok());
        let status = |s: &RestoreSpec| only_full(s, Manager::Redis).unwrap_err().fault().status;
        assert_eq!(status(&spec(vec![])), 400);
        assert_eq!(status(&spec(vec![piece(false), piece(true)])), 422);
        assert_eq!(status(&spec(vec![piece(true)])), 422);
        let mut pit = spec(vec![piece(false)]);
        pit.restore_time = Some(chrono::Utc::now());
        assert_eq!(status(&pit), 422);
    }

    #[tokio::test]
    async fn a_fed_pipeline_gets_every_byte_and_a_stream_error_stops_it() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("out");
        let steps = [Step::new("/bin/sh", &["-c", "cat > out"])];
        let data = futures::stream::iter(vec![Ok(vec![1u8; 70_000]), Ok(vec![2u8; 5])]).boxed();
        feed_pipeline(data, &steps, me(), dir.path())
            .await
            .expect("fed");
        assert_eq!(std::fs::metadata(&out).expect("out").len(), 70_005);
        let data = futures::stream::iter(vec![
            Ok(vec![1u8; 10]),
            Err(Error::unprocessable("damaged")),
        ])
        .boxed();
        let e = feed_pipeline(data, &steps, me(), dir.path())
            .await
            .expect_err("the stream's error");
        assert!(e.to_string().contains("damaged"), "{e}");
        // A process that gives up on the damaged bytes before their end: still the stream's error.
        let quitter = [Step::new("/bin/sh", &["-c", "exit 2"])];
        let mut chunks: Vec<Result<Vec<u8>>> = (0..8).map(|_| Ok(vec![3u8; 1 << 20])).collect();
        chunks.push(Err(Error::unprocessable("damaged")));
        let e = feed_pipeline(
            futures::stream::iter(chunks).boxed(),
            &quitter,
            me(),
            dir.path(),
        )
        .await
        .expect_err("the stream's error");
        assert!(e.to_string().contains("damaged"), "{e}");
    }
}
