//! Spring Cloud LoadBalancer's `add-service-instance-cookie` through a real
//! balancer against real loopback backends that record (and echo) every
//! `Cookie` field they receive: the cookie names the instance that got the
//! request, on the first try and on a retry to another instance (exactly
//! one pair of that name), the caller's other cookies are kept, a hostile
//! instance id is refused without a panic (no cookie, one warning), a bad
//! cookie name fails the build, and nothing is added by default.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::backend::{Backend, Behavior, ECHO_COOKIE};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;

#[path = "common/log_capture.rs"]
mod log_capture;
use tower_ribbon::retry::RetryPolicy;

const SVC: &str = "svc";
const COOKIE: &str = "sc-lb-instance-id";

type Lb = LoadBalancer<Client<HttpConnector, Empty<Bytes>>>;

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A balancer over `backends` with instance ids `ids`, one retry on
/// another instance, and `cookie` as the instance cookie.
async fn balancer(backends: &[&Backend], ids: &[&str], cookie: Option<&str>) -> Lb {
    let instances = (backends.iter().zip(ids))
        .map(|(b, id)| {
            Instance::new(SVC, "127.0.0.1", b.port())
                .unwrap()
                .with_id(*id)
        })
        .collect();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .retry(RetryPolicy::default().max_same(0).max_next(1))
        .instance_cookie(cookie)
        .build(client())
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

/// Sends a GET with these `Cookie` fields; the status, the body (the
/// backend's name) and the `Cookie` fields the backend echoed.
async fn get(lb: &Lb, cookies: &[&str]) -> (u16, String, Vec<String>) {
    use http_body_util::BodyExt;
    let mut req = Request::get("http://svc/x");
    for c in cookies {
        req = req.header(http::header::COOKIE, *c);
    }
    let response = lb
        .clone()
        .oneshot(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let echoed = (response.headers().get_all(ECHO_COOKIE).iter())
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap(), echoed)
}

fn id_of(name: &str) -> &'static str {
    match name {
        "a" => "a-1",
        "b" => "host-b:svc:8080",
        _ => panic!("unknown backend {name}"),
    }
}

#[tokio::test]
async fn the_cookie_names_the_instance_that_receives_it() {
    log_capture::init();
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let lb = balancer(&[&a, &b], &[id_of("a"), id_of("b")], Some(COOKIE)).await;
    for _ in 0..4 {
        let (status, name, echoed) = get(&lb, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(echoed, [format!("{COOKIE}={}", id_of(&name))]);
    }
    let own = |backend: &Backend| vec![vec![format!("{COOKIE}={}", id_of(backend.name()))]; 2];
    assert_eq!(a.cookies(), own(&a));
    assert_eq!(b.cookies(), own(&b));
}

/// Both instances answer 503, so every request is tried on both: the
/// retry carries the second instance's pair in place of the first's, and
/// a stale pair of the caller's is replaced too; other cookies stay, in
/// one `Cookie` field.
#[tokio::test]
async fn a_retry_replaces_the_pair_and_keeps_other_cookies() {
    log_capture::init();
    let a = Backend::start_with("a", Behavior::Status(503))
        .await
        .unwrap();
    let b = Backend::start_with("b", Behavior::Status(503))
        .await
        .unwrap();
    let lb = balancer(&[&a, &b], &[id_of("a"), id_of("b")], Some(COOKIE)).await;
    let sent = ["x=1; sc-lb-instance-id=stale", "y=\"two\""];
    for _ in 0..2 {
        let (status, _, _) = get(&lb, &sent).await;
        assert_eq!(status, 503);
    }
    for backend in [&a, &b] {
        let want = format!("x=1; y=\"two\"; {COOKIE}={}", id_of(backend.name()));
        assert_eq!(backend.cookies(), vec![vec![want]; 2], "{}", backend.name());
    }
    // Recovered: the answering instance is named, exactly once.
    a.set_behavior(Behavior::Ok);
    b.set_behavior(Behavior::Ok);
    let (status, name, echoed) = get(&lb, &["sc-lb-instance-id=a-1"]).await;
    assert_eq!(status, 200);
    assert_eq!(echoed, [format!("{COOKIE}={}", id_of(&name))]);
}

/// An id that would smuggle a second cookie (or a header) is refused: no
/// pair is added, the caller's cookies pass unchanged, and the service logs
/// one warning however many requests go out.
#[tokio::test]
async fn a_hostile_instance_id_gets_no_cookie_and_one_warning() {
    let (_guard, captured) = log_capture::capture(tracing::Level::WARN);

    let a = Backend::start("a").await.unwrap();
    let lb = balancer(&[&a], &["a-1; admin=1"], Some(COOKIE)).await;
    for _ in 0..3 {
        let (status, _, echoed) = get(&lb, &["x=1"]).await;
        assert_eq!(status, 200);
        assert_eq!(echoed, ["x=1"]);
    }
    let (status, _, echoed) = get(&lb, &[]).await;
    assert_eq!((status, echoed.len()), (200, 0));
    let x = || vec!["x=1".to_owned()];
    assert_eq!(a.cookies(), [x(), x(), x(), vec![]]);
    let log = captured.text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("instance id is not a cookie value")
            && warnings[0].contains("service=\"svc\"")
            && warnings[0].contains(r#"id="a-1; admin=1""#),
        "{log}"
    );
}

/// A refused id as long as a registry keeps (8 KiB: Eureka's bound) is
/// cut in the warning, as other registry text in log lines: the warning
/// quoted it whole, escaped (`\r\n` four bytes per pair), a line of
/// 16 610 bytes; now 485 (a five-digit port).
#[tokio::test]
async fn a_long_refused_id_is_cut_in_the_warning() {
    let (_guard, captured) = log_capture::capture(tracing::Level::WARN);
    let a = Backend::start("a").await.unwrap();
    let id = format!("a-1;{}", "\r\n".repeat(4094));
    let lb = balancer(&[&a], &[id.as_str()], Some(COOKIE)).await;
    let (status, _, _) = get(&lb, &[]).await;
    assert_eq!(status, 200);
    let log = captured.text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1);
    let line = warnings[0];
    assert!(
        line.contains(r#"id="a-1;\r\n\r\n"#),
        "{}",
        &line[..line.len().min(400)]
    );
    // The port's digits vary the length by a few bytes.
    assert!(
        line.len() <= 500,
        "{}: {}",
        line.len(),
        &line[..line.len().min(400)]
    );
}

#[tokio::test]
async fn off_by_default_and_per_service() {
    log_capture::init();
    let a = Backend::start("a").await.unwrap();
    let lb = balancer(&[&a], &["a-1"], None).await;
    let (_, _, echoed) = get(&lb, &["x=1; sc-lb-instance-id=stale"]).await;
    assert_eq!(echoed, ["x=1; sc-lb-instance-id=stale"], "left alone");
    let (_, _, echoed) = get(&lb, &[]).await;
    assert!(echoed.is_empty());

    // Balancer-wide on, this service off (and the other way round).
    let instances = vec![
        Instance::new(SVC, "127.0.0.1", a.port())
            .unwrap()
            .with_id("a-1"),
    ];
    for (all, one, want) in [
        (Some(COOKIE), None, vec![]),
        (None, Some("sid"), vec!["sid=a-1".to_owned()]),
    ] {
        let lb = LoadBalancer::builder()
            .source(StaticSource::new().with_instances(SVC, instances.clone()))
            .service(SVC)
            .instance_cookie(all)
            .service_instance_cookie("SVC", one)
            .build(client())
            .unwrap();
        assert!(lb.ready_service(SVC).await);
        let (_, _, echoed) = get(&lb, &[]).await;
        assert_eq!(echoed, want);
    }
}

#[tokio::test]
async fn a_bad_cookie_name_fails_the_build() {
    log_capture::init();
    for bad in ["", "a;b", "a=b", "a b"] {
        let err = LoadBalancer::builder()
            .source(StaticSource::new())
            .service(SVC)
            .service_instance_cookie("other", Some(bad))
            .build(client())
            .unwrap_err();
        assert_eq!(err.key(), Some("Builder::instance_cookie"), "{bad:?}");
    }
}
