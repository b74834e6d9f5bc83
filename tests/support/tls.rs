//! Test support for the TLS and HTTP/2 tests: a certificate authority made
//! at test time (rcgen), an https backend (tokio-rustls + hyper-util's
//! auto server: HTTP/1.1 and HTTP/2 by ALPN, optional client
//! certificates) and an h2c backend (HTTP/2 with prior knowledge). Each
//! backend counts accepted connections and requests and answers
//! `"<name> <HTTP version> client-certs=<n>"`.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, a server certificate for `localhost` and `127.0.0.1` (or the
/// names given to [`pki_for`]), and a client certificate, all made now
/// (ECDSA P-256).
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

pub fn pki() -> Pki {
    pki_for(&["localhost", "127.0.0.1"])
}

/// A [`Pki`] whose server certificate names `names` only.
pub fn pki_for(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tower-ribbon test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");

    let server_key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut server = CertificateParams::new(names.clone()).expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, names.first().map_or("", String::as_str));
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &ca).expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, "tower-ribbon test client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &ca).expect("client cert");

    Pki {
        ca_pem: ca.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A running backend; stops when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    hits: Arc<AtomicUsize>,
    handshake_failures: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (e.g. no client certificate).
    pub fn handshake_failures(&self) -> usize {
        self.handshake_failures.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a backend speaks.
pub enum Mode {
    /// TLS with these ALPN protocols; client certificates required when
    /// `require_client_cert`.
    Tls {
        alpn: Vec<Vec<u8>>,
        require_client_cert: bool,
    },
    /// Plain TCP, HTTP/2 with prior knowledge only (h2c).
    H2c,
}

pub fn server_config(
    pki: &Pki,
    alpn: Vec<Vec<u8>>,
    require_client_cert: bool,
) -> rustls::ServerConfig {
    server_config_versions(pki, alpn, require_client_cert, rustls::DEFAULT_VERSIONS)
}

/// As [`server_config`], speaking only the protocol `versions` (e.g.
/// `&[&rustls::version::TLS12]`).
pub fn server_config_versions(
    pki: &Pki,
    alpn: Vec<Vec<u8>>,
    require_client_cert: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .expect("versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("ca der"))
            .expect("ca root");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain = vec![CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).expect("key");
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = alpn;
    config
}

/// Starts a backend on 127.0.0.1 (a free port).
pub async fn start(name: &str, pki: &Pki, mode: Mode) -> Backend {
    let acceptor = match mode {
        Mode::Tls {
            alpn,
            require_client_cert,
        } => Some(TlsAcceptor::from(Arc::new(server_config(
            pki,
            alpn,
            require_client_cert,
        )))),
        Mode::H2c => None,
    };
    serve(name, acceptor).await
}

/// Starts a TLS backend with `config` on 127.0.0.1 (a free port).
pub async fn start_with_config(name: &str, config: rustls::ServerConfig) -> Backend {
    serve(name, Some(TlsAcceptor::from(Arc::new(config)))).await
}

async fn serve(name: &str, acceptor: Option<TlsAcceptor>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let handshake_failures = Arc::new(AtomicUsize::new(0));
    let task = {
        let (connections, hits, failures) = (
            Arc::clone(&connections),
            Arc::clone(&hits),
            Arc::clone(&handshake_failures),
        );
        let name = name.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, hits, failures, name) = (
                    acceptor.clone(),
                    Arc::clone(&hits),
                    Arc::clone(&failures),
                    name.clone(),
                );
                tokio::spawn(async move {
                    let handler = move |peer_certs: usize| {
                        service_fn(move |req: http::Request<Incoming>| {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let body =
                                format!("{name} {:?} client-certs={peer_certs}", req.version());
                            async move {
                                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                    body,
                                ))))
                            }
                        })
                    };
                    match acceptor {
                        Some(acceptor) => {
                            let tls = match acceptor.accept(tcp).await {
                                Ok(tls) => tls,
                                Err(_) => {
                                    failures.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                            };
                            let peer = tls.get_ref().1.peer_certificates().map_or(0, <[_]>::len);
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(tls), handler(peer))
                                .await;
                        }
                        None => {
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .http2_only()
                                .serve_connection(TokioIo::new(tcp), handler(0))
                                .await;
                        }
                    }
                });
            }
        })
    };
    Backend {
        name: name.to_owned(),
        addr,
        connections,
        hits,
        handshake_failures,
        task,
    }
}

/// ALPN `h2` and `http/1.1`, the usual offer of an HTTPS server.
pub fn alpn_both() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}
