//! Looking for secrets at rest: which files under a directory hold any of a set of probe strings.

use std::path::{Path, PathBuf};

/// Probe passwords for one test run: `Zq9-Leak-<tag>-<random>` (unique per run, so nothing from another run or
/// another test can match).
pub fn probe(tag: &str) -> String {
    format!(
        "Zq9-Leak-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Files and directories under `dir` whose name contains `needle` (what a deleted instance must not leave).
pub fn named_after(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p.display().to_string());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

/// Every regular file under `root` (recursively, symlinks not followed) that holds one of `needles`, with the
/// needle found; files that cannot be read are listed with the reason (a scan that cannot look is no proof). A
/// file or directory removed while the scan runs (a recycled WAL segment) holds nothing any more and is skipped.
pub fn files_holding(root: &Path, needles: &[String]) -> Vec<(PathBuf, String)> {
    let finders: Vec<(memchr::memmem::Finder<'_>, &String)> = needles
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| (memchr::memmem::Finder::new(n.as_bytes()), n))
        .collect();
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                found.push((dir, "unreadable directory".into()));
                continue;
            }
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_file() {
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        for (f, n) in &finders {
                            if f.find(&bytes).is_some() {
                                found.push((path.clone(), (*n).clone()));
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => found.push((path, format!("unreadable: {e}"))),
                }
            }
        }
    }
    found
}
