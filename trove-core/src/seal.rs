//! Sealing: what must never rest in clear (passwords in a workflow's parameters, guest requests and replies on the
//! bus) is encrypted with an authenticated cipher (ChaCha20-Poly1305) before it is stored or sent.
//!
//! - A [`SealKey`] is 32 random bytes with a short id (the first bytes of its SHA-256). Sealed text reads
//!   `tsv1.<key id>.<hex of nonce and ciphertext>`; the id says which key opens it.
//! - A [`Sealer`] holds the key that seals and the previous keys that still open (rotation: add a new key in
//!   front, keep the old ones until nothing sealed with them is left).
//! - The deployment's sealer (its keys kept outside the infrastructure store: a 0600 file or an environment
//!   variable, read by the binaries) seals workflow parameters. Without one, a per-process key is used: what it
//!   sealed cannot be opened after a restart.
//! - Each guest's messages are sealed with a key derived ([`SealKey::for_guest`], HKDF-SHA256) from the guest's
//!   own key, so only that guest and the control plane can read them.
//! - Every sealing names a context (what the value is for), bound into the ciphertext as associated data: a value
//!   sealed for one purpose does not open for another.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::model::Secret;

const PREFIX: &str = "tsv1";
const NONCE_LEN: usize = 12;
const BACKEND: &str = "seal";

/// A 32-byte key of the sealing cipher.
#[derive(Clone)]
pub struct SealKey {
    id: String,
    key: Key,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({}, ***)", self.id)
    }
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> SealKey {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        SealKey::from_bytes(bytes)
    }

    /// The key made of `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> SealKey {
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        SealKey {
            id,
            key: Key::from(bytes),
        }
    }

    /// Parses the 64 hex digits of a key (as [`SealKey::to_hex`] writes it); errors never repeat the text.
    pub fn from_hex(text: &str) -> Result<SealKey> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        bytes.map(SealKey::from_bytes).ok_or_else(|| {
            Error::bad_request(
                "A sealing key must be 64 hex digits (32 bytes); make one with `openssl rand -hex 32`.",
            )
        })
    }

    /// The key as 64 hex digits (to keep in a key file).
    pub fn to_hex(&self) -> Secret {
        Secret::new(hex::encode(self.key))
    }

    /// The key that seals a guest's messages, derived from the guest's own key (which never leaves the guest's
    /// private file and the control plane's key lookup).
    pub fn for_guest(guest_key: &Secret) -> SealKey {
        let hk =
            hkdf::Hkdf::<Sha256>::new(Some(b"trove-rs guest seal"), guest_key.expose().as_bytes());
        let mut bytes = [0u8; 32];
        hk.expand(b"tsv1", &mut bytes)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SealKey::from_bytes(bytes)
    }

    /// The key's id (shown in sealed text and in errors; it reveals nothing of the key).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The key that seals and the keys that still open.
#[derive(Clone, Debug)]
pub struct Sealer {
    keys: Arc<Vec<SealKey>>,
}

impl Sealer {
    /// A sealer with `current` (seals and opens) and `previous` keys (open only).
    pub fn new(current: SealKey, previous: Vec<SealKey>) -> Sealer {
        let mut keys = vec![current];
        keys.extend(previous);
        Sealer {
            keys: Arc::new(keys),
        }
    }

    /// The sealer of this process when none is configured: one random key shared by every component of the
    /// process (what it seals cannot be opened after a restart).
    pub fn process_default() -> Sealer {
        static DEFAULT: OnceLock<Sealer> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Sealer::new(SealKey::generate(), Vec::new()))
            .clone()
    }

    /// The sealer of one guest's messages.
    pub fn for_guest(guest_key: &Secret) -> Sealer {
        Sealer::new(SealKey::for_guest(guest_key), Vec::new())
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        self.keys[0].id()
    }

    /// Whether `text` is sealed text.
    pub fn is_sealed(text: &[u8]) -> bool {
        text.starts_with(PREFIX.as_bytes()) && text.get(PREFIX.len()) == Some(&b'.')
    }

    /// Seals `plain` for `context`.
    pub fn seal(&self, plain: &[u8], context: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = ChaCha20Poly1305::new(&key.key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message that fits in memory");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{PREFIX}.{}.{}", key.id(), hex::encode(out))
    }

    /// Opens what [`Sealer::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>> {
        let bad = |why: &str| {
            Error::backend(
                BACKEND,
                format!("cannot open a sealed value ({context}): {why}"),
                false,
            )
        };
        let mut parts = sealed.trim().splitn(3, '.');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it is not sealed text"));
        };
        let key = self.keys.iter().find(|k| k.id() == id).ok_or_else(|| {
            bad(&format!(
                "it was sealed with key {id}, which is not among this deployment's keys ({}); restore that key \
                 (keep old keys as previous keys when rotating)",
                self.keys.iter().map(SealKey::id).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let raw = hex::decode(body).map_err(|_| bad("its body is not hex"))?;
        if raw.len() < NONCE_LEN {
            return Err(bad("it is too short"));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        ChaCha20Poly1305::new(&key.key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| bad("it was altered, or sealed for another purpose"))
    }

    /// Seals `value` as JSON.
    pub fn seal_json<T: Serialize>(&self, value: &T, context: &str) -> Result<String> {
        let plain = serde_json::to_vec(value).map_err(|e| Error::backend(BACKEND, e, false))?;
        Ok(self.seal(&plain, context))
    }

    /// Opens JSON sealed by [`Sealer::seal_json`].
    pub fn open_json<T: DeserializeOwned>(&self, sealed: &str, context: &str) -> Result<T> {
        let plain = self.open(sealed, context)?;
        serde_json::from_slice(&plain).map_err(|e| Error::backend(BACKEND, e, false))
    }
}

/// What a control-plane component seals with: the deployment's sealer (workflow parameters at rest) and the
/// guests' keys (each guest's requests and replies on the bus).
#[derive(Clone)]
pub struct Sealing {
    /// Seals what the infrastructure store keeps.
    pub at_rest: Sealer,
    /// Each guest's key; `None` (or no key for an instance): that guest's messages travel unsealed (an
    /// in-process bus, which keeps nothing).
    pub guests: Option<Arc<dyn crate::conductor::GuestKeys>>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing")
            .field("at_rest", &self.at_rest.current_id())
            .field("guests", &self.guests.is_some())
            .finish()
    }
}

impl Default for Sealing {
    fn default() -> Self {
        Sealing {
            at_rest: Sealer::process_default(),
            guests: None,
        }
    }
}

impl Sealing {
    /// The sealer of `instance_id`'s guest messages, when its key is known.
    pub fn guest(&self, instance_id: uuid::Uuid) -> Option<Sealer> {
        self.guests
            .as_ref()
            .and_then(|k| k.key(instance_id))
            .map(|k| Sealer::for_guest(&k))
    }
}

/// The context guest requests are sealed for.
pub fn guest_request_context(instance_id: uuid::Uuid) -> String {
    format!("request to guest {instance_id}")
}

/// The context guest replies are sealed for.
pub fn guest_reply_context(instance_id: uuid::Uuid) -> String {
    format!("reply of guest {instance_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_key_and_context() {
        let s = Sealer::new(SealKey::generate(), Vec::new());
        let sealed = s.seal(b"Zq9-Leak-Probe", "create");
        assert!(Sealer::is_sealed(sealed.as_bytes()));
        assert!(!sealed.contains("Zq9"));
        assert_ne!(
            sealed,
            s.seal(b"Zq9-Leak-Probe", "create"),
            "a fresh nonce every time"
        );
        assert_eq!(s.open(&sealed, "create").unwrap(), b"Zq9-Leak-Probe");
        assert!(s.open(&sealed, "another purpose").is_err());
        let other = Sealer::new(SealKey::generate(), Vec::new());
        let e = other.open(&sealed, "create").unwrap_err();
        assert!(e.to_string().contains(s.current_id()), "{e}");
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == '0' { '1' } else { '0' });
        assert!(s.open(&altered, "create").is_err());
        assert!(s.open("plain text", "create").is_err());
    }

    #[test]
    fn rotation_keeps_old_values_open_and_seals_with_the_new_key() {
        let old = SealKey::generate();
        let before = Sealer::new(old.clone(), Vec::new()).seal(b"v", "c");
        let rotated = Sealer::new(SealKey::generate(), vec![old.clone()]);
        assert_eq!(rotated.open(&before, "c").unwrap(), b"v");
        let after = rotated.seal(b"v", "c");
        assert!(!after.contains(old.id()));
        assert!(Sealer::new(old, Vec::new()).open(&after, "c").is_err());
    }

    #[test]
    fn keys_parse_from_hex_and_guest_keys_derive_deterministically() {
        let k = SealKey::generate();
        let again = SealKey::from_hex(k.to_hex().expose()).unwrap();
        assert_eq!(again.id(), k.id());
        let e = SealKey::from_hex("not-a-key-Zq9").unwrap_err();
        assert!(!e.to_string().contains("Zq9"));
        assert!(!format!("{k:?}").contains(k.to_hex().expose()));
        let g = Secret::new("guest-key-1");
        assert_eq!(SealKey::for_guest(&g).id(), SealKey::for_guest(&g).id());
        assert_ne!(
            SealKey::for_guest(&g).id(),
            SealKey::for_guest(&Secret::new("guest-key-2")).id()
        );
        let sealed = Sealer::for_guest(&g).seal(b"x", "guest");
        assert_eq!(Sealer::for_guest(&g).open(&sealed, "guest").unwrap(), b"x");
    }
}
