//! PostgreSQL's WAL archive on the volume: `archive_command` copies every completed segment into a spool
//! directory (`<volume>/wal-archive`) once the first full backup made it; an incremental backup ships the
//! segments since its parent from there, and each backup prunes what no later incremental can need.
//!
//! Until the spool exists the command succeeds without copying (nothing could use the segments), so an instance
//! that never takes backups keeps no archive. A segment is copied under a temporary name and renamed, so the spool
//! never holds half a segment; copying one again (PostgreSQL retries after a crash) replaces it with the same bytes.

use std::path::{Path, PathBuf};

use trove_core::{Error, Result};

use crate::common::io_err;

/// The spool directory's name on the volume.
pub(super) const SPOOL: &str = "wal-archive";

/// A shell word holding `s` (single-quoted).
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `archive_command` copying into `spool`, as a `postgresql.conf` value (quoted).
pub(super) fn archive_command(spool: &Path) -> String {
    let d = shell_word(&spool.display().to_string());
    let cmd = format!("test ! -d {d} || {{ cp %p {d}/%f.part && mv -f {d}/%f.part {d}/%f; }}");
    format!("'{}'", cmd.replace('\'', "''"))
}

/// The `restore_command` a recovery reads segments with from `dir`.
pub(super) fn restore_command(dir: &Path) -> String {
    let d = shell_word(&dir.display().to_string());
    format!("cp {d}/%f %p")
}

/// Where in the WAL a segment file (24 hex digits: timeline, log, segment) lies, without its timeline; with
/// the default 16 MiB segments a log holds 256 of them.
pub(super) fn segment_index(name: &str) -> Option<u64> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * 256 + seg)
}

/// The file names of `spool` an incremental from segment `from` to segment `to` (both included) ships: those
/// segments and every timeline history file. Refused when a segment in between is missing: the WAL since the
/// parent is no longer (or not yet) all there, and an incremental with a gap could not be replayed.
pub(super) fn select(names: &[String], from: &str, to: &str) -> Result<Vec<String>> {
    let bad = |s: &str| Error::backend("postgresql", format!("'{s}' is no WAL segment"), false);
    let lo = segment_index(from).ok_or_else(|| bad(from))?;
    let hi = segment_index(to).ok_or_else(|| bad(to))?;
    let mut picked = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if n.ends_with(".history") {
            picked.push(n.clone());
        } else if let Some(i) = segment_index(n).filter(|i| (lo..=hi).contains(i)) {
            seen.insert(i);
            picked.push(n.clone());
        }
    }
    if let Some(missing) = (lo..=hi).find(|i| !seen.contains(i)) {
        return Err(Error::unprocessable(format!(
            "The WAL this incremental needs is not all on the instance any more (segment {} of {from}..{to} is \
             missing): a later backup pruned it. Take the incremental on the latest backup (--incremental without \
             --parent), or a full backup.",
            missing - lo
        )));
    }
    picked.sort();
    Ok(picked)
}

/// Where pruning stops: `own` (the first segment an incremental on the backup just taken ships), or the older
/// `retain` (the instance's oldest backup's, so an incremental on it still finds its WAL).
pub(super) fn keep_from<'a>(own: &'a str, retain: Option<&'a str>) -> &'a str {
    match (segment_index(own), retain.and_then(segment_index)) {
        (Some(o), Some(r)) if r < o => retain.unwrap_or(own),
        _ => own,
    }
}

/// The segment files in `spool`.
pub(super) fn list(spool: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(spool).map_err(|e| io_err("read", spool, e))?;
    Ok(rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.ends_with(".part"))
        .collect())
}

/// Removes the segments (and backup history files) of `spool` before segment `keep_from`: no incremental on a
/// backup that ended at or after it needs them.
pub(super) fn prune(spool: &Path, keep_from: &str) -> Result<usize> {
    let Some(keep) = segment_index(keep_from) else {
        return Ok(0);
    };
    let mut removed = 0;
    for n in list(spool)? {
        let index = segment_index(n.get(..24).unwrap_or(""));
        if index.is_some_and(|i| i < keep) && !n.ends_with(".history") {
            let p: PathBuf = spool.join(&n);
            std::fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(tl: u32, log: u32, seg: u32) -> String {
        format!("{tl:08X}{log:08X}{seg:08X}")
    }

    #[test]
    fn segment_positions_cross_logs_and_ignore_the_timeline() {
        assert_eq!(segment_index(&seg(1, 0, 3)), Some(3));
        assert_eq!(segment_index(&seg(1, 1, 0)), Some(256));
        assert_eq!(segment_index(&seg(2, 0, 0xFF)), Some(255));
        assert_eq!(segment_index("00000002.history"), None);
        assert_eq!(segment_index("zz0000010000000000000003"), None);
    }

    #[test]
    fn an_incremental_ships_the_range_and_histories_and_refuses_a_gap() {
        let names = vec![
            seg(1, 0, 0xFE),
            seg(1, 0, 0xFF),
            seg(1, 1, 0),
            seg(1, 1, 1),
            "00000002.history".to_string(),
            format!("{}.00000028.backup", seg(1, 0, 0xFE)),
        ];
        let got = select(&names, &seg(1, 0, 0xFF), &seg(1, 1, 0)).unwrap();
        assert_eq!(
            got,
            vec![
                seg(1, 0, 0xFF),
                seg(1, 1, 0),
                "00000002.history".to_string()
            ]
        );
        let gap = select(&names, &seg(1, 0, 0xFD), &seg(1, 1, 1)).unwrap_err();
        assert_eq!(gap.fault().status, 422);
        assert!(gap.to_string().contains("latest backup"), "{gap}");
    }

    #[test]
    fn pruning_keeps_what_a_later_incremental_needs() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            seg(1, 0, 1),
            seg(1, 0, 2),
            seg(1, 0, 3),
            "00000002.history".into(),
            format!("{}.00000028.backup", seg(1, 0, 1)),
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        assert_eq!(prune(dir.path(), &seg(1, 0, 2)).unwrap(), 2);
        let mut left = list(dir.path()).unwrap();
        left.sort();
        assert_eq!(
            left,
            vec![seg(1, 0, 2), seg(1, 0, 3), "00000002.history".to_string()]
        );
    }

    #[test]
    fn pruning_stops_at_the_oldest_live_backup() {
        assert_eq!(keep_from(&seg(1, 0, 9), Some(&seg(1, 0, 3))), seg(1, 0, 3));
        assert_eq!(keep_from(&seg(1, 0, 9), Some(&seg(1, 0, 12))), seg(1, 0, 9));
        assert_eq!(keep_from(&seg(1, 0, 9), None), seg(1, 0, 9));
        assert_eq!(keep_from(&seg(1, 0, 9), Some("junk")), seg(1, 0, 9));
    }

    #[test]
    fn commands_quote_the_paths() {
        let c = archive_command(Path::new("/v/it's"));
        let inner = c[1..c.len() - 1].replace("''", "'");
        let d = r"'/v/it'\''s'";
        assert_eq!(
            inner,
            format!("test ! -d {d} || {{ cp %p {d}/%f.part && mv -f {d}/%f.part {d}/%f; }}")
        );
        assert_eq!(restore_command(Path::new("/r")), "cp '/r'/%f %p");
    }
}
