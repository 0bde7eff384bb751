//! Serving the API router on a bound listener, as plain HTTP or as HTTPS, until a shutdown future resolves.
//!
//! HTTPS uses rustls (with the `ring` provider): [`TlsFiles::load`] reads a PEM certificate file (the server's
//! certificate, then any intermediates) and a PEM private key file, checks that the key belongs to the
//! certificate and answers a [`ServerTls`]; [`serve`] then answers HTTPS only on the listener. Every problem with
//! the files is an error at start-up that names the file and says what to give instead; no error or log line ever
//! carries the key's content.
//!
//! ```no_run
//! # async fn run(app: axum::Router) -> trove::core::Result<()> {
//! use trove::serve::{serve, TlsFiles};
//!
//! let tls = TlsFiles::new("/etc/trove-rs/api.pem", "/etc/trove-rs/api.key").load()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8779").await.expect("bind");
//! println!("listening on {}://{}", tls.scheme(), listener.local_addr().expect("addr"));
//! serve(listener, app, Some(tls), async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use trove_core::{Error, Result};

/// How long a client gets to finish the TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 512;

/// The certificate and private key files of an HTTPS listener (both PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate, optionally followed by its intermediate certificates.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC; unencrypted).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files at `cert` and `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Both paths or neither: `Some` with both, `None` with neither, an error naming the missing option (called
    /// `cert_option` and `key_option` where the operator gives them) with only one.
    pub fn pair(
        cert: Option<&Path>,
        key: Option<&Path>,
        cert_option: &str,
        key_option: &str,
    ) -> Result<Option<TlsFiles>> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => Ok(Some(TlsFiles::new(c, k))),
            (Some(_), None) => Err(Error::bad_request(format!(
                "{cert_option} needs {key_option}: give the certificate's private key too (or neither, for plain \
                 HTTP)"
            ))),
            (None, Some(_)) => Err(Error::bad_request(format!(
                "{key_option} needs {cert_option}: give the certificate too (or neither, for plain HTTP)"
            ))),
        }
    }

    /// Reads and checks both files: the certificate chain parses, the key is one the server can sign with, and
    /// it is the key of the chain's first certificate.
    pub fn load(&self) -> Result<ServerTls> {
        let certs = self.read_certs()?;
        let key = self.read_key()?;
        // The `ring` provider (no post-quantum key exchange, hence rustls's deprecation note) builds without the
        // C tool chain the other provider needs.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signing = provider.key_provider.load_private_key(key.clone_key()).map_err(|_| {
            Error::bad_request(format!(
                "TLS key {}: not a private key this server can use (RSA, ECDSA P-256/P-384 or Ed25519); give the \
                 certificate's private key",
                self.key.display()
            ))
        })?;
        let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(Error::bad_request(format!(
                    "TLS key {} does not match the certificate {}: give the private key of the first certificate \
                     in that file (or the certificate of this key)",
                    self.key.display(),
                    self.cert.display()
                )));
            }
            Err(e) => {
                return Err(Error::bad_request(format!(
                    "TLS certificate {}: its first certificate cannot be used ({e}); give the server's X.509 \
                     certificate first, then any intermediates",
                    self.cert.display()
                )));
            }
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::backend("tls", e, false))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                Error::bad_request(format!(
                    "TLS certificate {} with key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        // The router speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            files: self.clone(),
        })
    }

    fn read_certs(&self) -> Result<Vec<CertificateDer<'static>>> {
        let what =
            "give the PEM file of the server's certificate (any intermediates may follow it)";
        let bytes = std::fs::read(&self.cert).map_err(|e| {
            Error::bad_request(format!(
                "TLS certificate {}: cannot read it ({e}); {what}",
                self.cert.display()
            ))
        })?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<std::result::Result<Vec<_>, pem::Error>>()
            .map_err(|e| {
                Error::bad_request(format!(
                    "TLS certificate {}: not valid PEM ({e}); {what}",
                    self.cert.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(Error::bad_request(format!(
                "TLS certificate {}: holds no CERTIFICATE block; {what}",
                self.cert.display()
            )));
        }
        Ok(certs)
    }

    fn read_key(&self) -> Result<PrivateKeyDer<'static>> {
        let what = "give the PEM file of the certificate's private key, without a passphrase";
        let mut bytes = std::fs::read(&self.key).map_err(|e| {
            Error::bad_request(format!(
                "TLS key {}: cannot read it ({e}); {what}",
                self.key.display()
            ))
        })?;
        let parsed = PrivateKeyDer::from_pem_slice(&bytes);
        // The file's bytes hold the key: wipe them before they are freed.
        bytes.fill(0);
        std::hint::black_box(&bytes);
        // The parser's messages may quote the file: none of them is passed on.
        parsed.map_err(|e| {
            let why = match e {
                pem::Error::NoItemsFound => {
                    "holds no unencrypted private key (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                }
                _ => "not valid PEM",
            };
            Error::bad_request(format!("TLS key {}: {why}; {what}", self.key.display()))
        })
    }
}

/// A checked TLS server configuration (built by [`TlsFiles::load`]). Its `Debug` shows the file names only.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    files: TlsFiles,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The files it was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// `https`.
    pub fn scheme(&self) -> &'static str {
        "https"
    }
}

/// `https` with TLS, `http` without.
pub fn scheme(tls: Option<&ServerTls>) -> &'static str {
    tls.map_or("http", ServerTls::scheme)
}

/// Serves `app` on `listener` (HTTPS only when `tls` is given, else plain HTTP) until `shutdown` resolves, then
/// stops accepting and waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            axum::serve(TlsListener::new(listener, tls.acceptor)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    served.map_err(|e| Error::backend("http", e, false))
}

/// A listener whose connections have finished their TLS handshake. Handshakes run in a task of their own, each
/// bounded in time, so a slow or silent client never holds up the others; a failed one only drops that
/// connection.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Result<TlsListener> {
        let local = tcp
            .local_addr()
            .map_err(|e| Error::backend("http", e, false))?;
        let (tx, ready) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener { ready, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = tcp.accept(), if handshakes.len() < MAX_PENDING_HANDSHAKES => match accepted {
                Ok((stream, peer)) => {
                    let acceptor = acceptor.clone();
                    let ready = ready.clone();
                    handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let _ = ready.send((tls, peer)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => accept_error(e).await,
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = ready.closed() => return,
        }
    }
}

/// Errors of one connection are the client's; others (out of file descriptors) get a pause before the next try.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_is_both_or_neither() {
        assert_eq!(
            TlsFiles::pair(None, None, "--tls-cert", "--tls-key").expect("neither"),
            None
        );
        let both = TlsFiles::pair(
            Some(Path::new("c.pem")),
            Some(Path::new("k.pem")),
            "--tls-cert",
            "--tls-key",
        )
        .expect("both");
        assert_eq!(both, Some(TlsFiles::new("c.pem", "k.pem")));
        let e = TlsFiles::pair(Some(Path::new("c.pem")), None, "--tls-cert", "--tls-key")
            .expect_err("cert only")
            .to_string();
        assert!(e.starts_with("--tls-cert needs --tls-key"), "{e}");
        let e = TlsFiles::pair(None, Some(Path::new("k.pem")), "--tls-cert", "--tls-key")
            .expect_err("key only")
            .to_string();
        assert!(e.starts_with("--tls-key needs --tls-cert"), "{e}");
    }

    #[test]
    fn unreadable_or_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let e = TlsFiles::new(&missing, &missing)
            .load()
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains(&format!(
                "TLS certificate {}: cannot read it",
                missing.display()
            )),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let e = TlsFiles::new(&empty, &missing)
            .load()
            .expect_err("empty")
            .to_string();
        assert!(e.contains("holds no CERTIFICATE block"), "{e}");
        let secret = dir.path().join("secret.key");
        std::fs::write(
            &secret,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let key = TlsFiles::new(&empty, &secret)
            .read_key()
            .expect("a PEM block parses");
        assert_eq!(key.secret_der(), b"secret-key-bytes");
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0!!\n").expect("write");
        let e = TlsFiles::new(&empty, &garbage)
            .read_key()
            .expect_err("bad PEM")
            .to_string();
        assert!(
            e.contains(&garbage.display().to_string()) && !e.contains("c2VjcmV0"),
            "{e}"
        );
    }
}
