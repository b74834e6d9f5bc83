//! A registrant's call dropped mid-flight, and duplicate instance ids in a
//! payload (helper 125, stop 48).
//!
//! - A `set_status(Up)` the caller dropped (a `tokio::time::timeout`
//!   around it) while a slow server held it, then a drain the server
//!   answered: the held UP landed after the drain and the draining
//!   instance was served UP for good (20 of 20 reads over 41 renewals,
//!   100 of 100 requests of a balancer sent to it). A dropped call now
//!   arms the late-write read-backs as a timed-out one does: 0 of 20.
//! - A payload listing one id twice, UP then DOWN: `EurekaSource` served it
//!   while the registry copy and Java's `Application.addInstance` keep the
//!   last record (DOWN). Now the last record of an id.
#![cfg(feature = "eureka")]

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::eureka::EurekaFixture;
use tokio::net::TcpListener;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

/// A forwarding proxy in front of a real Eureka server. Every request is
/// forwarded at once in a detached task (it completes even when the
/// caller goes away), except a `PUT …/status?value=UP` while `hold_up` is
/// set: that one is held `hold` before it is forwarded, as a server (or a
/// gateway in front of it) that is slow and applies the write later.
struct Proxy {
    port: u16,
    hold_up: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    forwarded_late: Arc<AtomicUsize>,
}

async fn proxy(upstream: String, hold: Duration) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold_up = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let forwarded_late = Arc::new(AtomicUsize::new(0));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (h, c, l) = (hold_up.clone(), held.clone(), forwarded_late.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (client, upstream) = (client.clone(), upstream.clone());
            let (h, c, l) = (h.clone(), c.clone(), l.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    let (h, c, l) = (h.clone(), c.clone(), l.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let pq = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default();
                        let delay = parts.method == http::Method::PUT
                            && pq.contains("/status?value=UP")
                            && h.load(Ordering::SeqCst);
                        if delay {
                            c.fetch_add(1, Ordering::SeqCst);
                        }
                        let mut fwd = Request::builder()
                            .method(parts.method.clone())
                            .uri(format!("http://{upstream}{pq}"));
                        for (k, v) in &parts.headers {
                            if k != http::header::HOST {
                                fwd = fwd.header(k, v);
                            }
                        }
                        let fwd = fwd.body(Full::new(body)).unwrap();
                        // Detached: the write reaches the server even if the
                        // caller gave up.
                        let task = tokio::spawn(async move {
                            if delay {
                                tokio::time::sleep(hold).await;
                            }
                            let r = client.request(fwd).await;
                            if delay {
                                l.fetch_add(1, Ordering::SeqCst);
                            }
                            match r {
                                Ok(resp) => {
                                    let (p, b) = resp.into_parts();
                                    let b =
                                        b.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                    Response::from_parts(p, Full::new(b))
                                }
                                Err(_) => Response::builder()
                                    .status(502)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            }
                        });
                        Ok::<_, Infallible>(task.await.unwrap())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Proxy {
        port,
        hold_up,
        held,
        forwarded_late,
    }
}

async fn served_status(eureka: &EurekaFixture, app: &str, id: &str) -> Option<String> {
    eureka
        .statuses(app)
        .await
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| s)
}

/// A caller bounds `set_status(Up)` with a timeout (a readiness hook with
/// a deadline); the server is slow and applies the UP later. Meanwhile the
/// instance drains (`set_status(OutOfService)`, answered 200). The late UP
/// lands after the drain: Eureka serves the draining instance UP, and the
/// registration, whose renewals keep getting 200, never corrects it.
///
/// Docs (registration/mod.rs, late.rs): "a draining instance is never left
/// UP"; "A register or status call that timed out ... may still land there
/// later ... arms a read-back". A cancelled call is such a call too; it
/// armed nothing before.
#[tokio::test]
async fn a_cancelled_up_that_lands_after_a_drain_is_undone() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "attack48-late-up";
    let backend = support::backend::Backend::start("drained").await.unwrap();
    let port = backend.port();
    let id = format!("127.0.0.1:{app}:{port}");
    let px = proxy(
        format!("127.0.0.1:{}", eureka.port()),
        Duration::from_secs(2),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/eureka", px.port);
    let handle = EurekaRegistration::builder(app, "127.0.0.1", port)
        .server_url(url)
        .request_timeout(Duration::from_secs(5))
        .renew_interval(Duration::from_millis(300))
        .build()
        .unwrap()
        .start()
        .await
        .expect("registered");
    eprintln!("after start: {:?}", handle.stats());
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drain");
    assert_eq!(
        served_status(&eureka, app, &id).await.as_deref(),
        Some("OUT_OF_SERVICE")
    );

    // Back in service, bounded by the caller at 300 ms; the server is slow.
    px.hold_up.store(true, Ordering::SeqCst);
    let cut = tokio::time::timeout(
        Duration::from_millis(300),
        handle.set_status(InstanceStatus::Up),
    )
    .await;
    assert!(cut.is_err(), "the caller's timeout cut the call");
    px.hold_up.store(false, Ordering::SeqCst);
    // Drain again (shutdown begins): answered at once.
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drain again");
    assert_eq!(
        served_status(&eureka, app, &id).await.as_deref(),
        Some("OUT_OF_SERVICE")
    );
    // The held UP lands.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(px.held.load(Ordering::SeqCst), 1);
    assert_eq!(px.forwarded_late.load(Ordering::SeqCst), 1);
    // 10 s of renewals (about 33 at 300 ms): does the registration put the
    // drain back?
    let mut up_samples = 0;
    let mut samples = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples += 1;
        if served_status(&eureka, app, &id).await.as_deref() == Some("UP") {
            up_samples += 1;
        }
    }
    // What a caller over the registry sends to the draining instance.
    let registry = tower_ribbon::discovery::eureka::EurekaRegistry::builder()
        .server_url(eureka.url())
        .fetch_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    registry.ready().await.expect("first fetch");
    let lb = tower_ribbon::LoadBalancer::builder()
        .source(registry)
        .service(app)
        .refresh({
            let mut c = tower_ribbon::discovery::RefreshConfig::default();
            c.interval = Duration::from_millis(200);
            c
        })
        .build(support::http_client())
        .unwrap();
    let tally = support::tally(&lb, &format!("http://{app}/x"), 100).await;
    eprintln!("100 requests to {app} while it drains: {tally:?}");
    let stats = handle.stats();
    eprintln!(
        "wanted {:?}; served UP in {up_samples}/{samples} samples over 10 s; stats {stats:?}",
        handle.status()
    );
    assert_eq!(handle.status(), InstanceStatus::OutOfService);
    assert_eq!(
        up_samples, 0,
        "a draining instance was served UP in {up_samples}/{samples} samples after {} renewals",
        stats.renewals
    );
    handle.shutdown().await.expect("cancelled");
}

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

/// One app whose payload lists instance id `dup` twice at the same address:
/// first UP, then DOWN (the last record, which Jackson/Java's
/// `Application.addInstance` keeps: a map by id, last wins). The
/// registry copy keeps the last (DOWN, not served); `EurekaSource` served
/// the UP one before. Also prints what the two sources make of odd records.
#[tokio::test]
async fn a_duplicate_id_whose_last_record_is_down_is_not_served_by_either_source() {
    use eureka_stub::{Answer, Stub, record};
    use tower_ribbon::discovery::InstanceSource;
    use tower_ribbon::discovery::eureka::{EurekaRegistry, EurekaSource};
    let stub = Stub::start().await;
    let recs = vec![
        record("DUPAPP", "dup", 1001, "UP", "ADDED", "{}"),
        record("DUPAPP", "dup", 1001, "DOWN", "ADDED", "{}"),
        record("DUPAPP", "lower", 1002, "up", "ADDED", "{}"),
        record("DUPAPP", "spaced", 1003, " UP ", "ADDED", "{}"),
        record("DUPAPP", "ok", 1004, "UP", "ADDED", "{}"),
    ];
    let app = format!(
        r#"{{"application":{{"name":"DUPAPP","instance":[{}]}}}}"#,
        recs.join(",")
    );
    stub.set("/eureka/apps/DUPAPP", vec![Answer::ok(app)]);
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(eureka_stub::apps("", "DUPAPP", &recs))],
    );
    let source = EurekaSource::builder()
        .server_url(stub.url())
        .build()
        .unwrap();
    let registry = EurekaRegistry::builder()
        .server_url(stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    registry.ready().await.expect("first fetch");
    let show = |list: Vec<tower_ribbon::Instance>| {
        let mut v: Vec<String> = list
            .iter()
            .map(|i| format!("{}={}", i.id(), i.status().as_str()))
            .collect();
        v.sort();
        v
    };
    let from_source = show(source.fetch("dupapp").await.expect("source"));
    let from_registry = show(registry.fetch("dupapp").await.expect("registry"));
    eprintln!("EurekaSource: {from_source:?}\nEurekaRegistry: {from_registry:?}");
    // Count what a balancer over EurekaSource serves at `dup`'s address.
    let dup_up_in_source = from_source.iter().any(|s| s == "dup=UP");
    let dup_up_in_registry = from_registry.iter().any(|s| s == "dup=UP");
    assert_eq!(
        (dup_up_in_source, dup_up_in_registry),
        (false, false),
        "the last record of `dup` is DOWN; EurekaSource lists {from_source:?}, the registry {from_registry:?}"
    );
}
