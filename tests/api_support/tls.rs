//! TLS material for HTTPS tests (a CA, an intermediate and a server certificate for 127.0.0.1, made with the
//! `openssl` command) and an HTTPS client that trusts only a given CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Files made with the `openssl` command: a root CA, an intermediate CA it signed, and a server certificate for
/// 127.0.0.1 the intermediate signed (`server-chain.pem`: the server's certificate, then the intermediate), its
/// key, a key of another certificate, and an unrelated CA.
pub struct TlsMaterial {
    /// The root CA (`ca.pem`).
    pub ca: PathBuf,
    /// A CA that signed nothing here (`stranger.pem`).
    pub stranger: PathBuf,
    /// The server's certificate, then the intermediate (`server-chain.pem`).
    pub chain: PathBuf,
    /// The server certificate's key (`server.key`).
    pub key: PathBuf,
    /// A key of no certificate given here (`other.key`).
    pub other_key: PathBuf,
}

/// Runs the `openssl` command with `args` in `dir`; panics with its error output when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes [`TlsMaterial`] in `dir` with the `openssl` command (EC P-256 keys, 30 days).
pub fn tls_material(dir: &Path) -> TlsMaterial {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Test Root CA",
    ]);
    openssl(dir, &a);
    // A CA nobody here signed with.
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "stranger.key",
        "-out",
        "stranger.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Stranger CA",
    ]);
    openssl(dir, &a);
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                  subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n";
    let server_ext = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=IP:{LOCALHOST}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
    );
    for (name, cn, issuer, ext) in [
        ("inter", "Test Intermediate CA", "ca", ca_ext.to_string()),
        ("server", "127.0.0.1", "inter", server_ext),
        ("other", "127.0.0.1", "inter", String::new()),
    ] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN={cn}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        if ext.is_empty() {
            continue;
        }
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        let (ca_pem, ca_key, extfile) = (
            format!("{issuer}.pem"),
            format!("{issuer}.key"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "30",
                "-extfile",
                &extfile,
            ],
        );
    }
    let chain = dir.join("server-chain.pem");
    let mut text = std::fs::read_to_string(dir.join("server.pem")).expect("server.pem");
    text.push_str(&std::fs::read_to_string(dir.join("inter.pem")).expect("inter.pem"));
    std::fs::write(&chain, text).expect("chain");
    TlsMaterial {
        ca: dir.join("ca.pem"),
        stranger: dir.join("stranger.pem"),
        chain,
        key: dir.join("server.key"),
        other_key: dir.join("other.key"),
    }
}

/// The address of an `https://IP:PORT` base URL.
pub fn https_addr(base: &str) -> SocketAddr {
    base.strip_prefix("https://")
        .unwrap_or_else(|| panic!("an https base: {base}"))
        .parse()
        .expect("ip:port")
}

/// `GET path` over HTTPS at `addr`, trusting only the CA certificates in `ca`: the status and the body, or the
/// error's text.
pub async fn https_get_async(
    addr: SocketAddr,
    ca: &Path,
    path: &str,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("Host", addr.to_string())
        .header("Accept", "application/json")
        .header("X-Auth-Token", "t")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// [`https_get_async`] from sync code.
pub fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> Result<(u16, String), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(https_get_async(addr, ca, path))
}
