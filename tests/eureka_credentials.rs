//! Credentials in Eureka server URLs: a password with `,`, `@`, `:` and `%`
//! works (raw `,`, `@`, `:`; `%` written `%25`; or everything
//! percent-encoded), the comma-separated list is split outside the
//! credentials, and the password never shows in an error, in `Debug`
//! output, or in any log line at TRACE (captured with a tracing
//! subscriber). A stub on 127.0.0.1 answers 401 unless the
//! `Authorization` header carries exactly the password.
//!
//! Issue 11: "A comma in the password splits the server list inside the
//! credentials and leaks its first part into errors and `Debug`." Public
//! bug reports of other Eureka clients this test also covers:
//! - <https://github.com/jhipster/jhipster-registry/issues/232>: an `@` in
//!   the password broke the client ("Host name may not be null");
//! - <https://github.com/spring-cloud/spring-cloud-netflix/issues/3035>:
//!   credentials on every URL of a comma-separated `defaultZone` list broke
//!   registration;
//! - <https://github.com/spring-cloud/spring-cloud-netflix/issues/3815>:
//!   basic auth failed with percent-encoded characters;
//! - <https://github.com/keijack/python-eureka-client/issues/72>: a `!` in
//!   the password was encoded twice (raw `!` and `%21` must both work).
#![cfg(feature = "eureka")]

#[path = "common/closed_port.rs"]
mod closed_port;

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::{EurekaRegistry, EurekaSource};

use closed_port::ClosedPort;

const USER: &str = "svc-user";
const PASSWORD: &str = "p,a@s:s%w!";
/// Pieces of the password that must never show anywhere.
const SECRETS: [&str; 5] = ["p,a", "a@s", "s:s", "s%w", "s%25w"];

fn token() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
}

const APP: &str = r#"{"application":{"name":"USER-SERVICE","instance":{"instanceId":"u1","hostName":"127.0.0.1","status":"UP","port":{"$":18081,"@enabled":"true"}}}}"#;

/// Answers 200 with [`APP`] when the basic-auth header is right, else 401.
async fn stub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let want = format!("Basic {}", token());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let want = want.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let ok = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v.as_bytes() == want.as_bytes());
                    async move {
                        let (status, body) = if ok { (200, APP) } else { (401, "") };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr.to_string()
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS.iter().copied().chain([token().as_str()]) {
        assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn passwords_with_any_character_work_and_never_show() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let good = stub().await;
    // Nothing listens there, and the port stays reserved for the test.
    let closed = ClosedPort::new().expect("reserve a port");
    let dead = closed.port();
    // Raw `,`, `@`, `:` and an encoded `%`, in a comma-separated list whose
    // first server is down (its error is listed), then fully encoded.
    let raw = format!(
        "http://{USER}:p,a@s:s%25w!@127.0.0.1:{dead}/eureka,http://{USER}:p,a@s:s%25w!@{good}/eureka"
    );
    let encoded = format!("http://{USER}:p%2Ca%40s%3As%25w%21@{good}/eureka");
    for list in [raw.as_str(), encoded.as_str()] {
        let builder = EurekaSource::builder().server_urls(list);
        assert_no_secret("builder Debug", &format!("{builder:?}"));
        let source = builder.build().expect("source");
        assert_no_secret("source Debug", &format!("{source:?}"));
        assert_eq!(
            source.server_urls().last().map(String::as_str),
            Some(format!("http://{good}/eureka").as_str())
        );
        let instances = source.fetch("user-service").await.expect("auth accepted");
        assert_eq!(instances.len(), 1, "{list}");
    }

    // Errors: the dead server alone, and a wrong password (401).
    let only_dead = EurekaSource::builder()
        .server_urls(&format!(
            "http://{USER}:p,a@s:s%25w@127.0.0.1:{dead}/eureka"
        ))
        .build()
        .expect("source");
    let err = only_dead.fetch("user-service").await.expect_err("down");
    assert_no_secret("transport error", &format!("{err}\n{err:?}"));
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("http://{USER}:p,a@s:s%25x@{good}/eureka"))
        .build()
        .expect("registry");
    let err = registry.ready().await.expect_err("401");
    assert!(err.to_string().contains("401"), "{err}");
    assert_no_secret("status error", &format!("{err}\n{err:?}\n{registry:?}"));
    // A URL that does not parse: the build error hides the credentials.
    let bad = EurekaSource::builder()
        .server_urls(&format!("ftp://{USER}:p,a@s:s%25w!@127.0.0.1/eureka"))
        .build()
        .expect_err("ftp");
    assert_no_secret("build error", &format!("{bad}\n{bad:?}"));

    let logs = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf-8");
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the capture works:\n{logs}"
    );
    assert_no_secret("TRACE logs", &logs);
}
