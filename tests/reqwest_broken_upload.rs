//! The caller's request body failing while reqwest sends it is the
//! caller's error (`RequestError`), with the `reqwest` feature alone too:
//! hyper's user body error was recognised only with `hyper-util` on.

mod support;

use bytes::Bytes;
use http::Request;
use support::backend::Backend;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::stats::Outcome;
use tower_ribbon::{LoadBalancer, ReqwestService};

const SVC: &str = "svc";

/// A request body that sends one chunk, then fails.
struct BrokenUpload(u8);

impl http_body::Body for BrokenUpload {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0 += 1;
        std::task::Poll::Ready(Some(if self.0 == 1 {
            Ok(http_body::Frame::data(Bytes::from_static(b"part")))
        } else {
            Err(std::io::Error::other("the caller's upload broke"))
        }))
    }
}

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
    for i in 0..4 {
        let req = Request::post("http://svc/upload")
            .body(reqwest::Body::wrap(BrokenUpload(0)))
            .unwrap();
        let err = lb.clone().oneshot(req).await.expect_err("the upload broke");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [Outcome::RequestError], "request {i}: {err:?}");
    }
    let snapshot = lb.snapshot(SVC).unwrap();
    let stats = snapshot.endpoints()[0].stats();
    assert_eq!(
        (
            stats.failures(),
            stats.consecutive_server_errors(),
            stats.in_flight()
        ),
        (0, 0, 0)
    );
}
