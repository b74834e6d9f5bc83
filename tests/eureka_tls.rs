//! The real Spring Cloud Netflix Eureka server over https with basic auth
//! (tests/eureka-server-secure) serving the balancer (issue 11, item 7).
//!
//! The test makes a CA, a server certificate for 127.0.0.1 and a client
//! certificate (rcgen), hands them to Spring Boot as PEM files, and
//! requires client certificates (mutual TLS). The one user's password
//! holds `,`, `@`, `:`, `%` and `!`. Everything the crate logs during the
//! test, through `tracing` and the `log` facade (rustls), is captured at
//! TRACE and searched for the password in every form.
//!
//! One test function: the JVM starts once (about 10 s), and the log
//! capture is process-wide.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use support::backend::Backend;
use support::eureka::SecureEurekaFixture;
use support::{HttpClient, counts, http_client, tally};
use tls_support::{Pki, pki};
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::wire::WireError;
use tower_ribbon::discovery::eureka::{
    EurekaRegistration, EurekaRegistry, EurekaSource, EurekaTlsError,
};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::tls::{HttpsClient, HttpsClientBuilder};
use tower_ribbon::{DiscoveryError, InstanceStatus, LoadBalancer};

const USER: &str = "eureka";
/// Every piece between the special characters is 4+ characters long, so
/// a leak of any piece is found too.
const PASSWORD: &str = "Squ3,am1sh@pa55:w0rd%!zq";
/// As written in a URL: `%` percent-encoded; `,`, `@`, `:` and `!` as
/// they are (the crate splits lists outside credentials).
const PASSWORD_IN_URL: &str = "Squ3,am1sh@pa55:w0rd%25!zq";
/// Fully percent-encoded, as some tools write userinfo.
const PASSWORD_ENCODED: &str = "Squ3%2Cam1sh%40pa55%3Aw0rd%25%21zq";
const APP: &str = "tls-service";
const URI: &str = "http://tls-service/whoami";

/// Everything logged (tracing at TRACE, and `log` records) during the test.
static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// rustls and hyper-rustls log through the `log` facade.
struct LogCapture;

impl log::Log for LogCapture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let _ = writeln!(
            Capture,
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {}
}

static LOGGER: LogCapture = LogCapture;

fn capture_logs() {
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(|| Capture)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    log::set_logger(&LOGGER).expect("the only logger");
    log::set_max_level(log::LevelFilter::Trace);
}

fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// The forms the password must never take in any output: raw, as in the
/// URL, fully encoded, the basic-auth token, and each piece between its
/// special characters.
fn secrets() -> Vec<String> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let mut all = vec![
        PASSWORD.to_owned(),
        PASSWORD_IN_URL.to_owned(),
        PASSWORD_ENCODED.to_owned(),
        token,
    ];
    all.extend(
        PASSWORD
            .split([',', '@', ':', '%', '!'])
            .filter(|piece| piece.len() >= 4)
            .map(str::to_owned),
    );
    all
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(&secret),
            "{what} shows the password (as `{secret}`): {text}"
        );
    }
}

/// An error, its `Debug` and its sources, joined.
fn full_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{e} / {e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(" / {s} / {s:?}"));
        source = s.source();
    }
    text
}

/// The TLS error inside a discovery error (one server, or any of several).
fn tls_error(e: &DiscoveryError) -> Option<&EurekaTlsError> {
    match e {
        DiscoveryError::Transport { source, .. } => source.downcast_ref::<EurekaTlsError>(),
        DiscoveryError::AllServersFailed(all) => all.iter().find_map(tls_error),
        _ => None,
    }
}

/// A fresh directory under the target dir with the PEM files the script
/// hands to Spring Boot; removed when dropped, also when the test fails.
struct PemDir(PathBuf);

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pem_dir(pki: &Pki) -> PemDir {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("eureka-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("pem dir");
    for (name, pem) in [
        ("server.pem", &pki.server_cert_pem),
        ("server-key.pem", &pki.server_key_pem),
        ("client-ca.pem", &pki.ca_pem),
        ("client.pem", &pki.client_cert_pem),
        ("client-key.pem", &pki.client_key_pem),
    ] {
        std::fs::write(dir.join(name), pem).expect("pem file");
    }
    PemDir(dir)
}

/// Trusts only the test CA and presents the client certificate.
fn tls(pki: &Pki) -> HttpsClientBuilder {
    HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .and_then(|b| {
            b.client_auth_pem(
                pki.client_cert_pem.as_bytes(),
                pki.client_key_pem.as_bytes(),
            )
        })
        .expect("tls settings")
}

fn source(urls: &str, tls: HttpsClientBuilder) -> EurekaSource {
    EurekaSource::builder()
        .server_urls(urls)
        .tls(tls)
        .request_timeout(Duration::from_secs(10))
        .build()
        .expect("source")
}

/// `(port, status)` of each instance of [`APP`] the server lists.
async fn listed(source: &EurekaSource) -> Vec<(u16, String)> {
    let app = source
        .fetch_application(APP)
        .await
        .expect("fetch over https");
    let mut out: Vec<(u16, String)> = app
        .instances
        .iter()
        .map(|i| (i.instance.port(), i.raw_status.to_string()))
        .collect();
    out.sort();
    out
}

/// Polls (bounded, 10 s) until the server lists exactly `want`.
async fn wait_listed(source: &EurekaSource, want: &[(u16, &str)]) {
    let mut want: Vec<(u16, String)> = want.iter().map(|(p, s)| (*p, (*s).to_owned())).collect();
    want.sort();
    let mut last = Vec::new();
    for _ in 0..100 {
        last = listed(source).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("want {want:?}, the server lists {last:?}");
}

/// Refreshes the registry until the balancer holds exactly `n` instances
/// (bounded, 10 s).
async fn wait_balanced(registry: &EurekaRegistry, lb: &LoadBalancer<HttpClient>, n: usize) {
    for _ in 0..100 {
        registry
            .refresh_now()
            .await
            .expect("registry refresh over https");
        if lb.snapshot(APP).is_some_and(|s| s.len() == n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the balancer never held {n} instances: {:?}",
        lb.snapshot(APP)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eureka_over_https_with_basic_auth() {
    let started = Instant::now();
    capture_logs();
    let pki = pki();
    let dir = pem_dir(&pki);
    let Some(eureka) = SecureEurekaFixture::start(&dir.0, USER, PASSWORD) else {
        return;
    };
    eprintln!("secure Eureka server up after {:?}", started.elapsed());
    let good = eureka.url_with(&format!("{USER}:{PASSWORD_IN_URL}"));
    // A dead https server second in the list: the comma split must keep
    // the password's comma inside the first URL.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let urls = format!("{good},https://127.0.0.1:{dead}/eureka");
    let mut shown = Vec::new();

    // Registration over https: register, status, renew, cancel.
    let mut backends = Vec::new();
    let mut handles = Vec::new();
    for name in ["t1", "t2"] {
        let backend = Backend::start(name).await.expect("backend");
        let registration = EurekaRegistration::builder(APP, "127.0.0.1", backend.port())
            .server_urls(&urls)
            .tls(tls(&pki))
            .request_timeout(Duration::from_secs(10))
            .build()
            .expect("registration");
        shown.push(format!("{registration:?}"));
        let handle = registration.start().await.expect("register over https");
        handle.renew_now().await.expect("renew over https");
        shown.push(format!("{handle:?}"));
        handles.push(handle);
        backends.push(backend);
    }
    let (p1, p2) = (backends[0].port(), backends[1].port());
    let check = source(&urls, tls(&pki));
    shown.push(format!("{check:?}"));
    shown.push(format!(
        "{:?} {:?} {:?} {:?}",
        EurekaSource::builder().server_urls(&urls).tls(tls(&pki)),
        EurekaRegistry::builder().server_urls(&urls).tls(tls(&pki)),
        EurekaRegistration::builder(APP, "127.0.0.1", 9).server_urls(&urls),
        tls(&pki),
    ));
    #[cfg(feature = "config")]
    {
        // Spring's key with the same list: accepted (https builds with
        // `tls`), and neither its warnings nor its `Debug` show the password.
        let text = format!("eureka.client.serviceUrl.defaultZone={urls}\nsvc.ribbon.bogusKey=1\n");
        let config = tower_ribbon::config::RibbonConfig::from_properties_str(&text)
            .expect("config with https Eureka URLs");
        assert_eq!(config.eureka_server_urls().len(), 2);
        shown.push(format!("{config:?} {:?}", config.warnings()));
    }
    wait_listed(&check, &[(p1, "UP"), (p2, "UP")]).await;

    // The balancer discovers both through the registry over https.
    let registry = EurekaRegistry::builder()
        .server_urls(&urls)
        .tls(tls(&pki))
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(10))
        .build()
        .expect("registry");
    registry.ready().await.expect("first fetch over https");
    shown.push(format!("{registry:?}"));
    let lb = LoadBalancer::builder()
        .source(registry.clone())
        .service(APP)
        .rule(|| RoundRobin::with_start(0))
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = Duration::from_millis(100);
            refresh.jitter = 0.0;
            refresh
        })
        .build(http_client())
        .expect("balancer");
    assert!(lb.ready_service(APP).await);
    wait_balanced(&registry, &lb, 2).await;
    assert_eq!(tally(&lb, URI, 10).await, counts(&[("t1", 5), ("t2", 5)]));

    // A status change over https takes t1 out of the rotation.
    handles[0]
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("status over https");
    wait_listed(&check, &[(p1, "OUT_OF_SERVICE"), (p2, "UP")]).await;
    wait_balanced(&registry, &lb, 1).await;
    assert_eq!(tally(&lb, URI, 4).await, counts(&[("t2", 4)]));

    // A wrong password: 401, typed, and the password it was given is not shown.
    let wrong = source(
        &eureka.url_with(&format!("{USER}:{PASSWORD_IN_URL}x")),
        tls(&pki),
    );
    let err = wrong
        .fetch_application(APP)
        .await
        .expect_err("wrong password");
    assert!(
        matches!(err, DiscoveryError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("401"), "{err}");
    shown.push(full_text(&err));
    let refused = EurekaRegistration::builder(APP, "127.0.0.1", 9)
        .server_url(eureka.url_with(&format!("{USER}:{PASSWORD_IN_URL}x")))
        .tls(tls(&pki))
        .build()
        .expect("registration")
        .start()
        .await
        .expect_err("wrong password");
    assert!(
        matches!(refused, DiscoveryError::Status { status: 401, .. }),
        "{refused:?}"
    );
    shown.push(full_text(&refused));

    // The body limit holds over https: the registry's answer (a few
    // hundred bytes) is refused at 64 bytes.
    let small = EurekaSource::builder()
        .server_url(&good)
        .tls(tls(&pki))
        .max_body_bytes(64)
        .build()
        .expect("source");
    let err = small
        .fetch_application(APP)
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            err,
            DiscoveryError::Decode {
                source: WireError::TooLarge { limit: 64 },
                ..
            }
        ),
        "{err:?}"
    );

    // The password fully percent-encoded works too.
    let encoded = source(
        &eureka.url_with(&format!("{USER}:{PASSWORD_ENCODED}")),
        tls(&pki),
    );
    assert_eq!(listed(&encoded).await.len(), 2);

    // A server certificate the client does not trust: a typed TLS error.
    // With a CA of the same name but another key, rustls finds the issuer
    // and refuses its signature; with the default (webpki) roots it finds
    // no issuer.
    let other = pki_other();
    let another_ca = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(other.as_bytes())
        .expect("pem");
    for (what, tls, want) in [
        (
            "another CA",
            another_ca,
            rustls::CertificateError::BadSignature,
        ),
        (
            "webpki roots",
            HttpsClient::builder(),
            rustls::CertificateError::UnknownIssuer,
        ),
    ] {
        let err = source(&good, tls)
            .fetch_application(APP)
            .await
            .expect_err("untrusted server certificate");
        let tls = tls_error(&err).unwrap_or_else(|| panic!("{what}: not a TLS error: {err:?}"));
        assert_eq!(
            tls.rustls_error(),
            &rustls::Error::InvalidCertificate(want),
            "{what}"
        );
        shown.push(full_text(&err));
    }

    // Without the client certificate the server refuses the handshake.
    let no_client_cert = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .expect("pem");
    let err = source(&good, no_client_cert)
        .fetch_application(APP)
        .await
        .expect_err("no client certificate");
    // JSSE answers a missing certificate with bad_certificate. Under TLS
    // 1.3 the client's handshake ends before the server checks, so on a
    // loaded host the client may write its request and see the server close
    // the connection before it reads the alert: then the fetch fails as a
    // transport error (seen once in about ten runs under a full suite).
    match tls_error(&err) {
        Some(refused) => assert_eq!(
            refused.rustls_error(),
            &rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)
        ),
        None => assert!(
            matches!(&err, DiscoveryError::Transport { .. })
                || matches!(&err, DiscoveryError::AllServersFailed(all)
                    if all.iter().all(|e| matches!(e, DiscoveryError::Transport { .. }))),
            "neither the TLS alert nor a closed connection: {err:?}"
        ),
    }
    shown.push(full_text(&err));

    // Shutdown cancels over https: nothing is left registered. Read at
    // the live server alone: with the dead one in the list, a source that
    // listed the app holds its absence for `absence_hold`.
    for handle in handles {
        handle.shutdown().await.expect("cancel over https");
    }
    wait_listed(&source(&good, tls(&pki)), &[]).await;
    shown.push(format!("{lb:?}"));
    drop(lb);
    drop(registry);

    for text in &shown {
        assert_no_secret("an error or Debug output", text);
    }
    let logs = captured();
    assert!(
        logs.contains("TRACE") && logs.lines().count() > 100,
        "the capture saw no TRACE lines: {} lines",
        logs.lines().count()
    );
    assert_no_secret("the TRACE log", &logs);
    eprintln!(
        "eureka_over_https_with_basic_auth: {:?}, {} log lines checked",
        started.elapsed(),
        logs.lines().count()
    );
}

/// The root of a second CA, which did not sign the server's certificate.
fn pki_other() -> String {
    pki().ca_pem
}

/// The request timeout covers the TLS handshake: a server that accepts
/// the connection and never answers the ClientHello is a `Timeout` of
/// exactly the configured length, not a hang. (No Java needed.)
#[tokio::test]
async fn the_request_timeout_covers_a_stalled_handshake() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let timeout = Duration::from_millis(300);
    let source = EurekaSource::builder()
        .server_url(format!(
            "https://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{port}/eureka"
        ))
        .request_timeout(timeout)
        .build()
        .expect("source");
    let err = source.fetch_application(APP).await.expect_err("stalled");
    match &err {
        DiscoveryError::Timeout { server, after } => {
            assert_eq!(*after, timeout);
            assert_eq!(server, &format!("https://127.0.0.1:{port}/eureka"));
        }
        other => panic!("not a timeout: {other:?}"),
    }
    assert_no_secret("a timeout error", &full_text(&err));
    held.abort();
}
