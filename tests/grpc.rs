//! tonic calls balanced over three real tonic servers on 127.0.0.1:
//! unary and server-streaming calls, a server answering UNAVAILABLE
//! (retried when opted in, and ejected), a server dying mid-test.

#[path = "support/grpc.rs"]
mod grpc_support;
#[cfg(feature = "tls")]
#[path = "support/tls.rs"]
mod tls_support;

use std::collections::BTreeMap;
use std::future::Future;

use grpc_support::{GrpcBackend, WATCH};
use tokio::task::JoinSet;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::grpc::{self, GrpcBalancer, GrpcRetryLayer, H2cClient};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};

type Client = HealthClient<GrpcBalancer<H2cClient>>;

const CHECK: &str = "/grpc.health.v1.Health/Check";

async fn three() -> [GrpcBackend; 3] {
    [
        GrpcBackend::start("a").await.expect("a"),
        GrpcBackend::start("b").await.expect("b"),
        GrpcBackend::start("c").await.expect("c"),
    ]
}

fn client(backends: &[GrpcBackend], retry: GrpcRetryLayer, outliers: OutlierDetection) -> Client {
    HealthClient::with_origin(
        channel(backends, retry, outliers),
        http::Uri::from_static("http://my-grpc-service"),
    )
}

fn channel(
    backends: &[GrpcBackend],
    retry: GrpcRetryLayer,
    outliers: OutlierDetection,
) -> GrpcBalancer<H2cClient> {
    let list = backends
        .iter()
        .map(|b| b.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let source = StaticSource::new()
        .with_list("my-grpc-service", &list)
        .expect("list");
    let builder = LoadBalancer::builder()
        .source(source)
        .service("my-grpc-service")
        .retry(RetryPolicy::default().budget(RetryBudgetConfig::unlimited()))
        .outlier_detection(outliers);
    grpc::balance(builder, grpc::h2c_client(), retry).expect("balancer")
}

fn request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

/// Which backend answered (`x-backend`), or the error's code and message.
async fn check(client: &Client) -> Result<String, (Code, String)> {
    match client.clone().check(request()).await {
        Ok(response) => {
            assert_eq!(response.get_ref().status, ServingStatus::Serving as i32);
            Ok(response
                .metadata()
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned())
        }
        Err(status) => Err((status.code(), status.message().to_owned())),
    }
}

fn counts<'a>(
    results: impl IntoIterator<Item = &'a Result<String, (Code, String)>>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in results {
        let key = match r {
            Ok(name) => name.clone(),
            Err((code, message)) => format!("error {code:?}: {message}"),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn split(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn unary_and_server_streaming_calls_are_balanced() {
    let backends = three().await;
    let client = client(
        &backends,
        GrpcRetryLayer::new(),
        OutlierDetection::default(),
    );

    // 30 unary calls, 10 concurrent at a time: 10 per server.
    let mut results = Vec::new();
    for _ in 0..3 {
        let mut wave = JoinSet::new();
        for _ in 0..10 {
            let client = client.clone();
            wave.spawn(async move { check(&client).await });
        }
        while let Some(r) = wave.join_next().await {
            results.push(r.expect("task"));
        }
    }
    assert_eq!(counts(&results), split(&[("a", 10), ("b", 10), ("c", 10)]));

    // 6 server-streaming calls: each streams the three statuses; 2 per server.
    let mut by_backend = BTreeMap::new();
    for _ in 0..6 {
        let response = client.clone().watch(request()).await.expect("watch");
        let name = response
            .metadata()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        let mut stream = response.into_inner();
        let mut got = Vec::new();
        while let Some(message) = stream.message().await.expect("stream message") {
            got.push(message.status);
        }
        assert_eq!(got, WATCH.map(|s| s as i32).to_vec());
        *by_backend.entry(name).or_insert(0) += 1;
    }
    assert_eq!(by_backend, split(&[("a", 2), ("b", 2), ("c", 2)]));

    let checks: Vec<usize> = backends.iter().map(GrpcBackend::checks).collect();
    let watches: Vec<usize> = backends.iter().map(GrpcBackend::watches).collect();
    assert_eq!((checks, watches), (vec![10, 10, 10], vec![2, 2, 2]));
    // Every call to a server went over its one HTTP/2 connection.
    let connections: Vec<usize> = backends.iter().map(GrpcBackend::connections).collect();
    assert_eq!(connections, vec![1, 1, 1]);
}

#[tokio::test]
async fn unavailable_without_opt_in_is_returned_not_retried() {
    let backends = three().await;
    backends[1].set_unavailable(true);
    let client = client(
        &backends,
        GrpcRetryLayer::new(),
        OutlierDetection::disabled(),
    );

    let mut results = Vec::new();
    for _ in 0..6 {
        results.push(check(&client).await);
    }
    // A gRPC call is a POST: not idempotent, so the balancer returns b's
    // UNAVAILABLE, with b's own message, after one attempt.
    assert_eq!(
        counts(&results),
        split(&[
            ("a", 2),
            ("c", 2),
            ("error Unavailable: b is unavailable", 2)
        ])
    );
    let checks: Vec<usize> = backends.iter().map(GrpcBackend::checks).collect();
    assert_eq!(checks, vec![2, 2, 2]);
}

#[tokio::test]
async fn unavailable_is_retried_when_opted_in_and_ejected() {
    let backends = three().await;
    backends[1].set_unavailable(true);
    let client = client(
        &backends,
        GrpcRetryLayer::new().method(CHECK),
        OutlierDetection::default(),
    );

    let mut results = Vec::new();
    for _ in 0..30 {
        results.push(check(&client).await);
    }
    // Every call succeeds: UNAVAILABLE (HTTP 503 to the balancer) is
    // retried on another instance.
    assert!(results.iter().all(Result::is_ok), "{:?}", counts(&results));
    // Five consecutive failures eject b (outlier detection's default); it
    // saw five calls and no more.
    assert_eq!(backends[1].checks(), 5);

    // Later calls avoid b altogether.
    for _ in 0..30 {
        results.push(check(&client).await);
    }
    assert!(results.iter().all(Result::is_ok), "{:?}", counts(&results));
    assert_eq!(backends[1].checks(), 5);
    assert_eq!(backends[0].checks() + backends[2].checks(), 60);
    let served = counts(&results);
    assert_eq!(served.get("b"), None);
    assert_eq!(served.values().sum::<usize>(), 60);
}

#[tokio::test]
async fn a_server_dying_fails_no_opted_in_call() {
    let backends = three().await;
    let client = client(
        &backends,
        GrpcRetryLayer::new().service("grpc.health.v1.Health"),
        OutlierDetection::default(),
    );
    let [a, b, mut c] = backends;

    // c dies abruptly (every connection dropped) while calls are in
    // flight, once it has served ten.
    let killer = tokio::spawn(async move {
        while c.checks() < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        c.kill().await;
        c
    });
    let mut workers = JoinSet::new();
    for _ in 0..4 {
        let client = client.clone();
        workers.spawn(async move {
            let mut results = Vec::new();
            for _ in 0..30 {
                results.push(check(&client).await);
            }
            results
        });
    }
    let mut results = Vec::new();
    while let Some(r) = workers.join_next().await {
        results.extend(r.expect("worker"));
    }
    let c = killer.await.expect("killer");
    assert_eq!(results.len(), 120);
    assert!(results.iter().all(Result::is_ok), "{:?}", counts(&results));
    // c's answers stop at its death; a and b answered the rest.
    let served = counts(&results);
    let by_c = served.get("c").copied().unwrap_or(0);
    assert!(
        (10..=c.checks()).contains(&by_c),
        "c answered {by_c} of {}",
        c.checks()
    );
    assert_eq!(served.values().sum::<usize>(), 120);
    assert!(a.checks() + b.checks() >= 120 - by_c);
}

#[tokio::test]
async fn a_server_dying_is_seen_by_calls_not_opted_in_only_as_connect_retries() {
    // Without opt-in, calls after the death still succeed: the connection
    // to the dead server is refused, and a refused connection is retried
    // for any method (the call never left).
    let mut backends = three().await;
    let client = client(
        &backends,
        GrpcRetryLayer::new(),
        OutlierDetection::default(),
    );
    for _ in 0..6 {
        check(&client).await.expect("before");
    }
    backends[2].kill().await;
    // Let the client notice the closed connection.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut results = Vec::new();
    for _ in 0..12 {
        results.push(check(&client).await);
    }
    assert!(results.iter().all(Result::is_ok), "{:?}", counts(&results));
    let served = counts(&results);
    assert_eq!(served.get("c"), None);
    assert_eq!(
        served.get("a").copied().unwrap_or(0) + served.get("b").copied().unwrap_or(0),
        12
    );
}

#[tokio::test]
async fn all_servers_gone_is_unavailable_naming_the_service() {
    let mut backends = three().await;
    let client = client(
        &backends,
        GrpcRetryLayer::new(),
        OutlierDetection::default(),
    );
    for b in &mut backends {
        b.kill().await;
    }
    let result = check(&client).await;
    let Err((code, message)) = result else {
        panic!("must fail: {result:?}");
    };
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(message.contains("my-grpc-service"), "{message}");
}

/// gRPC over TLS: h2 by ALPN to secure instances, through the same
/// balancer, with `tls::HttpsClient` as the inner client.
#[cfg(feature = "tls")]
#[tokio::test]
async fn grpc_over_tls_to_secure_instances() {
    use std::sync::Arc;

    use tower_ribbon::Instance;
    use tower_ribbon::grpc::GrpcBody;
    use tower_ribbon::tls::HttpsClient;

    let pki = tls_support::pki();
    let acceptor = || {
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            tls_support::server_config(&pki, vec![b"h2".to_vec()], false),
        )))
    };
    let backends = [
        GrpcBackend::start_with("a", acceptor()).await.expect("a"),
        GrpcBackend::start_with("b", acceptor()).await.expect("b"),
        GrpcBackend::start_with("c", acceptor()).await.expect("c"),
    ];
    let instances = backends
        .iter()
        .map(|b| {
            Instance::new("my-grpc-service", "127.0.0.1", b.port())
                .expect("instance")
                .with_secure(true)
        })
        .collect();
    let source = StaticSource::new().with_instances("my-grpc-service", instances);
    let https = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .expect("ca")
        .http2_only(true)
        .build::<GrpcBody>()
        .expect("client");
    let channel = grpc::balance(
        LoadBalancer::builder()
            .source(source)
            .service("my-grpc-service"),
        https,
        GrpcRetryLayer::new(),
    )
    .expect("balancer");
    let client =
        HealthClient::with_origin(channel, http::Uri::from_static("http://my-grpc-service"));
    let mut results = Vec::new();
    for _ in 0..9 {
        results.push(client.clone().check(request()).await.map(|r| {
            r.metadata()
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned()
        }));
    }
    let served = counts(
        &results
            .into_iter()
            .map(|r| r.map_err(|s| (s.code(), s.message().to_owned())))
            .collect::<Vec<_>>(),
    );
    assert_eq!(served, split(&[("a", 3), ("b", 3), ("c", 3)]));
    let connections: Vec<usize> = backends.iter().map(GrpcBackend::connections).collect();
    assert_eq!(connections, vec![1, 1, 1]);
}

/// An opted-in call whose request is larger than `max_buffer` is sent
/// once, unbuffered, as a call not opted in (gRPC's retry buffer and
/// Envoy's commit such a call and send it without retries): opting a
/// method in never fails a call that would succeed without. Before, the
/// call failed with RESOURCE_EXHAUSTED and reached no backend (0 of 3
/// calls served); now 3 of 3. Past the bound it is not retried on
/// UNAVAILABLE (1 check for one call), within it it is (2).
#[tokio::test]
async fn a_request_over_max_buffer_is_sent_once_unbuffered() {
    let backends = three().await;
    // Every request is longer than 4 bytes (its 5-byte gRPC frame header).
    let small = client(
        &backends,
        GrpcRetryLayer::new().method(CHECK).max_buffer(4),
        OutlierDetection::disabled(),
    );
    for _ in 0..3 {
        let served = check(&small).await;
        assert!(served.is_ok(), "{served:?}");
    }
    let checks: Vec<usize> = backends.iter().map(GrpcBackend::checks).collect();
    assert_eq!(checks.iter().sum::<usize>(), 3, "{checks:?}");
    // Every backend UNAVAILABLE: the call past the bound is not retried,
    // one within it is (the default policy: one more instance).
    for b in &backends {
        b.set_unavailable(true);
    }
    let (code, message) = check(&small).await.expect_err("unavailable");
    assert_eq!(code, Code::Unavailable, "{message}");
    let after: usize = backends.iter().map(GrpcBackend::checks).sum();
    assert_eq!(after, 4);
    let within = client(
        &backends,
        GrpcRetryLayer::new().method(CHECK),
        OutlierDetection::disabled(),
    );
    let (code, message) = check(&within).await.expect_err("unavailable");
    assert_eq!(code, Code::Unavailable, "{message}");
    let after: usize = backends.iter().map(GrpcBackend::checks).sum();
    assert_eq!(after, 6);
}

/// A `Check` call whose request stream fails with the caller's own status
/// once its headers are out (a gateway's downstream client leaving, a
/// producer task failing).
fn broken_call(authority: &str) -> http::Request<tonic::body::Body> {
    let body = FailsLater(Box::pin(tokio::time::sleep(
        std::time::Duration::from_millis(50),
    )));
    http::Request::post(format!("http://{authority}{CHECK}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
        .expect("request")
}

/// A request body that fails with DATA_LOSS "caller gave up" after a wait.
struct FailsLater(std::pin::Pin<Box<tokio::time::Sleep>>);

impl http_body::Body for FailsLater {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        self.0
            .as_mut()
            .poll(cx)
            .map(|()| Some(Err(tonic::Status::data_loss("caller gave up"))))
    }
}

/// A call whose own request stream fails is INTERNAL, as through tonic's
/// `Channel` (hyper resets the stream with INTERNAL_ERROR), not
/// UNAVAILABLE: that code tells gRPC clients and gateways to retry a call
/// that fails the same everywhere. No backend handles a call.
#[tokio::test]
async fn a_callers_broken_request_stream_reports_the_callers_status() {
    use tower::{Service, ServiceExt};
    let backends = three().await;

    let mut direct = tonic::transport::Channel::from_shared(format!("http://{}", backends[0].addr))
        .expect("uri")
        .connect()
        .await
        .expect("direct channel");
    let error = direct
        .ready()
        .await
        .expect("ready")
        .call(broken_call(&backends[0].addr.to_string()))
        .await
        .expect_err("a broken request stream");
    // hyper resets the stream (INTERNAL_ERROR) and drops the caller's
    // status; tonic maps the reset to INTERNAL.
    let direct = tonic::Status::from_error(Box::new(error));
    assert_eq!(
        direct.code(),
        Code::Internal,
        "tonic's own channel: {direct:?}"
    );

    let mut balanced = channel(
        &backends,
        GrpcRetryLayer::new(),
        OutlierDetection::default(),
    );
    for _ in 0..6 {
        let error = balanced
            .ready()
            .await
            .expect("ready")
            .call(broken_call("my-grpc-service"))
            .await
            .expect_err("a broken request stream");
        let status = error.downcast::<tonic::Status>().expect("a tonic::Status");
        assert_eq!(
            status.code(),
            Code::Internal,
            "through the balancer: {status:?}"
        );
    }
    let checks: Vec<usize> = backends.iter().map(GrpcBackend::checks).collect();
    assert_eq!(checks, vec![0, 0, 0]);
}

/// A server-streaming call whose server fails it midway (UNAVAILABLE in
/// the trailers, after a message) is a failure of its instance (503, as
/// a trailers-only UNAVAILABLE is), so outlier ejection takes out a
/// server failing every stream: 20 watches over a failing and a healthy
/// server, the failing one ejected at its 5th failure (Envoy reads
/// grpc-status from trailers for outlier detection too). Before, such a
/// stream counted as a success: 10 of 20 watches failed.
#[tokio::test]
async fn a_stream_failing_midway_counts_against_its_server() {
    let backends = [
        GrpcBackend::start("a").await.expect("a"),
        GrpcBackend::start("b").await.expect("b"),
    ];
    backends[0].set_fail_midway(true);
    let client = client(
        &backends,
        GrpcRetryLayer::new(),
        OutlierDetection::default(),
    );
    let mut failed = 0;
    for _ in 0..20 {
        let mut stream = client
            .clone()
            .watch(request())
            .await
            .expect("watch")
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status}");
                    failed += 1;
                    break;
                }
            }
        }
    }
    let watches: Vec<usize> = backends.iter().map(GrpcBackend::watches).collect();
    assert_eq!((failed, watches), (5, vec![5, 15]));
}

/// An h2c server that takes every stream and never answers, recording
/// each one's `grpc-timeout`.
async fn hanging_grpc_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let timeout = req.headers().get("grpc-timeout");
                    let timeout = timeout.and_then(|v| v.to_str().ok()).unwrap_or("none");
                    log.lock().unwrap().push(timeout.to_owned());
                    held.push((req, respond));
                }
            });
        }
    });
    (addr, seen)
}

/// A call's deadline (`grpc-timeout`, from `tonic::Request::set_timeout`)
/// bounds the whole call, retries included, as tonic's `Channel` bounds
/// it (gRFC A6: the deadline covers every attempt), and each attempt
/// tells the server the time left. Two instances that never answer, an
/// opted-in method, a 1 s per-try timeout and a call deadline of 1.5 s:
/// before, the deadline was not enforced (the call ended after both 1 s
/// attempts, with the per-try timeout's DEADLINE_EXCEEDED) and both
/// attempts carried the whole 1.5 s; now the call ends at its deadline
/// and the second attempt carries what was left (under 0.5 s).
#[tokio::test]
async fn a_calls_deadline_bounds_its_retries_and_each_attempt_sends_the_time_left() {
    let (first, seen_first) = hanging_grpc_server().await;
    let (second, seen_second) = hanging_grpc_server().await;
    let source = StaticSource::new()
        .with_list("my-grpc-service", &format!("{first},{second}"))
        .expect("list");
    let builder = LoadBalancer::builder()
        .source(source)
        .service("my-grpc-service")
        .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
        .retry(
            RetryPolicy::default()
                .per_try_timeout(std::time::Duration::from_secs(1))
                .budget(RetryBudgetConfig::unlimited()),
        );
    let channel = grpc::balance(
        builder,
        grpc::h2c_client(),
        GrpcRetryLayer::new().method(CHECK),
    )
    .expect("balancer");
    let client =
        HealthClient::with_origin(channel, http::Uri::from_static("http://my-grpc-service"));
    let mut call = tonic::Request::new(request());
    call.set_timeout(std::time::Duration::from_millis(1_500));
    let status = client.clone().check(call).await.expect_err("no answer");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("grpc-timeout"), "{status:?}");
    let first = seen_first.lock().unwrap().clone();
    let second = seen_second.lock().unwrap().clone();
    // The first attempt: the whole 1.5 s (as written, or a hair less).
    assert_eq!(first.len(), 1, "{first:?}");
    let micros = |v: &str| -> u64 {
        let (n, unit) = v.split_at(v.len() - 1);
        let n: u64 = n.parse().unwrap();
        match unit {
            "u" => n,
            "m" => n * 1_000,
            "n" => n / 1_000,
            other => panic!("unit {other}"),
        }
    };
    assert!(
        micros(&first[0]) <= 1_500_000 && micros(&first[0]) > 1_000_000,
        "{first:?}"
    );
    // The retry, after the 1 s per-try timeout: at most the 0.5 s left.
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(micros(&second[0]) <= 500_000, "{second:?}");
}

/// An h2c server that answers every stream with HTTP 200, the headers
/// `headers` and the body `body` (no trailers), counting the streams.
async fn raw_grpc_server(
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let mut response = http::Response::builder().status(200);
                    for (name, value) in headers {
                        response = response.header(*name, *value);
                    }
                    let response = response.body(()).unwrap();
                    let end = body.is_empty();
                    if let Ok(mut send) = respond.send_response(response, end) {
                        if !end {
                            let _ = send.send_data(bytes::Bytes::from_static(body), true);
                        }
                    }
                }
            });
        }
    });
    (addr, streams)
}

/// 20 calls over an instance answering every call with something tonic
/// fails for the caller and a real tonic server, under outlier detection's
/// defaults: the first instance is ejected at its 5th failure, as one
/// answering a trailers-only UNAVAILABLE is. Returns the callers' failures
/// and the calls each instance saw.
async fn calls_over_a_failing_answer(
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
) -> (Vec<(Code, String)>, [usize; 2]) {
    use std::sync::atomic::Ordering;
    let (bad, bad_streams) = raw_grpc_server(headers, body).await;
    let good = GrpcBackend::start("b").await.expect("b");
    let source = StaticSource::new()
        .with_list("my-grpc-service", &format!("{bad},{}", good.addr))
        .expect("list");
    let builder = LoadBalancer::builder()
        .source(source)
        .service("my-grpc-service")
        .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
        .outlier_detection(OutlierDetection::default());
    let channel = grpc::balance(builder, grpc::h2c_client(), GrpcRetryLayer::new()).unwrap();
    let client =
        HealthClient::with_origin(channel, http::Uri::from_static("http://my-grpc-service"));
    let mut failed = Vec::new();
    for _ in 0..20 {
        if let Err(e) = check(&client).await {
            failed.push(e);
        }
    }
    (failed, [bad_streams.load(Ordering::SeqCst), good.checks()])
}

/// A 200 with a non-gRPC content type (an HTTP server, not a gRPC one, at
/// the instance's address: a page of HTML) fails every call for the
/// caller, and counts against the instance: gRPC's HTTP-to-gRPC status
/// mapping makes a 200 without a gRPC content type UNKNOWN (a 500 to the
/// balancer). Before, each such call counted as a success: the instance
/// was never ejected, 10 of 20 calls failed (`[10, 10]` calls seen); now
/// 5 (`[5, 15]`).
#[tokio::test]
async fn a_200_without_a_grpc_content_type_counts_against_its_instance() {
    let html = &[("content-type", "text/html")];
    let (failed, seen) = calls_over_a_failing_answer(html, b"<html>not gRPC</html>").await;
    assert_eq!((failed.len(), seen), (5, [5, 15]), "{failed:?}");
    assert!(
        failed.iter().all(|(code, _)| *code == Code::Internal),
        "{failed:?}"
    );
    // No content type, no body: tonic's "Missing response message".
    let (failed, seen) = calls_over_a_failing_answer(&[], b"").await;
    assert_eq!((failed.len(), seen), (5, [5, 15]), "{failed:?}");
}

/// A `grpc-status` in the headers of a 200 is the call's status to tonic
/// whatever the content type (tonic reads it first): UNAVAILABLE without a
/// content type, or under `text/plain`, counts as the trailers-only
/// UNAVAILABLE it is to the caller. Before, it counted as a success: 10
/// of 20 calls failed, the instance never ejected; now 5.
#[tokio::test]
async fn a_grpc_status_in_the_headers_counts_whatever_the_content_type() {
    for headers in [
        &[("grpc-status", "14")][..],
        &[("content-type", "text/plain"), ("grpc-status", "14")][..],
    ] {
        let (failed, seen) = calls_over_a_failing_answer(headers, b"").await;
        assert_eq!((failed.len(), seen), (5, [5, 15]), "{headers:?} {failed:?}");
        assert!(
            failed.iter().all(|(code, _)| *code == Code::Unavailable),
            "{failed:?}"
        );
    }
}

/// An h2c server that resets every stream with `reason` at its HEADERS,
/// counting the streams.
async fn resetting_grpc_server(
    reason: h2::Reason,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    respond.send_reset(reason);
                }
            });
        }
    });
    (addr, streams)
}

/// A call not opted in is streamed to its instance, not buffered; one
/// whose stream the server refuses with REFUSED_STREAM (RFC 9113 §8.7:
/// not processed) is sent again to the next instance from what the
/// refused attempt read (gRFC A6's transparent retry), also for a
/// server-streaming call. Before, hyper had read the streamed body when
/// the refusal came: "body cannot be replayed", UNAVAILABLE for 2 of 4
/// checks and 1 of 4 watches; now every call succeeds. Round robin sends
/// every other first attempt to the refusing instance until its third
/// refusal in a row (a connect failure) trips its breaker: 3 streams
/// there, 4 checks and 4 watches on the other.
#[tokio::test]
async fn a_refused_stream_of_a_call_not_opted_in_goes_to_the_next_instance() {
    use std::sync::atomic::Ordering;
    let (bad, bad_streams) = resetting_grpc_server(h2::Reason::REFUSED_STREAM).await;
    let good = GrpcBackend::start("b").await.expect("b");
    let source = StaticSource::new()
        .with_list("my-grpc-service", &format!("{bad},{}", good.addr))
        .expect("list");
    let builder = LoadBalancer::builder()
        .source(source)
        .service("my-grpc-service")
        .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
        .outlier_detection(OutlierDetection::disabled());
    let channel = grpc::balance(builder, grpc::h2c_client(), GrpcRetryLayer::new()).unwrap();
    let client =
        HealthClient::with_origin(channel, http::Uri::from_static("http://my-grpc-service"));
    let mut results = Vec::new();
    for _ in 0..4 {
        results.push(check(&client).await);
    }
    assert_eq!(counts(&results), split(&[("b", 4)]));
    let mut watched = 0;
    for _ in 0..4 {
        let mut stream = client
            .clone()
            .watch(request())
            .await
            .expect("watch")
            .into_inner();
        while stream.message().await.expect("message").is_some() {}
        watched += 1;
    }
    assert_eq!(watched, 4);
    assert_eq!(
        [
            bad_streams.load(Ordering::SeqCst),
            good.checks(),
            good.watches()
        ],
        [3, 4, 4]
    );
}
