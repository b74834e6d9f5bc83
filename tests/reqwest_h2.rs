//! HTTP/2 streams through a caller's reqwest client that speaks h2c
//! (`http2_prior_knowledge`), with the `reqwest` feature alone: a stream
//! the server refused (`REFUSED_STREAM`) or left above its `GOAWAY` is
//! read as never processed, and the caller's broken upload as the
//! caller's. Before, h2's errors were read only with `tls` or `grpc` on,
//! so in this build (and with the default features, over hyper-util's
//! client) a refused POST failed unsent as `[OtherError]`, a
//! `GOAWAY(ENHANCE_YOUR_CALM)` counted against the instance, and the
//! caller's broken upload counted as the instance's failure. Run with
//! `cargo test --no-default-features --features reqwest --test reqwest_h2`
//! (as `scripts/test` does).

use std::sync::atomic::Ordering;

use http::Request;
use tower_ribbon::{LoadBalancer, ReqwestService};

#[path = "common/broken_upload.rs"]
mod broken_upload;
#[path = "common/goaway_server.rs"]
mod goaway_server;
#[path = "common/ok_server.rs"]
mod ok_server;
use broken_upload::{BrokenUpload, expect_request_errors};
use ok_server::{SVC, ok_server, round_robin};

/// Round robin from `first` over `first` and `second` through an h2c
/// reqwest client, ready. reqwest's own retries are off: by default it
/// sends a refused stream again twice on its own before the balancer sees
/// it (its retry of protocol NACKs).
async fn balancer(first: u16, second: u16) -> LoadBalancer<ReqwestService> {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .retry(reqwest::retry::never())
        .build()
        .unwrap();
    round_robin(
        &[first, second],
        ReqwestService::new(client).http2_only(true),
        |b| b,
    )
    .await
}

fn post() -> Request<reqwest::Body> {
    Request::post("http://svc/orders")
        .body(reqwest::Body::from("one order"))
        .unwrap()
}

/// A POST whose stream the first instance refuses, or leaves above a
/// `GOAWAY` with `ENHANCE_YOUR_CALM` or `INTERNAL_ERROR`: each goes on to the
/// second instance and is answered there once, and counts as one connect
/// failure of the first instance (`ENHANCE_YOUR_CALM` too, as the first
/// declined attempt of the instance in its window; later ones count
/// nothing, see `h2_enhance_your_calm.rs`). Before, in this build: the
/// POST failed `[OtherError]`, unsent elsewhere.
#[tokio::test]
async fn an_unprocessed_post_goes_to_the_next_instance() {
    for case in [
        "REFUSED_STREAM",
        "GOAWAY(ENHANCE_YOUR_CALM)",
        "GOAWAY(INTERNAL_ERROR)",
    ] {
        let (first, got, counted) = match case {
            "REFUSED_STREAM" => {
                let (port, got) = goaway_server::resetting_server(h2::Reason::REFUSED_STREAM).await;
                (port, got, 1)
            }
            "GOAWAY(ENHANCE_YOUR_CALM)" => {
                let (port, got) = goaway_server::goaway_server(0, 11, true).await;
                (port, got, 1)
            }
            _ => {
                let (port, got) = goaway_server::goaway_server(0, 2, true).await;
                (port, got, 1)
            }
        };
        let (second, served) = ok_server(true).await;
        let lb = balancer(first, second).await;
        let response = lb.request(post()).await.expect(case);
        assert_eq!(response.status(), 200, "{case}");
        assert_eq!(
            (got.load(Ordering::SeqCst), served.load(Ordering::SeqCst)),
            (1, 1),
            "{case}"
        );
        let snapshot = lb.snapshot(SVC).unwrap();
        let stats = snapshot.endpoints()[0].stats();
        assert_eq!(
            (stats.failures(), stats.successive_connection_failures()),
            (counted, counted as u32),
            "{case}"
        );
    }
}

/// The caller's upload breaking over h2c: the reset this side sends for
/// it makes each request `[RequestError]`, counted on no instance
/// (before, in this build: `[OtherError]`, a failure of the instance).
#[tokio::test]
async fn a_callers_broken_upload_over_h2c_is_a_request_error() {
    let (first, _) = ok_server(true).await;
    let (second, _) = ok_server(true).await;
    let lb = balancer(first, second).await;
    expect_request_errors(4, || {
        let req = Request::post("http://svc/upload")
            .body(reqwest::Body::wrap(BrokenUpload(0)))
            .unwrap();
        lb.request(req)
    })
    .await;
    let snapshot = lb.snapshot(SVC).unwrap();
    for e in snapshot.endpoints() {
        assert_eq!((e.stats().failures(), e.stats().in_flight()), (0, 0), "{e}");
    }
}

/// A POST failed by a graceful `GOAWAY` (`NO_ERROR`) is not sent again,
/// with a body or without: hyper's client, under reqwest too, gives that
/// error to a stream a drain's server processed (`h2_graceful_drain.rs`:
/// 3 POSTs without a body ran at both instances in 500 drains through
/// reqwest; found by an attack: 4 with a body in 400, their handler run
/// at the HEADERS). Each fails after one attempt, counted as no connect
/// failure. Before: the POST with a body was answered by the second
/// instance.
#[tokio::test]
async fn a_post_failed_by_a_graceful_goaway_is_not_sent_again() {
    let (first, got) = goaway_server::goaway_server(0, 0, true).await;
    let (second, served) = ok_server(true).await;
    let lb = balancer(first, second).await;
    for (n, body) in ["", "one order"].into_iter().enumerate() {
        let request = Request::post("http://svc/orders")
            .body(reqwest::Body::from(body))
            .unwrap();
        let err = lb.request(request).await.expect_err("not sent again");
        assert_eq!(err.attempts().len(), 1, "{body:?}: {err:?}");
        assert!(
            !err.attempts()[0].outcome.never_reached_server(),
            "{body:?}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("POST not retried: the request may have reached the server"),
            "{body:?}: {err}"
        );
        assert_eq!(
            (got.load(Ordering::SeqCst), served.load(Ordering::SeqCst)),
            (n + 1, n),
            "{body:?}"
        );
        // The healthy instance's turn.
        assert_eq!(lb.request(post()).await.expect("answered").status(), 200);
    }
    let snapshot = lb.snapshot(SVC).unwrap();
    let stats = snapshot.endpoints()[0].stats();
    assert_eq!(stats.successive_connection_failures(), 0);
}
