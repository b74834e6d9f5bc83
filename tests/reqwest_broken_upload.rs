//! The caller's request body failing while reqwest sends it is the
//! caller's error (`RequestError`), with the `reqwest` feature alone too:
//! hyper's user body error was recognised only with `hyper-util` on.
//! That build is what this test guards: run it with
//! `cargo test --no-default-features --features reqwest --test reqwest_broken_upload`
//! (with `hyper-util` on too, as in `scripts/test`, it passed before the fix).

mod support;

use http::Request;
use support::backend::Backend;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::{LoadBalancer, ReqwestService};

#[path = "common/broken_upload.rs"]
mod broken_upload;
use broken_upload::{BrokenUpload, expect_request_errors, expect_untouched};

const SVC: &str = "svc";

/// Four broken uploads through `ReqwestService`: each `[RequestError]`,
/// no failure counted on the instance (before, with `reqwest` alone:
/// `[OtherError]` each, 4 failures and 4 consecutive 5xx counted).
#[tokio::test]
async fn a_callers_broken_upload_through_reqwest_is_a_request_error() {
    let backend = Backend::start("a").await.expect("backend");
    let instances = vec![Instance::new(SVC, "127.0.0.1", backend.port()).unwrap()];
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .build(ReqwestService::new(reqwest::Client::new()))
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    expect_request_errors(4, || {
        let req = Request::post("http://svc/upload")
            .body(reqwest::Body::wrap(BrokenUpload(0)))
            .unwrap();
        lb.clone().oneshot(req)
    })
    .await;
    expect_untouched(&lb.snapshot(SVC).unwrap());
}

/// An `https://` request through a reqwest client without TLS (this
/// crate's `reqwest` dependency has none) meets hyper-util's plain
/// connector refusing the scheme before any I/O: the caller's error, with
/// the `reqwest` feature alone too (`tests/caller_scheme.rs` has the
/// hyper-util client's). Six requests: each one `[RequestError]` attempt,
/// no connection made, nothing counted (before: `[ConnectFailure,
/// ConnectFailure]`, which opened both instances' breakers).
#[tokio::test]
async fn an_https_request_through_reqwest_without_tls_is_a_request_error() {
    let a = Backend::start("a").await.expect("backend");
    let b = Backend::start("b").await.expect("backend");
    let instances = vec![
        Instance::new(SVC, "127.0.0.1", a.port()).unwrap(),
        Instance::new(SVC, "127.0.0.1", b.port()).unwrap(),
    ];
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .build(ReqwestService::default())
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    expect_request_errors(6, || {
        let req = Request::get("https://svc/x").body(String::new()).unwrap();
        lb.request(req)
    })
    .await;
    assert_eq!((a.connections(), b.connections()), (0, 0));
    expect_untouched(&lb.snapshot(SVC).unwrap());
}
