//! HTTP/2 settings and shutdowns under open streams, against a scripted
//! frame-level server (`common/raw_h2.rs`) and hyper-util's h2c client: a
//! SETTINGS frame lowering `SETTINGS_MAX_CONCURRENT_STREAMS` while a
//! response streams, so that the next requests queue in the client, then
//! a graceful GOAWAY (NO_ERROR) with a last stream id below requests that
//! are open or queued. What is checked: which requests go to the other
//! instance (a GET; no POST: a graceful GOAWAY's error does not prove a
//! stream unprocessed),
//! the in-flight counts (a queued request is load on its instance until
//! it ends), and what each instance is charged.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::stats::Outcome;

// Its `balancer` is for two instances with the default policy.
#[allow(dead_code)]
#[path = "common/never_reached.rs"]
mod never_reached;
#[path = "common/raw_h2.rs"]
mod raw_h2;
use never_reached::{SVC, ok_server, post, round_robin};
use raw_h2::{Conn, Event, data, goaway, headers, reset, response_head};

type Lb = LoadBalancer<tower_ribbon::service::HttpClient<Full<Bytes>>>;

/// Round robin from the scripted server (`first`) over it and `second`,
/// through hyper-util's h2c client, with `policy`.
async fn balancer(ports: &[u16], policy: RetryPolicy) -> Lb {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    round_robin(ports, client, |b| b.retry(policy)).await
}

fn get() -> http::Request<Full<Bytes>> {
    http::Request::get("http://svc/")
        .body(Full::default())
        .unwrap()
}

/// `[requests, failures, successive connection failures, in flight]` of
/// the instance on `port`.
fn counts(lb: &Lb, port: u16) -> [u64; 4] {
    let snapshot = lb.snapshot(SVC).unwrap();
    let endpoint = snapshot
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == port)
        .expect("listed");
    let stats = endpoint.stats();
    [
        stats.requests(),
        stats.failures(),
        u64::from(stats.successive_connection_failures()),
        stats.in_flight() as u64,
    ]
}

/// Waits until the instance on `port` has `n` attempts in flight, then
/// gives hyper's connection tasks a moment to queue them.
async fn until_in_flight(lb: &Lb, port: u16, n: u64) {
    for _ in 0..500 {
        if counts(lb, port)[3] == n {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{n} in flight on {port}: {:?}", counts(lb, port));
}

/// Opens a request to the scripted server whose response headers arrive
/// and whose body stays open: the stream the later requests queue behind.
/// Returns the held response and its stream id.
async fn held_stream(
    lb: &Lb,
    conn: &mut Option<Conn>,
    conns: &mut tokio::sync::mpsc::UnboundedReceiver<Conn>,
) -> (
    http::Response<tower_ribbon::service::TrackedBody<hyper::body::Incoming>>,
    u32,
) {
    let response = tokio::spawn(lb.clone().oneshot(get()));
    if conn.is_none() {
        *conn = conns.recv().await;
    }
    let conn = conn.as_mut().expect("a connection");
    let stream = conn.next_request().await;
    conn.send(headers(stream, &response_head(200, &[]), false));
    let response = response.await.unwrap().expect("headers");
    (response, stream)
}

/// A request queued in the client at the server's stream limit when the
/// server goes away (GOAWAY NO_ERROR naming the held stream as the last)
/// never left the client: hyper's HTTP/2 client drops it with its
/// `DispatchGone` error, whose cause made it read as the caller's own
/// failed request body (`RequestError`): counted in no stats, retried for
/// no method. Now it is the instance's failure (`OtherError`): a GET goes
/// to the other instance and is answered (before: failed with
/// `[RequestError]`, 0 failures on the instance); a POST fails once,
/// counted on the instance, and is not sent again (hyper's error does not
/// say the request was unsent, and the same error also ends requests that
/// were sent when hyper's connection task is dropped). The held stream
/// completes on the going-away connection.
///
/// The peers' reports of this case: gRPC Java fails such a call with
/// "UNAVAILABLE: GOAWAY closed buffered stream" and retries it, never
/// sent ([grpc-java#8208](https://github.com/grpc/grpc-java/issues/8208),
/// [grpc-java#10533](https://github.com/grpc/grpc-java/issues/10533));
/// hyper dropping requests at a GOAWAY:
/// [hyper#2500](https://github.com/hyperium/hyper/issues/2500).
#[tokio::test]
async fn a_request_queued_at_the_stream_limit_when_the_server_goes_away() {
    for method in [http::Method::GET, http::Method::POST] {
        let (scripted, mut conns) = raw_h2::listen(None).await;
        let (healthy, served) = ok_server(true).await;
        let lb = balancer(&[scripted, healthy], RetryPolicy::default()).await;
        let mut conn = None;
        let (held, first) = held_stream(&lb, &mut conn, &mut conns).await;
        let mut conn = conn.unwrap();
        conn.limit_streams(1).await;
        // Round robin: this one to the healthy instance, the next to the
        // scripted one, where it queues behind the held stream.
        lb.clone().oneshot(get()).await.expect("healthy");
        let mut request = post();
        *request.method_mut() = method.clone();
        let queued = tokio::spawn(lb.clone().oneshot(request));
        until_in_flight(&lb, scripted, 2).await;
        assert_eq!(conn.drain(), [], "{method}: queued in the client");
        conn.send(goaway(first, 0));
        let result = queued.await.unwrap();
        let case = format!("{method}");
        if method == http::Method::GET {
            let response = result.unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert_eq!(response.status(), 200, "{case}");
            assert_eq!(
                served.load(Ordering::SeqCst),
                2,
                "{case}: retried elsewhere"
            );
        } else {
            let err = result.expect_err("not sent again");
            let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
            assert_eq!(outcomes, [Outcome::OtherError], "{case}: {err:?}");
            assert_eq!(served.load(Ordering::SeqCst), 1, "{case}: not retried");
        }
        // One failure on the instance; the held stream still in flight.
        assert_eq!(counts(&lb, scripted), [2, 1, 0, 1], "{case}");
        assert!(
            !conn
                .drain()
                .iter()
                .any(|e| matches!(e, Event::Headers { .. })),
            "{case}: the server never saw the queued request"
        );
        conn.send(data(first, b"end", true));
        let body = held.into_body().collect().await.expect("held stream");
        assert_eq!(body.to_bytes(), "end", "{case}");
        assert_eq!(counts(&lb, scripted), [2, 1, 0, 0], "{case}");
    }
}

/// The same through tonic (`grpc::balance` over `grpc::h2c_client`): a
/// unary call queued behind an open server stream when the server goes
/// away is UNAVAILABLE, as gRPC reports a transport failure (gRPC Java's
/// "GOAWAY closed buffered stream",
/// [grpc-java#8208](https://github.com/grpc/grpc-java/issues/8208)); it
/// was INTERNAL (the status of the caller's own request body failing,
/// which gRPC clients do not retry).
#[cfg(feature = "grpc")]
#[tokio::test]
async fn a_grpc_call_queued_at_the_stream_limit_when_the_server_goes_away_is_unavailable() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tower_ribbon::grpc::{self, GrpcRetryLayer};

    let (scripted, mut conns) = raw_h2::listen(None).await;
    let source = StaticSource::new()
        .with_list("grpc-svc", &format!("127.0.0.1:{scripted}"))
        .unwrap();
    let channel = grpc::balance(
        LoadBalancer::builder().source(source).service("grpc-svc"),
        grpc::h2c_client(),
        GrpcRetryLayer::new(),
    )
    .unwrap();
    let origin: http::Uri = "http://grpc-svc".parse().unwrap();
    let mut client = HealthClient::with_origin(channel, origin);
    // A server stream (Watch) whose headers arrived: it holds the slot.
    let watch = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            client.watch(request).await
        })
    };
    let mut conn = conns.recv().await.unwrap();
    let first = conn.next_request().await;
    let grpc_head = response_head(200, &[("content-type", "application/grpc")]);
    conn.send(headers(first, &grpc_head, false));
    let _stream = watch.await.unwrap().expect("watch headers");
    conn.limit_streams(1).await;
    let check = tokio::spawn(async move {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        client.check(request).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conn.drain(), [], "queued in the client");
    conn.send(goaway(first, 0));
    let status = check.await.unwrap().expect_err("the server went away");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

/// Under a graceful GOAWAY (NO_ERROR) whose last stream id is below open
/// streams, with every request read whole by the server: the POST above
/// the last id fails with the GOAWAY's error, which hyper's client also
/// gives to a stream it had just sent and a draining server runs (see
/// `h2_graceful_drain.rs`), so it is not sent again (before: sent to the
/// other instance, as unprocessed, though this server had read it whole);
/// the streams at or below it go on and end on the going-away connection:
/// one answered, one reset (CANCEL) after the server read its POST, which
/// is not sent again either. Each result is counted once: the going-away
/// instance has 3 requests, 2 failures (the POST above the last id, the
/// connection's end counted once; the reset POST), nothing in flight.
#[tokio::test]
async fn a_graceful_goaway_below_open_streams() {
    let (scripted, mut conns) = raw_h2::listen(None).await;
    let (healthy, served) = ok_server(true).await;
    let lb = balancer(&[scripted, healthy], RetryPolicy::default()).await;
    // Round robin: the scripted instance takes the 1st, 3rd and 5th.
    let mut to_scripted = Vec::new();
    for (n, request) in [get(), post(), post()].into_iter().enumerate() {
        if n > 0 {
            lb.clone().oneshot(get()).await.expect("healthy");
        }
        to_scripted.push(tokio::spawn(lb.clone().oneshot(request)));
        until_in_flight(&lb, scripted, n as u64 + 1).await;
    }
    let [answered, processed, above] = <[_; 3]>::try_from(to_scripted).ok().unwrap();
    let mut conn = conns.recv().await.unwrap();
    // Wait until the server has read both POSTs whole.
    let mut ended = Vec::new();
    while ended.len() < 3 {
        match conn.next().await {
            Event::Headers { stream, end: true }
            | Event::Data {
                stream, end: true, ..
            } => {
                ended.push(stream);
            }
            _ => {}
        }
    }
    ended.sort_unstable();
    assert_eq!(ended, [1, 3, 5]);
    conn.send(goaway(3, 0));
    let err = above.await.unwrap().expect_err("not sent again");
    let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::OtherError], "{err:?}");
    assert_eq!(served.load(Ordering::SeqCst), 2);
    conn.send(headers(1, &response_head(200, &[]), true));
    conn.send(reset(3, 8));
    let answered = answered.await.unwrap().expect("answered");
    assert_eq!(answered.status(), 200);
    let err = processed
        .await
        .unwrap()
        .expect_err("reset after processing");
    let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::OtherError], "{err:?}");
    assert_eq!(served.load(Ordering::SeqCst), 2, "not sent again");
    drop(answered);
    let [requests, failures, _, in_flight] = counts(&lb, scripted);
    assert_eq!([requests, failures, in_flight], [3, 2, 0]);
}

/// Requests beyond a stream limit the server lowered to 1 wait in the
/// client: each counts in flight on its instance from its send (so
/// least-loaded rules see the queue), is sent once the held stream ends,
/// one at a time, and leaves the count when answered. Every count ends at
/// 0, every request reached the server once.
#[tokio::test]
async fn requests_queued_at_the_stream_limit_are_load_until_answered() {
    let (scripted, mut conns) = raw_h2::listen(None).await;
    let lb = balancer(&[scripted], RetryPolicy::none()).await;
    let mut conn = None;
    let (held, first) = held_stream(&lb, &mut conn, &mut conns).await;
    let mut conn = conn.unwrap();
    conn.limit_streams(1).await;
    let queued: Vec<_> = (0..3)
        .map(|_| tokio::spawn(lb.clone().oneshot(get())))
        .collect();
    until_in_flight(&lb, scripted, 4).await;
    assert_eq!(conn.drain(), [], "queued in the client");
    drop(held);
    let mut seen = vec![first];
    for _ in 0..3 {
        let stream = conn.next_request().await;
        seen.push(stream);
        conn.send(headers(stream, &response_head(200, &[]), true));
    }
    for response in queued {
        let response = response.await.unwrap().expect("answered");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(seen, [1, 3, 5, 7]);
    assert_eq!(counts(&lb, scripted), [4, 0, 0, 0]);
}

/// A POST queued at a stream limit of 0 outlives its per-try timeout: the
/// caller gets a read timeout and the POST is not sent to the other
/// instance, because the client may still send it: hyper's HTTP/2 client
/// opens a queued stream once the server allows one, whether or not its
/// caller still waits (then resets it with CANCEL). The instance is
/// charged the timeout (a connection-class failure, as any per-try
/// timeout); it leaves the in-flight count at once.
#[tokio::test]
async fn a_post_queued_past_its_per_try_timeout_is_not_sent_elsewhere() {
    let (scripted, mut conns) = raw_h2::listen(None).await;
    let (healthy, served) = ok_server(true).await;
    let per_try = Duration::from_millis(300);
    let policy = RetryPolicy::default().per_try_timeout(per_try);
    let lb = balancer(&[scripted, healthy], policy).await;
    let mut conn = None;
    let (held, first) = held_stream(&lb, &mut conn, &mut conns).await;
    let mut conn = conn.unwrap();
    conn.limit_streams(0).await;
    lb.clone().oneshot(get()).await.expect("healthy");
    let started = tokio::time::Instant::now();
    let err = lb.clone().oneshot(post()).await.expect_err("timed out");
    assert!(started.elapsed() >= per_try);
    let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::ReadTimeout], "{err:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1, "not sent elsewhere");
    assert_eq!(counts(&lb, scripted), [2, 1, 1, 1]);
    // Once the server allows a stream, what the client does with the
    // abandoned POST is hyper's; the balancer never sends it twice.
    conn.limit_streams(1).await;
    conn.send(data(first, b"end", true));
    assert_eq!(held.into_body().collect().await.unwrap().to_bytes(), "end");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let opened = conn
        .drain()
        .iter()
        .filter(|e| matches!(e, Event::Headers { .. }))
        .count();
    assert!(opened <= 1, "the abandoned POST opened {opened} streams");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert_eq!(counts(&lb, scripted)[3], 0);
}
