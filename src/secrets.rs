//! The deployment's sealing keys ([`trove_core::seal`]), kept outside the infrastructure store: in the
//! environment variable [`KEYS_ENV`], or in a key file readable by its owner only.
//!
//! Both hold hex keys (64 digits each, as `openssl rand -hex 32` prints them): the first seals, the others
//! only open. To rotate, put a new key first and keep the old ones until every workflow sealed with them has
//! ended (closed workflows forget their secrets).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use trove_core::seal::{SealKey, Sealer};
use trove_core::{Error, Result};

/// Environment variable with the deployment's keys (hex, comma separated, the sealing key first); it wins over
/// the key file.
pub const KEYS_ENV: &str = "TROVE_SEAL_KEYS";

fn parse_keys(text: &str, source: &str) -> Result<Sealer> {
    let mut keys = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| SealKey::from_hex(k).map_err(|e| Error::bad_request(format!("{source}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    if keys.is_empty() {
        return Err(Error::bad_request(format!(
            "{source} holds no sealing key; put one in it (`openssl rand -hex 32`)."
        )));
    }
    let current = keys.remove(0);
    Ok(Sealer::new(current, keys))
}

/// The deployment's sealer: from [`KEYS_ENV`] when set, else from the key file `path`, which is made (mode 0600,
/// one new key) when it does not exist. A key file that others than its owner may read is refused.
pub fn load_or_create_sealer(path: &Path) -> Result<Sealer> {
    if let Ok(text) = std::env::var(KEYS_ENV) {
        return parse_keys(&text, KEYS_ENV);
    }
    let io = |what: &str, e: std::io::Error| {
        Error::backend(
            "secrets",
            format!("cannot {what} the sealing key file {}: {e}", path.display()),
            false,
        )
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let key = SealKey::generate();
            let text = format!(
                "# trove-rs sealing keys: the first seals, the others only open. Keep this file secret.\n{}\n",
                key.to_hex().expose()
            );
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| io("write", e))?;
            tracing::info!(path = %path.display(), key = key.id(), "made a new sealing key");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create", e)),
    }
    let meta = std::fs::metadata(path).map_err(|e| io("read", e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::bad_request(format!(
            "The sealing key file {} may be read by others than its owner; run `chmod 600 {}`.",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| io("read", e))?;
    parse_keys(&text, &format!("the sealing key file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_made_private_reused_and_refused_when_others_may_read_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("seal.key");
        let first = load_or_create_sealer(&p).expect("made");
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let again = load_or_create_sealer(&p).expect("read");
        assert_eq!(first.current_id(), again.current_id());
        let sealed = first.seal(b"v", "c");
        assert_eq!(again.open(&sealed, "c").expect("open"), b"v");
        // Rotation: a new key first, the old one kept.
        let old = std::fs::read_to_string(&p).expect("read");
        let new = SealKey::generate();
        std::fs::write(&p, format!("{}\n{old}", new.to_hex().expose())).expect("write");
        let rotated = load_or_create_sealer(&p).expect("rotated");
        assert_eq!(rotated.current_id(), new.id());
        assert_eq!(rotated.open(&sealed, "c").expect("old value opens"), b"v");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_or_create_sealer(&p).expect_err("readable by others");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&p, "zz-not-hex\n").expect("write");
        let e = load_or_create_sealer(&p).expect_err("bad key");
        assert!(!e.to_string().contains("zz-not-hex"), "{e}");
    }
}
