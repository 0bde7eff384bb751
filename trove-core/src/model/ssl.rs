//! Instance TLS (upstream API 1.3 `/instances/{id}/ssl`): the request body, what the guest is asked to change,
//! and the views.
//!
//! There is no secret store here: a `container_ref` must be a `file://` reference to a PEM bundle (the server
//! certificate first, then any chain/CA certificates, and the private key) readable where the guest agent runs; a
//! `password_ref` (for an encrypted key) must be a `file://` reference to a file holding the passphrase. Without a
//! `container_ref` the guest generates a self-signed certificate for the instance.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// How TLS is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SslMode {
    /// TLS offered; plain connections still accepted.
    Basic,
    /// Only TLS connections accepted.
    Enforced,
    /// Only TLS connections with a client certificate signed by the configured CA.
    Mtls,
}

impl SslMode {
    /// The upstream name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Basic => "basic",
            SslMode::Enforced => "enforced",
            SslMode::Mtls => "mtls",
        }
    }

    /// Parses an upstream name (400 otherwise).
    pub fn parse(s: &str) -> Result<SslMode> {
        match s {
            "basic" => Ok(SslMode::Basic),
            "enforced" => Ok(SslMode::Enforced),
            "mtls" => Ok(SslMode::Mtls),
            other => Err(Error::bad_request(format!(
                "Invalid SSL mode '{}': expected one of basic, enforced, mtls.",
                other.escape_default()
            ))),
        }
    }

    /// Whether plain connections are refused.
    pub fn refuses_plain(self) -> bool {
        match self {
            SslMode::Basic => false,
            SslMode::Enforced | SslMode::Mtls => true,
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether TLS is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SslStatus {
    /// TLS is configured.
    On,
    /// TLS is off.
    Off,
}

/// The upstream timestamp format of `expire_at` (`2027-02-10T09:06:25.000000`, UTC, no zone).
const EXPIRE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

fn ser_expire<S: Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&t.format(EXPIRE_FORMAT).to_string())
}

fn de_expire<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    NaiveDateTime::parse_from_str(&s, EXPIRE_FORMAT)
        .map(|n| n.and_utc())
        .map_err(serde::de::Error::custom)
}

/// The certificate an instance serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SslCertificate {
    /// Subject common name.
    pub cn: String,
    /// End of validity (UTC), rendered as `2027-02-10T09:06:25.000000`.
    #[serde(serialize_with = "ser_expire", deserialize_with = "de_expire")]
    pub expire_at: DateTime<Utc>,
    /// Subject alternative names (`IP:...`, `DNS:...`), `null` when the certificate has none.
    pub san: Option<Vec<String>>,
    /// The PEM certificate (and its chain), only when asked for (`?include_certificate=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// `GET /instances/{id}/ssl`: `{"ssl": SslView}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SslView {
    /// On or off.
    pub status: SslStatus,
    /// The mode, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SslMode>,
    /// The certificate in use, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<SslCertificate>,
    /// Extension: the TLS port when it is not the instance's port (Redis in `basic` mode serves TLS and plain
    /// text on two ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl SslView {
    /// TLS off.
    pub fn off() -> SslView {
        SslView {
            status: SslStatus::Off,
            mode: None,
            certificate: None,
            port: None,
        }
    }
}

/// `POST /instances/{id}/ssl` answer: `{"ssl": SslChangeResult}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SslChangeResult {
    /// On or off after the change.
    pub status: SslStatus,
    /// The mode, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SslMode>,
    /// Whether the engine must restart before the change takes full effect.
    pub restart_required: bool,
}

/// What the guest is asked to change (guest API `ssl_action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SslChange {
    /// Install a certificate and turn TLS on in `mode`.
    Enable {
        /// Mode.
        mode: SslMode,
        /// `file://` path of a PEM bundle; `None` = generate a self-signed certificate.
        container_ref: Option<String>,
        /// `file://` path of the passphrase of an encrypted key in the bundle.
        password_ref: Option<String>,
        /// The addresses the instance is reached at (filled in by the API): a generated certificate takes the
        /// first as its CN and all as SANs; empty = the address the engine listens on.
        #[serde(default)]
        names: Vec<String>,
    },
    /// Turn TLS off (the certificate is kept for a rollback).
    Disable,
}

/// `POST /instances/{id}/ssl` request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslRequest {
    /// Enable or disable.
    Change(SslChange),
    /// Restore the previous state.
    Rollback,
}

/// The `ssl` object of a `POST /instances/{id}/ssl` body, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslActionBody {
    /// `true` to enable.
    #[serde(default)]
    pub enable: Option<bool>,
    /// `true` to disable.
    #[serde(default)]
    pub disable: Option<bool>,
    /// `true` to roll back.
    #[serde(default)]
    pub rollback: Option<bool>,
    /// `basic`, `enforced` or `mtls` (enable only; default `basic`).
    #[serde(default)]
    pub mode: Option<String>,
    /// Certificate bundle reference (enable only).
    #[serde(default)]
    pub container_ref: Option<String>,
    /// Key passphrase reference (enable only).
    #[serde(default)]
    pub password_ref: Option<String>,
}

/// Checks a `file://` reference: an absolute path without `..` segments or control characters.
pub fn validate_file_ref(what: &str, r: &str) -> Result<()> {
    let Some(path) = r.strip_prefix("file://") else {
        return Err(Error::bad_request(format!(
            "The {what} '{}' cannot be resolved by this deployment: it has no secret store (Barbican); give a \
             file:// reference to a PEM file readable by the guest agent.",
            r.escape_default()
        )));
    };
    if !path.starts_with('/')
        || path.split('/').any(|s| s == "..")
        || path.chars().any(char::is_control)
        || path.len() > 4096
    {
        return Err(Error::bad_request(format!(
            "The {what} '{}' must be file:// followed by an absolute path.",
            r.escape_default()
        )));
    }
    Ok(())
}

impl SslActionBody {
    /// Validates: exactly one of `enable`, `disable`, `rollback` set to `true`; a known mode; resolvable
    /// references; no mode or reference with `disable` or `rollback`.
    pub fn validate(self) -> Result<SslRequest> {
        let set = |f: Option<bool>| f == Some(true);
        let flags = [self.enable, self.disable, self.rollback];
        if flags.contains(&Some(false)) {
            return Err(Error::bad_request(
                "The SSL action flags enable, disable and rollback only take the value true.",
            ));
        }
        let n = flags.iter().filter(|f| set(**f)).count();
        if n != 1 {
            return Err(Error::bad_request(
                "Exactly one of enable, disable or rollback must be given in an SSL action.",
            ));
        }
        if set(self.enable) {
            let mode = match self.mode.as_deref() {
                Some(m) => SslMode::parse(m)?,
                None => SslMode::Basic,
            };
            if let Some(r) = &self.container_ref {
                validate_file_ref("container_ref", r)?;
            }
            if let Some(r) = &self.password_ref {
                if self.container_ref.is_none() {
                    return Err(Error::bad_request(
                        "A password_ref is only meaningful with a container_ref.",
                    ));
                }
                validate_file_ref("password_ref", r)?;
            }
            return Ok(SslRequest::Change(SslChange::Enable {
                mode,
                container_ref: self.container_ref,
                password_ref: self.password_ref,
                names: Vec::new(),
            }));
        }
        if self.mode.is_some() || self.container_ref.is_some() || self.password_ref.is_some() {
            return Err(Error::bad_request(
                "mode, container_ref and password_ref only go with enable.",
            ));
        }
        if set(self.disable) {
            Ok(SslRequest::Change(SslChange::Disable))
        } else {
            Ok(SslRequest::Rollback)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> Result<SslRequest> {
        serde_json::from_value::<SslActionBody>(v)
            .map_err(|e| Error::bad_request(e.to_string()))?
            .validate()
    }

    #[test]
    fn exactly_one_action_and_known_modes() {
        assert_eq!(
            body(json!({"enable": true, "mode": "enforced"})).unwrap(),
            SslRequest::Change(SslChange::Enable {
                mode: SslMode::Enforced,
                container_ref: None,
                password_ref: None,
                names: vec![],
            })
        );
        assert_eq!(
            body(json!({"disable": true})).unwrap(),
            SslRequest::Change(SslChange::Disable)
        );
        assert_eq!(
            body(json!({"rollback": true})).unwrap(),
            SslRequest::Rollback
        );
        for bad in [
            json!({}),
            json!({"enable": true, "disable": true}),
            json!({"enable": true, "rollback": true}),
            json!({"enable": false}),
            json!({"enable": true, "mode": "paranoid"}),
            json!({"disable": true, "mode": "basic"}),
            json!({"enable": true, "container_ref": "https://barbican.example/v1/secrets/x"}),
            json!({"enable": true, "container_ref": "file://relative/path"}),
            json!({"enable": true, "container_ref": "file:///a/../etc/shadow"}),
            json!({"enable": true, "password_ref": "file:///p"}),
        ] {
            let e = body(bad.clone()).unwrap_err();
            assert_eq!(e.fault().status, 400, "{bad}: {e}");
        }
        assert!(body(json!({"enable": true, "container_ref": "file:///etc/b.pem"})).is_ok());
    }

    #[test]
    fn expire_at_uses_the_upstream_format() {
        let t = NaiveDateTime::parse_from_str("2027-02-10T09:06:25.000000", EXPIRE_FORMAT)
            .unwrap()
            .and_utc();
        let c = SslCertificate {
            cn: "x".into(),
            expire_at: t,
            san: None,
            payload: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({"cn": "x", "expire_at": "2027-02-10T09:06:25.000000", "san": null})
        );
        assert_eq!(serde_json::from_value::<SslCertificate>(v).unwrap(), c);
    }
}
