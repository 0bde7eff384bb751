use serde::{Deserialize, Serialize};

/// A password or key. Serialises transparently (it must travel to the guest), but never prints.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret value itself. Call only where the value must be used (engine, wire), never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// A random alphanumeric secret of `len` characters.
    pub fn generate(len: usize) -> Secret {
        use rand::distributions::{Alphanumeric, DistString};
        Secret(Alphanumeric.sample_string(&mut rand::thread_rng(), len))
    }
    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn debug_hides_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(Secret::generate(36).expose().len(), 36);
    }
}
