//! Instance TLS on the guest side, shared by the engine strategies: certificates (self-signed or from a PEM
//! bundle, with the `openssl` command), the recorded TLS state, the files the engine reads, and the driver of an
//! `ssl_action` / `ssl_rollback` (each engine supplies how to render and apply it, [`TlsEngine`]).
//!
//! Files:
//! - `<server_dir>/guest/tls/state.json`: the current and the previous setting (mode, certificate generation,
//!   Redis' second TLS port), so a rollback can restore the previous one and a restart keeps the current one.
//! - `<server_dir>/guest/tls/<generation>/`: one certificate: `cert.pem`, `chain.pem` (optional), `key.pem`
//!   (0600), `meta.json` (CN, expiry, SANs). Only the generations the two settings name are kept.
//! - `<server_dir>/engine/tls/`: what the engine reads (engine user, 0600): `server-cert.pem`, `server-key.pem`,
//!   `ca.pem` at fixed paths, and the same files under `<generation>/` (Redis points at those, so a new certificate
//!   is a new path it reloads).
//!
//! A self-signed certificate is valid one year, with CN = the address the engine listens on and that address as
//! an IP (or DNS) subject alternative name (plus `localhost` on loopback); it is its own CA (`ca.pem`). A bundle
//! (`container_ref = file:///path`) holds the server certificate first, then chain/CA certificates, and the
//! private key (unencrypted, or encrypted with the passphrase in the `password_ref` file); `mtls` needs the CA
//! certificates that sign client certificates, so it needs a bundle with a chain.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use trove_core::model::{SslCertificate, SslChange, SslChangeResult, SslMode, SslStatus, SslView};
use trove_core::{Error, Result};

use crate::base::Base;
use crate::common::{io_err, set_mode, write_engine_file, write_private, BACKEND};
use crate::engine::Engine;
use crate::overrides::Configurable;

/// Largest accepted certificate bundle.
const MAX_BUNDLE: u64 = 1 << 20;
/// Validity of a generated certificate.
const SELF_SIGNED_DAYS: u32 = 365;

/// One TLS setting of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TlsSetting {
    /// The mode; `None` = TLS off.
    pub mode: Option<SslMode>,
    /// The certificate generation (kept while off, for a rollback).
    pub generation: Option<String>,
    /// Redis in `basic` mode: the second port TLS is served on.
    #[serde(default)]
    pub tls_port: Option<u16>,
}

impl TlsSetting {
    /// Whether TLS is on.
    pub fn is_on(&self) -> bool {
        self.mode.is_some()
    }
}

/// The recorded TLS state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TlsState {
    /// In force.
    pub current: TlsSetting,
    /// Before the last action (what a rollback restores).
    pub previous: Option<TlsSetting>,
}

/// What the guest knows of a certificate generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CertMeta {
    cn: String,
    expire_at: DateTime<Utc>,
    san: Option<Vec<String>>,
    /// Whether the generation has chain/CA certificates (`chain.pem`).
    chain: bool,
}

/// An engine's TLS hooks (the rest of the TLS facet is this module's, once for every engine).
#[async_trait]
pub(crate) trait TlsEngine: Configurable + Send + Sync {
    /// Refuses a mode the engine cannot do (400).
    fn check_mode(&self, _mode: SslMode) -> Result<()> {
        Ok(())
    }
    /// Whether the engine needs a second TLS port in this mode (Redis `basic`).
    fn needs_tls_port(&self, _mode: SslMode) -> bool {
        false
    }
    /// Re-renders the engine's files from the recorded state (what a restart will use): its configuration.
    fn render_tls(&self) -> Result<()> {
        self.render_config()
    }
    /// Brings the running engine from `old` to `new` where it can; answers whether a restart is still needed.
    /// Called only while the engine runs (a stopped one reads the rendered files at its next start).
    async fn apply_live(&self, old: &TlsSetting, new: &TlsSetting) -> Result<bool>;
}

// ------------------------------------------------------------------ paths and state

fn tls_dir(base: &Base) -> PathBuf {
    base.layout.guest_dir.join("tls")
}

fn state_path(base: &Base) -> PathBuf {
    tls_dir(base).join("state.json")
}

/// The directory of the engine's TLS files.
pub(crate) fn engine_tls_dir(base: &Base) -> PathBuf {
    base.layout.engine_dir.join("tls")
}

/// The fixed paths the engine reads: (certificate, key, CA).
pub(crate) fn engine_files(base: &Base) -> (PathBuf, PathBuf, PathBuf) {
    let d = engine_tls_dir(base);
    (
        d.join("server-cert.pem"),
        d.join("server-key.pem"),
        d.join("ca.pem"),
    )
}

/// The per-generation paths the engine reads: (certificate, key, CA).
pub(crate) fn engine_generation_files(
    base: &Base,
    generation: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let d = engine_tls_dir(base).join(generation);
    (
        d.join("server-cert.pem"),
        d.join("server-key.pem"),
        d.join("ca.pem"),
    )
}

/// The recorded state (TLS off when nothing was recorded).
pub(crate) fn state(base: &Base) -> Result<TlsState> {
    let p = state_path(base);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::backend(BACKEND, format!("corrupt {}: {e}", p.display()), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TlsState::default()),
        Err(e) => Err(io_err("read", &p, e)),
    }
}

fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    set_mode(dir, 0o700)
}

/// Records the TLS state.
pub(crate) fn save_state(base: &Base, st: &TlsState) -> Result<()> {
    ensure_dir(&tls_dir(base))?;
    let bytes = serde_json::to_vec_pretty(st).map_err(|e| Error::backend(BACKEND, e, false))?;
    write_private(&state_path(base), &bytes)
}

fn read_meta(base: &Base, generation: &str) -> Result<CertMeta> {
    let p = tls_dir(base).join(generation).join("meta.json");
    let b = std::fs::read(&p).map_err(|e| io_err("read", &p, e))?;
    serde_json::from_slice(&b)
        .map_err(|e| Error::backend(BACKEND, format!("corrupt {}: {e}", p.display()), false))
}

// ------------------------------------------------------------------ openssl

/// Runs `openssl` with `args`; its stdout, or an error with the first lines of its stderr.
async fn openssl(args: &[&OsStr]) -> Result<Vec<u8>> {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::backend(
                BACKEND,
                "the openssl command is needed for instance certificates and is not installed on this host",
                false,
            )
        } else {
            Error::backend(BACKEND, format!("cannot run openssl: {e}"), false)
        }
    })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        Err(Error::bad_request(format!(
            "openssl {} failed: {}",
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default(),
            first.join(" | ")
        )))
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// CN, expiry and SANs of a PEM certificate.
async fn inspect(cert: &Path) -> Result<(String, DateTime<Utc>, Option<Vec<String>>)> {
    let out = openssl(&[
        os("x509"),
        os("-in"),
        cert.as_os_str(),
        os("-noout"),
        os("-subject"),
        os("-enddate"),
        os("-nameopt"),
        os("RFC2253"),
        os("-ext"),
        os("subjectAltName"),
    ])
    .await?;
    parse_inspection(&String::from_utf8_lossy(&out))
}

/// Parses the output of `openssl x509 -noout -subject -enddate -nameopt RFC2253 -ext subjectAltName`.
fn parse_inspection(text: &str) -> Result<(String, DateTime<Utc>, Option<Vec<String>>)> {
    let mut cn = String::new();
    let mut expire = None;
    let mut san: Option<Vec<String>> = None;
    let mut in_san = false;
    for line in text.lines() {
        if let Some(subject) = line.strip_prefix("subject=") {
            cn = rfc2253_cn(subject.trim()).unwrap_or_default();
            in_san = false;
        } else if let Some(date) = line.strip_prefix("notAfter=") {
            let norm = date
                .trim()
                .trim_end_matches("GMT")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let t = NaiveDateTime::parse_from_str(&norm, "%b %d %H:%M:%S %Y").map_err(|e| {
                Error::bad_request(format!(
                    "unreadable certificate expiry '{}': {e}",
                    date.trim()
                ))
            })?;
            expire = Some(t.and_utc());
            in_san = false;
        } else if line.contains("Subject Alternative Name") {
            in_san = true;
        } else if in_san && line.starts_with(char::is_whitespace) {
            let names: Vec<String> = line
                .split(',')
                .map(|n| n.trim().replacen("IP Address:", "IP:", 1))
                .filter(|n| !n.is_empty())
                .collect();
            if !names.is_empty() {
                san.get_or_insert_with(Vec::new).extend(names);
            }
        }
    }
    let expire = expire.ok_or_else(|| Error::bad_request("the certificate has no expiry date"))?;
    Ok((cn, expire, san))
}

/// The CN of an RFC 2253 subject (`CN=a,O=b`; `\,` escapes a comma).
fn rfc2253_cn(subject: &str) -> Option<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in subject.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' || c == '+' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .find_map(|p| p.trim().strip_prefix("CN=").map(str::to_string))
}

/// A new generation name (sortable, unique).
fn new_generation() -> String {
    format!(
        "g{}-{}",
        Utc::now().format("%Y%m%d%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The names a self-signed certificate is for: CN = the first of the instance's addresses (`names`, from the
/// control plane; the address the engine listens on when there are none), every address as a SAN, plus
/// `localhost` for a loopback address.
fn self_signed_names(base: &Base, names: &[String]) -> Result<(String, Vec<String>)> {
    let names: Vec<String> = if names.is_empty() {
        vec![base.connect_host()]
    } else {
        names.iter().take(16).cloned().collect()
    };
    let mut sans = Vec::new();
    let mut loopback = false;
    for host in &names {
        if host.is_empty()
            || host.len() > 64
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        {
            return Err(Error::bad_request(format!(
                "The instance address '{}' cannot name a certificate.",
                host.escape_default()
            )));
        }
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                loopback |= ip.is_loopback();
                format!("IP:{host}")
            }
            Err(_) => {
                loopback |= host == "localhost";
                format!("DNS:{host}")
            }
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    if loopback && !sans.iter().any(|s| s == "DNS:localhost") {
        sans.push("DNS:localhost".into());
    }
    Ok((names[0].clone(), sans))
}

async fn write_meta(dir: &Path, chain: bool) -> Result<()> {
    let (cn, expire_at, san) = inspect(&dir.join("cert.pem")).await?;
    let meta = CertMeta {
        cn,
        expire_at,
        san,
        chain,
    };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::backend(BACKEND, e, false))?;
    write_private(&dir.join("meta.json"), &bytes)
}

/// Generates a self-signed certificate (EC P-256) into a new generation.
async fn generate_self_signed(base: &Base, names: &[String]) -> Result<String> {
    let (cn, sans) = self_signed_names(base, names)?;
    let generation = new_generation();
    let dir = tls_dir(base).join(&generation);
    ensure_dir(&dir)?;
    let r = async {
        let subj = format!("/CN={cn}");
        let ext = format!("subjectAltName={}", sans.join(","));
        let days = SELF_SIGNED_DAYS.to_string();
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("ec"),
            os("-pkeyopt"),
            os("ec_paramgen_curve:prime256v1"),
            os("-nodes"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            cert.as_os_str(),
            os("-days"),
            os(&days),
            os("-subj"),
            os(&subj),
            os("-addext"),
            os(&ext),
        ])
        .await
        .map_err(|e| {
            Error::backend(
                BACKEND,
                format!("certificate generation failed: {e}"),
                false,
            )
        })?;
        set_mode(&key, 0o600)?;
        write_meta(&dir, false).await
    }
    .await;
    match r {
        Ok(()) => Ok(generation),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// PEM blocks of a text: (label, block text with its BEGIN/END lines).
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            cur = Some((label.to_string(), format!("{line}\n")));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some((l, mut body)) = cur.take() {
                if l == label {
                    body.push_str(line);
                    body.push('\n');
                    out.push((l, body));
                }
            }
        } else if let Some((_, body)) = cur.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn file_ref_path(r: &str) -> Result<PathBuf> {
    trove_core::model::validate_file_ref("reference", r)?;
    Ok(PathBuf::from(&r["file://".len()..]))
}

/// Reads a referenced file (at most [`MAX_BUNDLE`] bytes); a missing or unreadable file is a 400.
fn read_ref(what: &str, r: &str) -> Result<String> {
    let path = file_ref_path(r)?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::bad_request(format!("The {what} {r} cannot be read here: {e}.")))?;
    if !meta.is_file() || meta.len() > MAX_BUNDLE {
        return Err(Error::bad_request(format!(
            "The {what} {r} is not a regular file of at most {MAX_BUNDLE} bytes."
        )));
    }
    std::fs::read_to_string(&path)
        .map_err(|e| Error::bad_request(format!("The {what} {r} cannot be read here: {e}.")))
}

/// Loads a PEM bundle into a new generation: certificate, chain, key (decrypted with the passphrase file when
/// given); checks the key matches the certificate and the certificate is not expired.
async fn load_bundle(
    base: &Base,
    container_ref: &str,
    password_ref: Option<&str>,
) -> Result<String> {
    let text = read_ref("container_ref", container_ref)?;
    let blocks = pem_blocks(&text);
    let certs: Vec<&String> = blocks
        .iter()
        .filter(|(l, _)| l == "CERTIFICATE")
        .map(|(_, b)| b)
        .collect();
    let keys: Vec<&String> = blocks
        .iter()
        .filter(|(l, _)| l.ends_with("PRIVATE KEY"))
        .map(|(_, b)| b)
        .collect();
    if certs.is_empty() || keys.len() != 1 {
        return Err(Error::bad_request(format!(
            "The container_ref {container_ref} must be a PEM bundle with the server certificate (first), any chain \
             certificates and exactly one private key; it has {} certificate(s) and {} key(s).",
            certs.len(),
            keys.len()
        )));
    }
    if let Some(p) = password_ref {
        // Only checks that the file is readable here; openssl reads it itself.
        read_ref("password_ref", p)?;
    }
    let generation = new_generation();
    let dir = tls_dir(base).join(&generation);
    ensure_dir(&dir)?;
    let r = async {
        let cert = dir.join("cert.pem");
        write_private(&cert, certs[0].as_bytes())?;
        let chain = certs.len() > 1;
        if chain {
            let rest: String = certs[1..].iter().map(|c| c.as_str()).collect();
            write_private(&dir.join("chain.pem"), rest.as_bytes())?;
        }
        let raw = dir.join("key.in");
        write_private(&raw, keys[0].as_bytes())?;
        let key = dir.join("key.pem");
        let mut args: Vec<OsString> = vec![
            "pkey".into(),
            "-in".into(),
            raw.clone().into(),
            "-out".into(),
            key.clone().into(),
        ];
        if let Some(p) = password_ref {
            let mut pass = OsString::from("file:");
            pass.push(file_ref_path(p)?);
            args.push("-passin".into());
            args.push(pass);
        } else {
            // An encrypted key without a passphrase fails instead of prompting.
            args.push("-passin".into());
            args.push("pass:".into());
        }
        let argv: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let res = openssl(&argv).await;
        let _ = std::fs::remove_file(&raw);
        res.map_err(|e| {
            Error::bad_request(format!(
                "The private key of {container_ref} cannot be read (a password_ref is needed for an encrypted key): {e}"
            ))
        })?;
        set_mode(&key, 0o600)?;
        let cert_pub = openssl(&[os("x509"), os("-in"), cert.as_os_str(), os("-noout"), os("-pubkey")]).await?;
        let key_pub = openssl(&[os("pkey"), os("-in"), key.as_os_str(), os("-pubout")]).await?;
        if cert_pub != key_pub {
            return Err(Error::bad_request(format!(
                "The private key of {container_ref} does not match its first certificate."
            )));
        }
        if openssl(&[os("x509"), os("-in"), cert.as_os_str(), os("-noout"), os("-checkend"), os("0")])
            .await
            .is_err()
        {
            return Err(Error::bad_request(format!(
                "The certificate of {container_ref} has expired."
            )));
        }
        write_meta(&dir, chain).await
    }
    .await;
    match r {
        Ok(()) => Ok(generation),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

// ------------------------------------------------------------------ installing

/// Copies the setting's certificate into the engine's TLS directory (fixed paths and per-generation paths),
/// owned by the engine user, private to it. Nothing to do when off.
fn install(base: &Base, setting: &TlsSetting) -> Result<()> {
    let (Some(_), Some(generation)) = (setting.mode, setting.generation.as_deref()) else {
        return Ok(());
    };
    let src = tls_dir(base).join(generation);
    let read = |name: &str| {
        let p = src.join(name);
        std::fs::read_to_string(&p).map_err(|e| io_err("read", &p, e))
    };
    let cert = read("cert.pem")?;
    let key = read("key.pem")?;
    let ca = if src.join("chain.pem").is_file() {
        read("chain.pem")?
    } else {
        cert.clone()
    };
    let dir = engine_tls_dir(base);
    let gdir = dir.join(generation);
    for d in [&dir, &gdir] {
        ensure_dir(d)?;
        base.run_as.own(d)?;
    }
    for (c, k, a) in [
        engine_generation_files(base, generation),
        engine_files(base),
    ] {
        write_engine_file(&c, &cert, base.run_as)?;
        write_engine_file(&k, &key, base.run_as)?;
        write_engine_file(&a, &ca, base.run_as)?;
    }
    Ok(())
}

/// Removes generations neither setting names (guest side and engine side).
fn collect_garbage(base: &Base, st: &TlsState) {
    let keep: Vec<&str> = std::iter::once(&st.current)
        .chain(st.previous.iter())
        .filter_map(|s| s.generation.as_deref())
        .collect();
    for dir in [tls_dir(base), engine_tls_dir(base)] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_dir() && name.starts_with('g') && !keep.contains(&name.as_str()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

// ------------------------------------------------------------------ the driver

/// The TLS view of the instance (`ssl_show`).
pub(crate) fn show(base: &Base, include_certificate: bool) -> Result<SslView> {
    let st = state(base)?;
    let cur = &st.current;
    let Some(mode) = cur.mode else {
        return Ok(SslView::off());
    };
    let certificate = match cur.generation.as_deref() {
        Some(g) => {
            let meta = read_meta(base, g)?;
            let payload = if include_certificate {
                let dir = tls_dir(base).join(g);
                let mut pem = std::fs::read_to_string(dir.join("cert.pem"))
                    .map_err(|e| io_err("read", &dir.join("cert.pem"), e))?;
                if meta.chain {
                    pem.push_str(
                        &std::fs::read_to_string(dir.join("chain.pem"))
                            .map_err(|e| io_err("read", &dir.join("chain.pem"), e))?,
                    );
                }
                Some(pem)
            } else {
                None
            };
            Some(SslCertificate {
                cn: meta.cn,
                expire_at: meta.expire_at,
                san: meta.san,
                payload,
            })
        }
        None => None,
    };
    Ok(SslView {
        status: SslStatus::On,
        mode: Some(mode),
        certificate,
        port: cur.tls_port,
    })
}

fn result(setting: &TlsSetting, restart_required: bool) -> SslChangeResult {
    SslChangeResult {
        status: if setting.is_on() {
            SslStatus::On
        } else {
            SslStatus::Off
        },
        mode: setting.mode,
        restart_required,
    }
}

/// A free TCP port on `host` (for Redis' second TLS port), preferring `keep`.
pub(crate) fn free_port(host: &str, keep: Option<u16>) -> Result<u16> {
    if let Some(p) = keep {
        if std::net::TcpListener::bind((host, p)).is_ok() {
            return Ok(p);
        }
    }
    let l = std::net::TcpListener::bind((host, 0))
        .map_err(|e| Error::backend(BACKEND, format!("no free port on {host}: {e}"), false))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::backend(BACKEND, e, false))
}

/// `ssl_action`: builds the new setting (a new certificate when enabling), records it with the current one as
/// the previous, installs, renders and applies it.
pub(crate) async fn action<E: Engine>(engine: &E, change: &SslChange) -> Result<SslChangeResult> {
    let base = engine.base();
    let old = state(base)?;
    let current = match change {
        SslChange::Enable {
            mode,
            container_ref,
            password_ref,
            names,
        } => {
            engine.check_mode(*mode)?;
            let generation = match container_ref {
                Some(r) => load_bundle(base, r, password_ref.as_deref()).await?,
                None => {
                    if *mode == SslMode::Mtls {
                        return Err(Error::bad_request(
                            "SSL mode mtls needs a container_ref whose bundle holds the CA certificate(s) that \
                             sign client certificates: a generated self-signed certificate cannot sign them.",
                        ));
                    }
                    generate_self_signed(base, names).await?
                }
            };
            if *mode == SslMode::Mtls && !read_meta(base, &generation)?.chain {
                let _ = std::fs::remove_dir_all(tls_dir(base).join(&generation));
                return Err(Error::bad_request(
                    "SSL mode mtls needs the CA certificate(s) that sign client certificates after the server \
                     certificate in the container_ref bundle.",
                ));
            }
            let tls_port = if engine.needs_tls_port(*mode) {
                let keep = old
                    .current
                    .tls_port
                    .or(old.previous.as_ref().and_then(|p| p.tls_port));
                Some(free_port(&base.connect_host(), keep)?)
            } else {
                None
            };
            TlsSetting {
                mode: Some(*mode),
                generation: Some(generation),
                tls_port,
            }
        }
        SslChange::Disable => TlsSetting {
            mode: None,
            generation: old.current.generation.clone(),
            tls_port: None,
        },
    };
    let new = TlsState {
        current,
        previous: Some(old.current.clone()),
    };
    transition(engine, &old, new).await
}

/// `ssl_rollback`: the previous setting becomes current (and the current one previous, so a second rollback
/// undoes the first).
pub(crate) async fn rollback<E: Engine>(engine: &E) -> Result<SslChangeResult> {
    let base = engine.base();
    let old = state(base)?;
    let Some(prev) = old.previous.clone() else {
        return Err(Error::bad_request(
            "There is no previous SSL state to roll back to.",
        ));
    };
    let new = TlsState {
        current: prev,
        previous: Some(old.current.clone()),
    };
    transition(engine, &old, new).await
}

/// Applies a TLS change to the engine when it runs.
async fn apply<E: Engine>(engine: &E, old: &TlsSetting, new: &TlsSetting) -> Result<bool> {
    if engine.running_pid().is_none() {
        return Ok(false);
    }
    engine.apply_live(old, new).await
}

async fn transition<E: Engine>(
    engine: &E,
    old: &TlsState,
    new: TlsState,
) -> Result<SslChangeResult> {
    let base = engine.base();
    let applied = async {
        install(base, &new.current)?;
        save_state(base, &new)?;
        engine.render_tls()?;
        apply(engine, &old.current, &new.current).await
    }
    .await;
    match applied {
        Ok(restart_required) => {
            collect_garbage(base, &new);
            tracing::info!(
                instance = %base.ctx.instance_id,
                mode = ?new.current.mode,
                restart_required,
                "instance TLS changed"
            );
            Ok(result(&new.current, restart_required))
        }
        Err(e) => {
            // Put the previous setting back, on disk and (best effort) in the engine.
            let revert = async {
                install(base, &old.current)?;
                save_state(base, old)?;
                engine.render_tls()?;
                apply(engine, &new.current, &old.current).await
            }
            .await;
            if let Err(r) = revert {
                tracing::warn!(instance = %base.ctx.instance_id, error = %r, "reverting a failed TLS change failed");
            }
            collect_garbage(base, old);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openssl_inspection() {
        let text = "subject=CN=127.0.0.1,O=Example\\, Inc\nnotAfter=Feb  1 09:06:25 2027 GMT\n\
                    X509v3 Subject Alternative Name: \n    IP Address:127.0.0.1, DNS:localhost\n";
        let (cn, exp, san) = parse_inspection(text).unwrap();
        assert_eq!(cn, "127.0.0.1");
        assert_eq!(
            exp.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "2027-02-01T09:06:25"
        );
        assert_eq!(
            san,
            Some(vec![
                "IP:127.0.0.1".to_string(),
                "DNS:localhost".to_string()
            ])
        );
        let (cn, _, san) =
            parse_inspection("subject=O=x\\,y,CN=a b\nnotAfter=Nov 23 22:42:43 2027 GMT\n")
                .unwrap();
        assert_eq!(cn, "a b");
        assert_eq!(san, None);
        assert!(parse_inspection("subject=CN=x\n").is_err());
    }

    #[test]
    fn splits_pem_bundles() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nCCC\n-----END PRIVATE KEY-----\n";
        let b = pem_blocks(text);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].0, "CERTIFICATE");
        assert_eq!(
            b[1].1,
            "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(b[2].0, "PRIVATE KEY");
    }
}
