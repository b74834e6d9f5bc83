//! A gRPC call's deadline (`grpc-timeout`) and the server's answers to it,
//! through `grpc::balance` over scripted HTTP/2 servers on 127.0.0.1
//! (helper 190):
//!
//! - a retry is decided by the call's deadline too: a pushback past it
//!   returns the server's UNAVAILABLE at once (before, the call slept
//!   until its deadline and ended in DEADLINE_EXCEEDED, the server's
//!   status lost);
//! - a server's DEADLINE_EXCEEDED, trailers-only or after messages, about
//!   when the deadline its call sent runs out is the caller's deadline
//!   running out there, as the deadline running out at the client is: not
//!   the instance's failure, not retried (before: a failure, ejected, and
//!   each call sent twice); well before the deadline (helper 191: at once,
//!   with 30 s left), or without a deadline sent, it is still the
//!   server's failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::grpc::{self, GrpcBalancer, GrpcRetryLayer, H2cClient};
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};

const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";
const SERVICE: &str = "my-grpc-service";

/// How the scripted server answers every stream.
#[derive(Clone, Copy)]
enum Answer {
    /// HTTP 200 with these headers and END_STREAM (a trailers-only
    /// response).
    TrailersOnly(&'static [(&'static str, &'static str)]),
    /// As `TrailersOnly`, 20 ms before the deadline the call sent runs
    /// out (as a server passing it on to a slower call of its own).
    AtDeadline(&'static [(&'static str, &'static str)]),
    /// One `HealthCheckResponse { status: SERVING }`, then trailers with
    /// this `grpc-status`, at once or (`true`) 20 ms before the deadline.
    MessageThen(&'static str, bool),
}

/// 20 ms less than the `grpc-timeout` in `headers` (in microseconds, as
/// the balancer writes it), or nothing.
fn before_deadline(headers: &http::HeaderMap) -> Duration {
    let value = headers.get("grpc-timeout").and_then(|v| v.to_str().ok());
    let micros = value
        .and_then(|v| v.strip_suffix('u'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_micros(micros).saturating_sub(Duration::from_millis(20))
}

/// An h2c server answering every stream as `answer` says; counts streams.
async fn server(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let wait = before_deadline(req.headers());
                    // Each stream on its own task (the connection keeps
                    // accepting while one waits).
                    tokio::spawn(async move {
                        let mut head = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc");
                        match answer {
                            Answer::TrailersOnly(headers) | Answer::AtDeadline(headers) => {
                                if matches!(answer, Answer::AtDeadline(_)) {
                                    tokio::time::sleep(wait).await;
                                }
                                for (name, value) in headers {
                                    head = head.header(*name, *value);
                                }
                                let _ = respond.send_response(head.body(()).unwrap(), true);
                            }
                            Answer::MessageThen(status, late) => {
                                let Ok(mut send) =
                                    respond.send_response(head.body(()).unwrap(), false)
                                else {
                                    return;
                                };
                                // A length-prefixed message: field 1 (status) = 1.
                                let message = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]);
                                let _ = send.send_data(message, false);
                                if late {
                                    tokio::time::sleep(wait).await;
                                }
                                let mut trailers = http::HeaderMap::new();
                                trailers.insert("grpc-status", status.parse().unwrap());
                                let _ = send.send_trailers(trailers);
                            }
                        }
                    });
                }
            });
        }
    });
    (addr, streams)
}

type Client = HealthClient<GrpcBalancer<H2cClient>>;

/// A balancer over `addrs` in order (round robin from the first), methods
/// `Check` and `Watch` opted in to retries, one retry on the next
/// instance, no budget.
fn client(addrs: &[SocketAddr]) -> (Client, GrpcBalancer<H2cClient>) {
    let list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let builder = LoadBalancer::builder()
        .source(StaticSource::new().with_list(SERVICE, &list).unwrap())
        .service(SERVICE)
        .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
        .retry(
            RetryPolicy::default()
                .max_next(1)
                .budget(RetryBudgetConfig::unlimited()),
        );
    let channel = grpc::balance(
        builder,
        grpc::h2c_client(),
        GrpcRetryLayer::new().method(CHECK).method(WATCH),
    )
    .unwrap();
    let client = HealthClient::with_origin(
        channel.clone(),
        http::Uri::from_static("http://my-grpc-service"),
    );
    (client, channel)
}

fn call(deadline: Option<Duration>) -> tonic::Request<HealthCheckRequest> {
    let mut call = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(deadline) = deadline {
        call.set_timeout(deadline);
    }
    call
}

/// The failures counted for the instance at `addr`.
fn failures(channel: &GrpcBalancer<H2cClient>, addr: SocketAddr) -> u64 {
    let snapshot = channel.get_ref().snapshot(SERVICE).unwrap();
    snapshot
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == addr.port())
        .map(|e| e.stats().failures())
        .unwrap()
}

/// A retryable UNAVAILABLE whose pushback (2 s) is past the call's
/// deadline (300 ms): no retry fits, so the caller gets UNAVAILABLE at
/// once. Before, the balancer decided by its policy's deadline only (none)
/// and slept for the pushback until `GrpcRetry` ended the call at its
/// deadline: DEADLINE_EXCEEDED, the server's status lost.
#[tokio::test]
async fn a_pushback_past_the_calls_deadline_returns_the_servers_status() {
    let (first, first_streams) = server(Answer::TrailersOnly(&[
        ("grpc-status", "14"),
        ("grpc-retry-pushback-ms", "2000"),
    ]))
    .await;
    let (second, second_streams) = server(Answer::TrailersOnly(&[("grpc-status", "0")])).await;
    let (client, _) = client(&[first, second]);
    let status = client
        .clone()
        .check(call(Some(Duration::from_millis(300))))
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        (
            first_streams.load(Ordering::SeqCst),
            second_streams.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
}

/// A trailers-only DEADLINE_EXCEEDED about when the deadline a call sent
/// runs out (20 ms before a 300 ms one, as a server passing the deadline
/// on to a slower call of its own): the caller's deadline, at the server.
/// Each call is sent once and the instance counts no failure. (Should the
/// answer come after the client's own deadline on a loaded host, the
/// client ends the call, which counts no failure either.)
#[tokio::test]
async fn a_servers_deadline_exceeded_at_the_callers_deadline_is_not_its_failure() {
    let (addr, streams) = server(Answer::AtDeadline(&[("grpc-status", "4")])).await;
    let (client, channel) = client(&[addr]);
    for _ in 0..5 {
        let status = client
            .clone()
            .check(call(Some(Duration::from_millis(300))))
            .await
            .expect_err("DEADLINE_EXCEEDED");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    assert_eq!(streams.load(Ordering::SeqCst), 5, "none retried");
    assert_eq!(failures(&channel, addr), 0);
}

/// A DEADLINE_EXCEEDED answered at once to a call with 30 s left, or to
/// a call that sent no deadline, is the server's own failure (a 504):
/// counted and retried. Helper 191: with any deadline sent excusing it,
/// an instance answering so to every call was never ejected.
#[tokio::test]
async fn a_deadline_exceeded_well_before_the_deadline_is_the_servers_failure() {
    let (addr, streams) = server(Answer::TrailersOnly(&[("grpc-status", "4")])).await;
    let (client, channel) = client(&[addr]);
    for (deadline, sent, failed) in [(Some(Duration::from_secs(30)), 2, 2), (None, 4, 4)] {
        let status = client.clone().check(call(deadline)).await.expect_err("504");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(streams.load(Ordering::SeqCst), sent, "retried once");
        assert_eq!(failures(&channel, addr), failed);
    }
}

/// A server stream ending with DEADLINE_EXCEEDED in its trailers after a
/// message: about when the deadline the call sent runs out, not the
/// instance's failure; at once with 30 s left, or with no deadline sent,
/// its failure (as UNAVAILABLE there would be).
#[tokio::test]
async fn a_stream_ending_at_the_callers_deadline_is_not_its_instances_failure() {
    for (late, deadline, failed) in [
        (true, Some(Duration::from_millis(300)), 0),
        (false, Some(Duration::from_secs(30)), 1),
        (false, None, 1),
    ] {
        let (addr, streams) = server(Answer::MessageThen("4", late)).await;
        let (client, channel) = client(&[addr]);
        let mut stream = client
            .clone()
            .watch(call(deadline))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.status, 1);
        let status = stream.message().await.expect_err("DEADLINE_EXCEEDED");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        drop(stream);
        assert_eq!(failures(&channel, addr), failed, "{late} {deadline:?}");
        assert_eq!(
            streams.load(Ordering::SeqCst),
            1,
            "streams are never retried"
        );
    }
}
