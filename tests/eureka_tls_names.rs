//! A registry whose TLS certificate names hostile text (subject
//! alternative names holding CR/LF, an ANSI escape, thousands of bytes):
//! rustls' "not valid for name" error lists those names as the
//! certificate writes them, and the discovery error quoting it reaches the
//! refresh's warning. The names must come out escaped and the text
//! bounded, as other registry text is. No Eureka needed: the registry is
//! a TLS listener on 127.0.0.1 that never gets past the handshake.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower_ribbon::discovery::eureka::EurekaSource;
use tower_ribbon::tls::HttpsClient;

/// A CA (PEM) and a TLS listener on 127.0.0.1 whose certificate, signed
/// by it, names only `names`; returns the CA and the port.
async fn registry_named(names: Vec<String>) -> (String, u16) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).expect("cert");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("der")],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key der"),
    )
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (ca.pem(), port)
}

/// An error and its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A certificate naming `evil\r\n<a forged log line>`, `\x1b[2J` (clear
/// screen) and 400 names of 60 bytes: the fetch's error text, its chain
/// of sources and its `Debug` hold no control character and stay short
/// (before: the CR, LF and ESC raw in the text; text 29 467 bytes, chain
/// 88 261, `Debug` 31 095; now 609, 1 163 and 606).
#[tokio::test]
async fn certificate_names_are_escaped_and_cut_in_the_error() {
    let mut names = vec![
        "evil\r\n2026-12-04T00:00:00Z  INFO forged: all fine".to_owned(),
        "\u{1b}[2Jx".to_owned(),
    ];
    names.extend((0..400).map(|i| format!("{i:03}{}", "a".repeat(57))));
    let (ca, port) = registry_named(names).await;
    let source = EurekaSource::builder()
        .server_url(format!("https://127.0.0.1:{port}/eureka"))
        .tls(
            HttpsClient::builder()
                .webpki_roots(false)
                .add_root_pem(ca.as_bytes())
                .expect("ca"),
        )
        .build()
        .expect("source");
    let err = source.fetch_application("svc").await.unwrap_err();
    let (text, full, debug) = (err.to_string(), chain(&err), format!("{err:?}"));
    let lens = (text.len(), full.len(), debug.len());
    let head = |s: &str| s.chars().take(300).collect::<String>();
    for shown in [&text, &full, &debug] {
        let raw = shown.chars().filter(|c| c.is_control()).count();
        assert_eq!(raw, 0, "{lens:?} {:?}", head(shown));
    }
    assert!(text.contains("evil\\r\\n2026"), "{}", head(&text));
    assert!(
        text.contains("certificate not valid for name"),
        "{}",
        head(&text)
    );
    assert!(
        text.len() <= 700 && full.len() <= 1300 && debug.len() <= 700,
        "{lens:?}"
    );
}
