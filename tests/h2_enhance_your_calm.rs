//! A server's HTTP/2 `GOAWAY` with `ENHANCE_YOUR_CALM` (RFC 9113, section
//! 7) is a complaint about this client's traffic, not a sign the instance
//! is unwell: h2's server (hyper's, tonic's, axum's) sends it when one
//! stream's header list is over four times its `SETTINGS_MAX_HEADER_LIST_SIZE`,
//! and every stream above its last stream id fails with it, the caller's
//! and any other caller's sharing the connection. Such a stream was not
//! processed, so it is retried (even a POST), as
//! [`Outcome::Declined`], and it counts against the instance at most once
//! a second (`StatsConfig::declined_counted_every`), as a connect
//! failure: a burst (one connection's streams, one caller's run of
//! oversized requests) counts once, while a server that declines
//! everything still trips its breaker after three seconds without a
//! response. Before, every one was a connect failure: five requests with
//! one oversized header opened the breakers of two healthy instances for
//! 30 s (found by this crate's adversarial review, stop 43). A `GOAWAY`
//! with any other code on an unprocessed stream stays a connect failure.
//! The tests set that window (`StatsConfig::declined_counted_every`) to an
//! hour, so that a burst is one window whatever the machine's speed, or
//! to 50 ms with sleeps of that long between requests.
//!
//! gRPC clients read the code the same way, as the server throttling this
//! client: grpc-java's `NettyClientHandler` doubles its keepalive time on
//! `GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings")`, and
//! [grpc/grpc-go#2602](https://github.com/grpc/grpc-go/pull/2602) and
//! [dragonflyoss/client#670](https://github.com/dragonflyoss/client/pull/670)
//! (an h2 client) are reports of it under concurrent calls.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower_ribbon::LoadBalancer;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::stats::{BreakerState, Outcome};

#[path = "common/goaway_server.rs"]
mod goaway_server;
// Its `balancer` has the default stats configuration.
#[allow(dead_code)]
#[path = "common/never_reached.rs"]
mod never_reached;
use never_reached::{SVC, ok_server, ok_server_with, post};

type Lb = LoadBalancer<tower_ribbon::service::HttpClient<Full<Bytes>>>;

/// A declined attempt counts once an hour: a burst is one window.
const HOUR: Duration = Duration::from_secs(3600);

/// Round robin from the first of `ports`, with `policy` and a declined
/// attempt counted once per `every`; ready.
async fn balancer_with(ports: &[u16], policy: RetryPolicy, every: Duration) -> Lb {
    never_reached::h2_round_robin(ports, policy, every).await
}

/// [`balancer_with`] the default retry policy, declines counted hourly.
async fn balancer(ports: &[u16]) -> Lb {
    balancer_with(ports, RetryPolicy::default(), HOUR).await
}

/// Each instance's failures and successive connection failures, in list
/// order.
fn counted(lb: &Lb) -> Vec<(u64, u32)> {
    let snapshot = lb.snapshot(SVC).unwrap();
    snapshot
        .endpoints()
        .iter()
        .map(|e| {
            (
                e.stats().failures(),
                e.stats().successive_connection_failures(),
            )
        })
        .collect()
}

/// `request` with a header `x-big` of `len` bytes.
fn with_big_header(mut request: Request<Full<Bytes>>, len: usize) -> Request<Full<Bytes>> {
    let value = http::HeaderValue::try_from("v".repeat(len)).unwrap();
    request.headers_mut().insert("x-big", value);
    request
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://svc/x")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Against two real h2 servers with a 4 KiB header list limit: a caller's
/// 20 000-byte header (over the 16 KiB abuse limit) makes each server
/// close its connection with `ENHANCE_YOUR_CALM`; six GETs and six POSTs
/// in one burst each fail after two attempts (the POST too: the stream
/// was never processed), no server runs one. The first request's two
/// attempts count once on each instance (connect failures), the other
/// eleven's are `Declined`: each instance keeps a closed breaker and one
/// failure, and the next four GETs are served two and two. A 10 000-byte
/// header (over the limit, under the abuse limit) gets the server's 431,
/// which is the caller's to read.
#[tokio::test]
async fn a_callers_oversized_header_opens_no_breaker() {
    let (first, served_first) = ok_server_with(true, Some(4096)).await;
    let (second, served_second) = ok_server_with(true, Some(4096)).await;
    let lb = balancer(&[first, second]).await;
    for _ in 0..2 {
        assert_eq!(lb.request(get()).await.unwrap().status(), 200);
    }
    let served = || {
        [
            served_first.load(Ordering::SeqCst),
            served_second.load(Ordering::SeqCst),
        ]
    };
    assert_eq!(served(), [1, 1]);

    for i in 0..12 {
        let request = if i % 2 == 0 { get() } else { post() };
        let err = lb
            .request(with_big_header(request, 20_000))
            .await
            .expect_err("every server declines it");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        let expected = if i == 0 {
            Outcome::ConnectFailure
        } else {
            Outcome::Declined
        };
        assert_eq!(outcomes, [expected, expected], "request {i}: {err:?}");
        if i == 0 {
            continue;
        }
        let text = err.to_string();
        assert!(
            text.contains("(GOAWAY ENHANCE_YOUR_CALM: it refuses this client's traffic, often one request's header list over its limit; counted against the instance at most once a second)"),
            "{text}"
        );
    }
    assert_eq!(served(), [1, 1]);
    assert_eq!(counted(&lb), [(1, 1), (1, 1)]);
    for e in lb.snapshot(SVC).unwrap().endpoints() {
        assert_eq!(e.stats().breaker_state(), BreakerState::Closed, "{e}");
        assert_eq!(e.stats().in_flight(), 0, "{e}");
    }

    let response = lb.request(with_big_header(get(), 10_000)).await.unwrap();
    assert_eq!(response.status(), 431);
    for _ in 0..4 {
        assert_eq!(lb.request(get()).await.unwrap().status(), 200);
    }
    // The 431 went to the first instance (round robin), so the four GETs
    // started at the second; the responses reset the successive counts.
    assert_eq!(served(), [3, 3]);
    assert_eq!(counted(&lb), [(1, 0), (1, 0)]);
}

/// A POST whose stream a scripted server leaves above the last stream id
/// of its `GOAWAY`: with `ENHANCE_YOUR_CALM` it goes on to the healthy
/// instance and counts nothing on the declining one; with
/// `INTERNAL_ERROR` it also goes on, but as a connect failure of the
/// instance (the breaker's count). (`NO_ERROR`, a graceful GOAWAY, is a
/// connection's end, not a connect failure: `h2_refused_stream.rs`.)
#[tokio::test]
async fn only_enhance_your_calm_is_not_the_instances() {
    // NO_ERROR, a graceful GOAWAY, is a connection's end, counted as no
    // connect failure (`h2_refused_stream.rs`).
    for (reason, outcome) in [(11, Outcome::Declined), (2, Outcome::ConnectFailure)] {
        let (declining, got) = goaway_server::goaway_server(0, reason, true).await;
        let (healthy, served) = ok_server(true).await;
        let lb = balancer(&[declining, healthy]).await;
        // The first declined attempt of an instance counts: a GET is
        // declined first (and served by the other), so that the POST's is
        // the second in the same second. Round robin then sends the next
        // POST to the healthy instance, the one after to the declining.
        let declines = usize::from(reason == 11);
        if declines == 1 {
            assert_eq!(lb.request(get()).await.unwrap().status(), 200);
            assert_eq!(counted(&lb), [(1, 1), (0, 0)]);
        }
        for _ in 0..=declines {
            let response = lb.request(post()).await.unwrap();
            assert_eq!(response.status(), 200, "reason {reason}");
        }
        assert_eq!(
            (got.load(Ordering::SeqCst), served.load(Ordering::SeqCst)),
            (1 + declines, 1 + 2 * declines),
            "reason {reason}"
        );
        let once = u64::from(outcome.counts_against_instance()) + declines as u64;
        assert_eq!(
            counted(&lb),
            [(once, once as u32), (0, 0)],
            "reason {reason}"
        );
    }
}

/// A server that declines every stream (a `GOAWAY(ENHANCE_YOUR_CALM)`
/// naming no stream processed): its first declined attempt in each window
/// (50 ms here, 1 s by default) counts, so three windows of it with no
/// response between open its breaker.
/// Before this bound, `Declined` never counting would have kept such a
/// server in rotation for ever, each request to it costing a retry.
#[tokio::test]
async fn a_server_declining_everything_still_trips_its_breaker() {
    let (declining, got) = goaway_server::goaway_server(0, 11, true).await;
    let every = Duration::from_millis(50);
    let lb = balancer_with(&[declining], RetryPolicy::none(), every).await;
    for window in 1..=3u32 {
        let err = lb.request(get()).await.unwrap_err();
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [Outcome::ConnectFailure], "window {window}");
        assert_eq!(counted(&lb), [(u64::from(window), window)]);
        tokio::time::sleep(every).await;
    }
    assert_eq!(got.load(Ordering::SeqCst), 3);
    let snapshot = lb.snapshot(SVC).unwrap();
    let state = snapshot.endpoints()[0].stats().breaker_state();
    assert!(matches!(state, BreakerState::Open { .. }), "{state:?}");
}
