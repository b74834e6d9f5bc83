//! Default and key-driven timeouts (issue 12 item 5), in paused time
//! against real loopback sockets: a backend that accepts and never answers
//! (a hung server) and a listener whose accept queue is full (a connect
//! that never completes). Every error names the timeout that fired, its
//! duration, and why no retry followed.
//!
//! Paused time advances only when every task waits, so each elapsed time
//! below is exact in virtual time (backoff adds at most 10 ms).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::error::TimeoutKind;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::service::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT};
use tower_ribbon::{Builder, Error, LoadBalancer};

/// Most backoff before the first retry under the default policy.
const BACKOFF: Duration = Duration::from_millis(10);

/// A backend that accepts connections and never answers.
async fn hung_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// A listener whose accept queue is full, so a further connect is never
/// answered (Linux drops the SYN). Returns the address and what must stay
/// alive. Fails the test if the queue does not fill.
fn unanswered_listener() -> (SocketAddr, Vec<Box<dyn Send>>) {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    // Re-listen with the smallest backlog through tokio's socket type.
    drop(socket);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(1).unwrap();
    let mut alive: Vec<Box<dyn Send>> = vec![Box::new(listener)];
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => alive.push(Box::new(stream)),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (addr, alive),
            Err(e) => panic!("filling the accept queue: {e}"),
        }
    }
    panic!("the accept queue of {addr} never filled");
}

fn builder(addrs: &[SocketAddr]) -> Builder {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let source = StaticSource::new()
        .with_list("svc", &list.join(","))
        .unwrap();
    LoadBalancer::builder().source(source).service("svc")
}

async fn call(
    lb: &LoadBalancer<tower_ribbon::service::HttpClient<Full<Bytes>>>,
    method: http::Method,
) -> (Error, Duration) {
    let request = Request::builder()
        .method(method)
        .uri("http://svc/x")
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let start = Instant::now();
    let err = lb.clone().oneshot(request).await.unwrap_err();
    (err, start.elapsed())
}

fn within(elapsed: Duration, expected: Duration, slack: Duration) {
    assert!(
        elapsed >= expected && elapsed <= expected + slack,
        "took {elapsed:?}, expected {expected:?} (+ at most {slack:?})"
    );
}

#[test]
fn defaults_are_ribbons() {
    assert_eq!(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis(2000));
    assert_eq!(DEFAULT_READ_TIMEOUT, Duration::from_millis(5000));
    let b = LoadBalancer::builder();
    assert_eq!(b.get_connect_timeout(), Some(Duration::from_millis(2000)));
}

#[tokio::test(start_paused = true)]
async fn hung_backend_post_fails_after_the_default_read_timeout_and_is_not_retried() {
    let (a, _ta) = hung_backend().await;
    let (b, _tb) = hung_backend().await;
    let lb = builder(&[a, b]).build_http::<Full<Bytes>>().unwrap();
    let (err, elapsed) = call(&lb, http::Method::POST).await;
    assert_eq!(elapsed, Duration::from_secs(5));
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::PerTry(Duration::from_secs(5)))
    );
    assert!(err.is_timeout());
    assert_eq!(err.attempts().len(), 1);
    let text = err.to_string();
    assert!(
        text.contains("the per-try (read) timeout (5s) fired"),
        "{text}"
    );
    assert!(
        text.contains("POST not retried: the request may have reached the server"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn hung_backend_get_is_retried_once_then_fails_after_two_read_timeouts() {
    let (a, _ta) = hung_backend().await;
    let (b, _tb) = hung_backend().await;
    let lb = builder(&[a, b]).build_http::<Full<Bytes>>().unwrap();
    let (err, elapsed) = call(&lb, http::Method::GET).await;
    within(elapsed, Duration::from_secs(10), BACKOFF);
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::PerTry(Duration::from_secs(5)))
    );
    assert_eq!(err.attempts().len(), 2);
    let instances: Vec<&str> = err.attempts().iter().map(|a| a.instance.as_str()).collect();
    assert_ne!(
        instances[0], instances[1],
        "the retry goes to the other instance"
    );
    let text = err.to_string();
    assert!(text.contains("GET not retried: no retries left"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn default_connect_timeout_reaches_the_built_client_and_is_retried_even_for_post() {
    let (addr, _alive) = unanswered_listener();
    let lb = builder(&[addr]).build_http::<Full<Bytes>>().unwrap();
    let (err, elapsed) = call(&lb, http::Method::POST).await;
    // Two connect timeouts of 2 s: a connect timeout never reached the
    // server, so even a POST is retried.
    within(elapsed, Duration::from_secs(4), BACKOFF);
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::Connect(Some(Duration::from_secs(2))))
    );
    assert_eq!(err.attempts().len(), 2);
    let text = err.to_string();
    assert!(
        text.contains("the connect timeout (2s) fired: no connection was made"),
        "{text}"
    );
    assert!(text.contains("POST not retried: no retries left"), "{text}");
}

#[cfg(feature = "config")]
#[tokio::test(start_paused = true)]
async fn ribbon_keys_set_both_timeouts() {
    use tower_ribbon::config::RibbonConfig;
    let (hung, _t) = hung_backend().await;
    let (unanswered, _alive) = unanswered_listener();
    let config = |addr: SocketAddr| {
        RibbonConfig::from_properties_str(&format!(
            "svc.ribbon.listOfServers={addr}\n\
             svc.ribbon.ReadTimeout=700\n\
             svc.ribbon.ConnectTimeout=300\n\
             svc.ribbon.MaxAutoRetriesNextServer=0\n"
        ))
        .unwrap()
    };

    let b = config(hung).builder_for("svc").unwrap();
    assert_eq!(b.get_connect_timeout(), Some(Duration::from_millis(300)));
    let lb = b.build_http::<Full<Bytes>>().unwrap();
    let (err, elapsed) = call(&lb, http::Method::GET).await;
    assert_eq!(elapsed, Duration::from_millis(700));
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::PerTry(Duration::from_millis(700)))
    );
    assert!(
        err.to_string().contains("per-try (read) timeout (700ms)"),
        "{err}"
    );

    let lb = config(unanswered)
        .builder_for("svc")
        .unwrap()
        .build_http::<Full<Bytes>>()
        .unwrap();
    let (err, elapsed) = call(&lb, http::Method::GET).await;
    assert_eq!(elapsed, Duration::from_millis(300));
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::Connect(Some(Duration::from_millis(300))))
    );
    assert!(
        err.to_string().contains("connect timeout (300ms) fired"),
        "{err}"
    );
}

#[cfg(feature = "config")]
#[tokio::test(start_paused = true)]
async fn read_timeout_zero_means_none() {
    use tower_ribbon::config::RibbonConfig;
    let (hung, _t) = hung_backend().await;
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers={hung}\nsvc.ribbon.ReadTimeout=0\n"
    ))
    .unwrap();
    let lb = config
        .builder_for("svc")
        .unwrap()
        .build_http::<Full<Bytes>>()
        .unwrap();
    let request = Request::get("http://svc/x").body(Full::default()).unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(3600), lb.oneshot(request)).await;
    assert!(
        waited.is_err(),
        "still waiting after an hour without a read timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_the_read_timeout_short_and_says_so() {
    let (a, _ta) = hung_backend().await;
    let policy = RetryPolicy::default().deadline(Duration::from_secs(3));
    let lb = builder(&[a])
        .retry(policy)
        .build_http::<Full<Bytes>>()
        .unwrap();
    let (err, elapsed) = call(&lb, http::Method::GET).await;
    assert_eq!(elapsed, Duration::from_secs(3));
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::Deadline(Duration::from_secs(3)))
    );
    let text = err.to_string();
    assert!(
        text.contains("the request deadline (3s, `RetryPolicy::deadline`) fired"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_policy_per_try_timeout_wins_over_the_builder_default() {
    let (a, _ta) = hung_backend().await;
    let policy = RetryPolicy::none().per_try_timeout(Duration::from_millis(250));
    let lb = builder(&[a])
        .retry(policy)
        .build_http::<Full<Bytes>>()
        .unwrap();
    let (err, elapsed) = call(&lb, http::Method::PUT).await;
    assert_eq!(elapsed, Duration::from_millis(250));
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::PerTry(Duration::from_millis(250)))
    );
    assert!(
        err.to_string()
            .contains("PUT not retried: retries are off (the `RetryPolicy` allows none)"),
        "{err}"
    );
}

#[test]
fn each_timeout_message_names_its_cause() {
    let cases = [
        (
            TimeoutKind::Connect(Some(Duration::from_secs(2))),
            "the connect timeout (2s) fired: no connection was made, the request never reached the server (set it with `ConnectTimeout` or `Builder::connect_timeout`)",
        ),
        (
            TimeoutKind::Connect(None),
            "the connect attempt timed out: no connection was made, the request never reached the server",
        ),
        (
            TimeoutKind::PerTry(Duration::from_secs(5)),
            "the per-try (read) timeout (5s) fired before the response headers (raise it with `ReadTimeout` or `Builder::read_timeout`; `RetryPolicy::per_try_timeout` wins when set)",
        ),
        (
            TimeoutKind::Deadline(Duration::from_millis(1500)),
            "the request deadline (1.5s, `RetryPolicy::deadline`) fired",
        ),
        (TimeoutKind::Client, "the HTTP client's own timeout fired"),
    ];
    for (kind, text) in cases {
        assert_eq!(kind.to_string(), text);
    }
}

#[test]
fn a_zero_read_timeout_is_refused_at_build() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let err = builder(&["127.0.0.1:1".parse().unwrap()])
        .read_timeout(Some(Duration::ZERO))
        .layer()
        .unwrap_err();
    assert!(err.to_string().contains("Builder::read_timeout"), "{err}");
}

/// A real hyper server answering 200 with its headers at once and a body
/// that never sends a byte (a backend stalled mid-response).
async fn headers_then_stalled_body() -> SocketAddr {
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req| async {
                let never = tokio_stream::pending::<Result<Frame<Bytes>, std::io::Error>>();
                let body = http_body_util::StreamBody::new(never);
                Ok::<_, std::convert::Infallible>(http::Response::new(body))
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
        }
    });
    addr
}

/// The per-try timeout ends at the response headers, as its docs say: a
/// body stalled after them is the caller's to bound (60 s of paused time
/// and still pending).
#[tokio::test(start_paused = true)]
async fn a_body_stalled_after_the_headers_is_not_cut_by_the_read_timeout() {
    use http_body_util::BodyExt;
    let addr = headers_then_stalled_body().await;
    let lb = builder(&[addr]).build_http::<Full<Bytes>>().unwrap();
    let request = Request::get("http://svc/x").body(Full::default()).unwrap();
    let response = lb.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let read = tokio::time::timeout(Duration::from_secs(60), body.frame()).await;
    assert!(read.is_err(), "the body should still be pending after 60 s");
}

/// A connect timeout above the per-try timeout is cut by the per-try timer
/// (started before the connect), as the module docs warn: a POST whose
/// connect hangs is reported as a read timeout and not retried. At equal
/// values (Spring Cloud Netflix's 1000/1000 ms) the client's connect timer
/// fires first and the POST is retried.
#[tokio::test(start_paused = true)]
async fn a_connect_timeout_above_the_read_timeout_is_reported_as_a_read_timeout() {
    let second = Duration::from_secs(1);
    let lb = |addr, connect| {
        builder(&[addr])
            .connect_timeout(Some(connect))
            .read_timeout(Some(second))
            .build_http::<Full<Bytes>>()
            .unwrap()
    };
    let (addr, _alive) = unanswered_listener();
    let (err, elapsed) = call(&lb(addr, 2 * second), http::Method::POST).await;
    assert_eq!(elapsed, second);
    assert_eq!(err.timeout(), Some(TimeoutKind::PerTry(second)));
    assert_eq!(err.attempts().len(), 1);

    let (addr, _alive) = unanswered_listener();
    let (err, elapsed) = call(&lb(addr, second), http::Method::POST).await;
    within(elapsed, 2 * second, BACKOFF);
    assert_eq!(err.timeout(), Some(TimeoutKind::Connect(Some(second))));
    assert_eq!(err.attempts().len(), 2);
}

/// The h2c client takes the builder's connect timeout through
/// `h2c_client_with` (`h2c_client` always had 2 s, so `ConnectTimeout`
/// could not reach the gRPC path and its errors named a timeout that had
/// not fired); a POST (every gRPC call) is retried after it.
#[cfg(feature = "grpc")]
#[tokio::test(start_paused = true)]
async fn the_h2c_client_takes_the_builders_connect_timeout() {
    use tower_ribbon::grpc::{GrpcBody, h2c_client, h2c_client_with};
    use tower_ribbon::retry::ReplayBody;
    let post = || {
        Request::post("http://svc/pkg.Svc/Call")
            .body(GrpcBody::from_bytes(Bytes::new()))
            .unwrap()
    };
    let second = Duration::from_secs(1);
    let (addr, _alive) = unanswered_listener();
    let b = builder(&[addr]).connect_timeout(Some(second));
    let client = h2c_client_with(b.get_connect_timeout());
    let lb = b.build(client).unwrap();
    let start = Instant::now();
    let err = lb.oneshot(post()).await.unwrap_err();
    within(start.elapsed(), 2 * second, BACKOFF);
    assert_eq!(err.timeout(), Some(TimeoutKind::Connect(Some(second))));
    assert_eq!(err.attempts().len(), 2);

    let (addr, _alive) = unanswered_listener();
    let uri = format!("http://{addr}/pkg.Svc/Call");
    let start = Instant::now();
    let request = Request::post(uri)
        .body(ReplayBody::from_bytes(Bytes::new()))
        .unwrap();
    let err = h2c_client().request(request).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert_eq!(start.elapsed(), 2 * second);
}

/// `RetryPolicy::deadline` bounds the whole request, the wait for the
/// service's first list included. Found by an attack: the deadline clock
/// started only once the list had arrived, so a 100 ms deadline over a
/// registry answering in 1.5 s gave a request of 1.504 s (up to the 5 s
/// first-fetch bound with a slower registry). Paused time, an instant
/// inner service.
#[tokio::test(start_paused = true)]
async fn the_deadline_covers_the_wait_for_the_first_list() {
    use std::convert::Infallible;
    use tower_ribbon::discovery::{FetchFuture, InstanceSource};

    /// A source whose every fetch takes 1.5 s.
    struct Slow;
    impl InstanceSource for Slow {
        fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(vec![
                    tower_ribbon::Instance::new(service_id, "127.0.0.1", 1).unwrap(),
                ])
            })
        }
    }
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
    });
    let build = |retry: RetryPolicy| {
        LoadBalancer::builder()
            .source(Slow)
            .service("svc")
            .retry(retry)
            .build(inner)
            .unwrap()
    };
    let get = || {
        Request::get("http://svc/")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let lb = build(RetryPolicy::default().deadline(Duration::from_millis(100)));
    let started = Instant::now();
    let err = lb.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert!(err.is_discovery() && err.is_timeout(), "{err}");
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::Deadline(Duration::from_millis(100)))
    );
    // Once the list is there, the deadline starts with each request.
    assert!(lb.ready_service("svc").await);
    assert_eq!(lb.oneshot(get()).await.unwrap().status(), 200);

    // Without a deadline the request waits for the list (1.5 s) and succeeds.
    let lb = build(RetryPolicy::default());
    let started = Instant::now();
    assert_eq!(lb.oneshot(get()).await.unwrap().status(), 200);
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}
