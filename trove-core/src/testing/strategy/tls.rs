//! The TLS part of the strategy suite (strategies offering [`crate::ports::TlsFacet`]).

use super::DynStrategy;
use crate::model::{SslChange, SslMode, SslStatus};

/// TLS starts off; enabling `basic` with a generated certificate shows it on with its certificate (the PEM only
/// when asked); a rollback turns it off again.
pub async fn enable_show_and_roll_back(strategy: &DynStrategy) {
    let tls = strategy.tls().expect("the strategy offers the TLS facet");
    let m = strategy.manager();
    let before = tls.ssl_show(false).await.expect("ssl_show");
    assert_eq!(
        before.status,
        SslStatus::Off,
        "{m}: a fresh instance has TLS off"
    );
    let on = tls
        .ssl_action(&SslChange::Enable {
            mode: SslMode::Basic,
            container_ref: None,
            password_ref: None,
            names: vec![],
        })
        .await
        .expect("enable basic TLS");
    assert_eq!(
        (on.status, on.mode),
        (SslStatus::On, Some(SslMode::Basic)),
        "{m}"
    );
    let shown = tls.ssl_show(false).await.expect("ssl_show");
    assert_eq!(shown.status, SslStatus::On, "{m}");
    let cert = shown.certificate.expect("a certificate is shown");
    assert!(!cert.cn.is_empty(), "{m}: the certificate has a CN");
    assert!(cert.payload.is_none(), "{m}: no PEM unless asked");
    let with_pem = tls.ssl_show(true).await.expect("ssl_show with PEM");
    let pem = with_pem
        .certificate
        .and_then(|c| c.payload)
        .expect("the PEM when asked");
    assert!(pem.contains("BEGIN CERTIFICATE"), "{m}: {pem}");
    let off = tls.ssl_rollback().await.expect("roll back");
    assert_eq!(off.status, SslStatus::Off, "{m}: the rollback restores off");
    assert_eq!(
        tls.ssl_show(false).await.expect("ssl_show").status,
        SslStatus::Off,
        "{m}"
    );
}

/// Every check of the TLS part.
pub async fn run(strategy: &DynStrategy) {
    enable_show_and_roll_back(strategy).await;
}
