//! The request path around the inner service: readiness before the pick,
//! what latency measures, bounds on hostile input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use tower::{Service, ServiceExt};
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{BoxError, LoadBalancer};

/// An inner service that is not ready until its gate opens (a stand-in for
/// a concurrency limit or a full buffer). Clones share the gate.
#[derive(Clone)]
struct Gate<S> {
    inner: S,
    open: Arc<AtomicBool>,
    waiters: Arc<Mutex<Vec<Waker>>>,
}

impl<S> Gate<S> {
    fn closed(inner: S) -> Self {
        Self {
            inner,
            open: Arc::new(AtomicBool::new(false)),
            waiters: Arc::default(),
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for waker in self.waiters.lock().unwrap().drain(..) {
            waker.wake();
        }
    }
}

impl<S: Service<R>, R> Service<R> for Gate<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if !self.open.load(Ordering::SeqCst) {
            self.waiters.lock().unwrap().push(cx.waker().clone());
            if !self.open.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

fn echo()
-> impl Service<Request<String>, Response = Response<String>, Error = BoxError, Future = impl Send>
+ Clone
+ Send {
    tower::service_fn(|req: Request<String>| async move {
        Ok::<_, BoxError>(Response::new(req.uri().to_string()))
    })
}

/// Paused time; no memory bound needed (two instances, one request).
#[tokio::test(start_paused = true)]
async fn the_pick_waits_for_a_ready_inner_and_the_wait_is_not_latency() {
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let gate = Gate::closed(echo());
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .refresh({
            let mut c = RefreshConfig::default();
            c.interval = Duration::from_secs(1);
            c.jitter = 0.0;
            c
        })
        .retry(RetryPolicy::none())
        .build(gate.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);

    let start = tokio::time::Instant::now();
    let call = tokio::spawn(
        lb.clone()
            .oneshot(Request::get("http://svc/x").body(String::new()).unwrap()),
    );
    // While the inner service is not ready, the instance round robin would
    // pick first (port 1) leaves the list.
    tokio::time::sleep(Duration::from_millis(500)).await;
    source.set_list("svc", "127.0.0.1:2").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ports: Vec<u16> = lb
        .snapshot("svc")
        .unwrap()
        .endpoints()
        .iter()
        .map(|e| e.instance().port())
        .collect();
    assert_eq!(ports, [2]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    gate.open();

    let response = call.await.unwrap().unwrap();
    assert_eq!(response.into_body().into_inner(), "http://127.0.0.1:2/x");
    assert_eq!(start.elapsed(), Duration::from_millis(4500));
    // The 4.5 s spent waiting for readiness is charged to no instance.
    let snapshot = lb.snapshot("svc").unwrap();
    let stats = snapshot.endpoints()[0].stats();
    assert_eq!(stats.requests(), 1);
    assert_eq!(stats.ewma(), Some(Duration::ZERO));
    assert_eq!(stats.in_flight(), 0);
}

// ---------------------------------------------------------------------------
// Streams stay in flight until their body ends.

mod streaming {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty};
    use hyper::server::conn::http1;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tower::ServiceExt;
    use tower_ribbon::LoadBalancer;
    use tower_ribbon::discovery::{RefreshConfig, StaticSource};
    use tower_ribbon::retry::RetryPolicy;
    use tower_ribbon::rule::{BestAvailable, PeakEwmaP2c, Rule};

    /// A response body fed chunk by chunk; it ends when its sender drops.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    type Held = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;

    /// A loopback backend answering its name; `/stream` sends its name and
    /// then keeps the body open while the sender sits in `held`; so does
    /// `/stream503`, with status 503.
    async fn backend(name: &'static str, held: Held) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let held = Arc::clone(&held);
                let answer =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (tx, rx) = mpsc::channel(4);
                        let _ = tx.try_send(Bytes::from_static(name.as_bytes()));
                        let path = req.uri().path();
                        if path == "/stream" || path == "/stream503" {
                            held.lock().unwrap().push(tx);
                        }
                        let mut response = Response::new(Chunks(rx));
                        if path == "/stream503" {
                            *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        async move { Ok::<_, Infallible>(response) }
                    });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), answer));
            }
        });
        port
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(format!("http://svc{path}"))
            .body(Empty::new())
            .unwrap()
    }

    /// A response without content (a 204, `Content-Length: 0`, a HEAD's)
    /// has ended with its headers: its attempt leaves the in-flight count and
    /// records its latency then, not when the caller drops the response
    /// (before: 3 held 204s and 2 held empty 200s kept 5 in flight, and a
    /// held HEAD response 1, their latency running on while held). A held response with content still
    /// counts.
    #[tokio::test]
    async fn a_response_without_a_body_is_not_in_flight_while_held() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let mut response =
                            Response::new(http_body_util::Full::new(Bytes::from_static(b"body")));
                        match req.uri().path() {
                            "/empty" => *response.status_mut() = http::StatusCode::NO_CONTENT,
                            "/zero" => {
                                *response.body_mut() = http_body_util::Full::new(Bytes::new())
                            }
                            _ => {}
                        }
                        Ok::<_, Infallible>(response)
                    });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), answer));
            }
        });
        let lb = LoadBalancer::builder()
            .source(
                StaticSource::new()
                    .with_list("svc", &format!("127.0.0.1:{port}"))
                    .unwrap(),
            )
            .service("svc")
            .build(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        let in_flight = || {
            lb.snapshot("svc").unwrap().endpoints()[0]
                .stats()
                .in_flight()
        };
        let mut held = Vec::new();
        for path in ["/empty", "/empty", "/empty", "/zero", "/zero"] {
            let response = lb.clone().oneshot(get(path)).await.unwrap();
            held.push(response);
        }
        let statuses: Vec<u16> = held.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses, [204, 204, 204, 200, 200]);
        assert_eq!(in_flight(), 0);
        // A HEAD's response has no content, whatever its `Content-Length`.
        let head = Request::head("http://svc/").body(Empty::new()).unwrap();
        let response = lb.clone().oneshot(head).await.unwrap();
        assert_eq!(response.headers()[http::header::CONTENT_LENGTH], "4");
        held.push(response);
        assert_eq!(in_flight(), 0);
        let with_body = lb.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(in_flight(), 1);
        drop(with_body);
        assert_eq!(in_flight(), 0);
        drop(held);
    }

    /// Real loopback, two backends, 25 requests; under 5 s and a few MiB.
    async fn avoids_the_instance_holding_streams<R: Rule>(make: fn() -> R) {
        let held: Held = Arc::default();
        let a = backend("a", Arc::clone(&held)).await;
        let b = backend("b", Arc::clone(&held)).await;
        let source = StaticSource::new()
            .with_list("svc", &format!("127.0.0.1:{a}"))
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let lb = LoadBalancer::builder()
            .source(source.clone())
            .service("svc")
            .rule(make)
            .refresh({
                let mut c = RefreshConfig::default();
                c.interval = Duration::from_millis(20);
                c.jitter = 0.0;
                c
            })
            .retry(RetryPolicy::none())
            .build(client)
            .unwrap();
        assert!(lb.ready_service("svc").await);

        // Five long streams on `a`: headers arrived, bodies still open.
        let mut streams = Vec::new();
        for _ in 0..5 {
            streams.push(lb.clone().oneshot(get("/stream")).await.unwrap());
        }
        let in_flight = |lb: &LoadBalancer<_>, port: u16| {
            let snap = lb.snapshot("svc").unwrap();
            let e = snap
                .endpoints()
                .iter()
                .find(|e| e.instance().port() == port)
                .cloned();
            e.map(|e| e.stats().in_flight())
        };
        assert_eq!(in_flight(&lb, a), Some(5));

        source
            .set_list("svc", &format!("127.0.0.1:{a},127.0.0.1:{b}"))
            .unwrap();
        for _ in 0..250 {
            if lb.snapshot("svc").unwrap().endpoints().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(in_flight(&lb, a), Some(5), "stats kept across the refresh");

        let mut to_b = 0;
        for _ in 0..20 {
            let body = lb.clone().oneshot(get("/")).await.unwrap().into_body();
            let bytes = body.collect().await.unwrap().to_bytes();
            to_b += usize::from(bytes.as_ref() == b"b");
        }
        assert_eq!(
            to_b, 20,
            "every request avoided the instance holding five streams"
        );
        assert_eq!(
            in_flight(&lb, b),
            Some(0),
            "read bodies ended their attempts"
        );

        // Dropping the streams ends their attempts.
        drop(streams);
        assert_eq!(in_flight(&lb, a), Some(0));
    }

    /// A balancer over the one instance on `port`: best available, no
    /// retries, its list fetched.
    async fn one_instance(
        port: u16,
    ) -> LoadBalancer<Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>>
    {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let source = StaticSource::new()
            .with_list("svc", &format!("127.0.0.1:{port}"))
            .unwrap();
        let lb = LoadBalancer::builder()
            .source(source)
            .service("svc")
            .rule(BestAvailable::new)
            .retry(RetryPolicy::none())
            .build(client)
            .unwrap();
        assert!(lb.ready_service("svc").await);
        lb
    }

    /// A failed response handed to the caller (no retry left) is load
    /// until its body ends, as a successful one is: its failure is
    /// recorded at once (for the breaker and ejection), its in-flight
    /// count lasts until the body ends or is dropped. Found by an attack:
    /// a 5xx response's count ended with its headers, so least-loaded
    /// rules did not see its streaming body.
    #[tokio::test]
    async fn a_failed_response_still_streaming_is_load_until_its_body_ends() {
        let held: Held = Arc::default();
        let a = backend("a", Arc::clone(&held)).await;
        let lb = one_instance(a).await;
        let snap = lb.snapshot("svc").unwrap();
        let stats = snap.endpoints()[0].stats();
        let mut open = Vec::new();
        for _ in 0..3 {
            let response = lb.clone().oneshot(get("/stream503")).await.unwrap();
            assert_eq!(response.status(), 503);
            open.push(response);
        }
        assert_eq!((stats.in_flight(), stats.failures()), (3, 3));
        // One read to its end, one dropped, one still open.
        let first = open.remove(0).into_body().collect();
        held.lock().unwrap().remove(0);
        assert_eq!(first.await.unwrap().to_bytes().as_ref(), b"a");
        assert_eq!(stats.in_flight(), 2);
        drop(open.remove(0));
        assert_eq!(stats.in_flight(), 1);
        drop(open);
        assert_eq!(
            (stats.in_flight(), stats.failures(), stats.requests()),
            (0, 3, 3)
        );
    }

    /// A body cut off after a 200 (the connection closes 3 bytes into a
    /// 100-byte body) ends its attempt as a failure: the success rate and
    /// outlier ejection see it, the breaker does not (no connection
    /// failure). Before, the attempt was recorded as the success its
    /// headers said. A raw TCP stub: no real server truncates on demand.
    #[tokio::test]
    async fn a_body_cut_off_after_a_200_ends_its_attempt_as_a_failure() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
                    .await;
                // Dropped: the body ends 97 bytes short.
            }
        });
        let lb = one_instance(port).await;
        let snap = lb.snapshot("svc").unwrap();
        let stats = snap.endpoints()[0].stats();
        let response = lb.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!((stats.in_flight(), stats.failures()), (1, 0));
        assert!(response.into_body().collect().await.is_err(), "a cut body");
        assert_eq!(
            (stats.in_flight(), stats.failures(), stats.requests()),
            (0, 1, 1)
        );
        assert_eq!(stats.successive_connection_failures(), 0);
        assert!(
            stats.success_rate().is_some_and(|r| r < 0.5),
            "{:?}",
            stats.success_rate()
        );
    }

    #[tokio::test]
    async fn best_available_avoids_an_instance_holding_long_streams() {
        avoids_the_instance_holding_streams(BestAvailable::new).await;
    }

    #[tokio::test]
    async fn peak_ewma_p2c_avoids_an_instance_holding_long_streams() {
        avoids_the_instance_holding_streams(|| PeakEwmaP2c::with_seed(7)).await;
    }
}

// ---------------------------------------------------------------------------
// On-demand services: an atomic cap, idle expiry, declared ones kept.

mod on_demand {
    use std::sync::Arc;
    use std::time::Duration;

    use http::Request;
    use tower::ServiceExt;
    use tower_ribbon::LoadBalancer;
    use tower_ribbon::discovery::StaticSource;

    use super::echo;

    fn get(host: &str) -> Request<String> {
        Request::get(format!("http://{host}/"))
            .body(String::new())
            .unwrap()
    }

    /// 16 OS threads race to start 16 different on-demand services with a
    /// cap of 1: at most one exists afterwards. Real time, under 5 s.
    #[test]
    fn sixteen_racing_threads_never_exceed_a_cap_of_one() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for round in 0..20 {
            let lb = rt.block_on(async {
                LoadBalancer::builder()
                    .source(StaticSource::new())
                    .discover_on_demand(true)
                    .max_services(1)
                    .build(echo())
                    .unwrap()
            });
            let barrier = Arc::new(std::sync::Barrier::new(16));
            let threads: Vec<_> = (0..16)
                .map(|t| {
                    let (lb, barrier, handle) =
                        (lb.clone(), Arc::clone(&barrier), rt.handle().clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        handle.block_on(async move {
                            let call = lb.oneshot(get(&format!("made-up-{t}")));
                            tokio::time::timeout(Duration::from_secs(5), call)
                                .await
                                .is_ok()
                        })
                    })
                })
                .collect();
            for thread in threads {
                assert!(thread.join().unwrap(), "a call did not end");
            }
            assert!(
                lb.services().len() <= 1,
                "round {round}: {:?}",
                lb.services()
            );
        }
    }

    /// Paused time; a handful of services.
    #[tokio::test(start_paused = true)]
    async fn idle_on_demand_services_expire_and_declared_ones_stay() {
        let source = StaticSource::new()
            .with_list("declared", "127.0.0.1:1")
            .unwrap()
            .with_list("late", "127.0.0.1:2")
            .unwrap();
        let lb = LoadBalancer::builder()
            .source(source)
            .service("declared")
            .discover_on_demand(true)
            .on_demand_idle(Duration::from_secs(60))
            .build(echo())
            .unwrap();
        assert!(lb.clone().oneshot(get("late")).await.is_ok());
        assert_eq!(lb.services(), ["declared", "late"]);
        // Used every 40 s: kept.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            assert!(lb.clone().oneshot(get("late")).await.is_ok());
        }
        assert_eq!(lb.services(), ["declared", "late"]);
        // Idle for 60 s (plus up to one 30 s sweep): gone; declared stays.
        tokio::time::sleep(Duration::from_secs(91)).await;
        assert_eq!(lb.services(), ["declared"]);
        // And comes back on the next request.
        assert!(lb.clone().oneshot(get("late")).await.is_ok());
        assert_eq!(lb.services(), ["declared", "late"]);
    }

    /// Answers after `delay` with one instance of any service.
    struct Slow {
        delay: Duration,
    }

    impl tower_ribbon::discovery::InstanceSource for Slow {
        fn fetch<'a>(&'a self, service_id: &'a str) -> tower_ribbon::discovery::FetchFuture<'a> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                let instance = tower_ribbon::instance::Instance::new(service_id, "127.0.0.1", 9)
                    .map_err(|e| tower_ribbon::DiscoveryError::Other(Box::new(e)))?;
                Ok(vec![instance])
            })
        }
    }

    /// A request waiting for an on-demand service's first list keeps the
    /// service: with an idle time (1 s) shorter than the fetch (3 s), the
    /// sweeper leaves the service alone until its first fetch is done, and
    /// the request gets the list. Evicted then, the fetch was stopped and
    /// the request failed after the 5 s first-fetch wait.
    #[tokio::test(start_paused = true)]
    async fn a_service_waiting_for_its_first_list_is_not_evicted() {
        let lb = LoadBalancer::builder()
            .source(Slow {
                delay: Duration::from_secs(3),
            })
            .discover_on_demand(true)
            .on_demand_idle(Duration::from_secs(1))
            .build(echo())
            .unwrap();
        let started = tokio::time::Instant::now();
        let response = lb
            .clone()
            .oneshot(get("slow"))
            .await
            .expect("the list arrived");
        assert_eq!(response.into_body().into_inner(), "http://127.0.0.1:9/");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // Idle now that its first fetch is done: swept as usual.
        tokio::time::sleep(Duration::from_millis(1_501)).await;
        assert!(lb.services().is_empty(), "{:?}", lb.services());
    }

    /// 5 000 made-up host names: paused time, at most 1 024 on-demand
    /// services alive at once. A service in use keeps working throughout,
    /// declared ones too, and a new real one gets a slot once the made-up
    /// names have been idle for `on_demand_idle`.
    #[tokio::test(start_paused = true)]
    async fn five_thousand_made_up_hosts_do_not_lock_the_real_service_out() {
        let source = StaticSource::new()
            .with_list("declared", "127.0.0.1:1")
            .unwrap()
            .with_list("real", "127.0.0.1:2")
            .unwrap()
            .with_list("late", "127.0.0.1:3")
            .unwrap();
        let lb = LoadBalancer::builder()
            .source(source)
            .service("declared")
            .discover_on_demand(true)
            .on_demand_idle(Duration::from_secs(60))
            .build(echo())
            .unwrap();
        let send = |host: &str| lb.clone().oneshot(get(host));
        let body = |r: http::Response<tower_ribbon::service::TrackedBody<String>>| {
            r.into_body().into_inner()
        };
        assert_eq!(body(send("real").await.unwrap()), "http://127.0.0.1:2/");
        let mut refused = 0;
        for i in 0..5_000 {
            let err = send(&format!("made-up-{i}")).await.unwrap_err();
            assert!(err.is_discovery() || err.is_unknown_service(), "{err}");
            refused += usize::from(err.is_unknown_service());
            assert!(lb.services().len() <= 1 + 1024);
            if i % 500 == 0 {
                assert_eq!(body(send("real").await.unwrap()), "http://127.0.0.1:2/");
            }
        }
        assert_eq!(refused, 5_000 - 1023);
        assert_eq!(body(send("declared").await.unwrap()), "http://127.0.0.1:1/");
        assert!(send("late").await.unwrap_err().is_unknown_service());
        // The made-up names expire (within 60 s plus one 30 s sweep) while
        // `real` stays in use; then `late` gets a slot.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(25)).await;
            assert_eq!(body(send("real").await.unwrap()), "http://127.0.0.1:2/");
        }
        assert_eq!(lb.services(), ["declared", "real"]);
        assert_eq!(body(send("late").await.unwrap()), "http://127.0.0.1:3/");
    }

    /// A fully qualified host name (`svc.`, trailing dot) names the same
    /// service as `svc`, in any case: every form lands on the declared
    /// service, and on demand on one slot named without the dot (before:
    /// `svc.` was an unknown service with on-demand off, and with it a
    /// second service `svc.` whose fetch found no list; `late.` and `late`
    /// were two on-demand services).
    #[tokio::test(start_paused = true)]
    async fn a_trailing_dot_names_the_same_service() {
        let source = || {
            StaticSource::new()
                .with_list("svc", "127.0.0.1:1")
                .unwrap()
                .with_list("late", "127.0.0.1:2")
                .unwrap()
        };
        let body = |r: http::Response<tower_ribbon::service::TrackedBody<String>>| {
            r.into_body().into_inner()
        };
        for on_demand in [false, true] {
            let lb = LoadBalancer::builder()
                .source(source())
                .service("svc")
                .discover_on_demand(on_demand)
                .build(echo())
                .unwrap();
            for host in ["svc", "svc.", "SVC.", "svc.:8080", "user@Svc.:80"] {
                let response = lb.clone().oneshot(get(host)).await;
                let response = response.unwrap_or_else(|e| panic!("{host}: {e}"));
                assert_eq!(body(response), "http://127.0.0.1:1/", "{host}");
            }
            assert_eq!(lb.services(), ["svc"], "on demand: {on_demand}");
            if on_demand {
                for host in ["late.", "late", "LATE."] {
                    let response = lb.clone().oneshot(get(host)).await;
                    let response = response.unwrap_or_else(|e| panic!("{host}: {e}"));
                    assert_eq!(body(response), "http://127.0.0.1:2/", "{host}");
                }
                assert_eq!(lb.services(), ["late", "svc"]);
            }
        }
    }

    /// A host name of 253 bytes (the longest DNS name) written fully
    /// qualified (254 bytes with the trailing dot) lands on the same
    /// on-demand service as without the dot (before: refused as a host
    /// "over 253 bytes").
    #[tokio::test(start_paused = true)]
    async fn the_longest_name_with_a_trailing_dot_lands_on_its_service() {
        let name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(name.len(), 253);
        let lb = LoadBalancer::builder()
            .source(StaticSource::new().with_list(&name, "127.0.0.1:7").unwrap())
            .discover_on_demand(true)
            .build(echo())
            .unwrap();
        for host in [format!("{name}."), name.clone()] {
            let response = lb.clone().oneshot(get(&host)).await;
            let response = response.unwrap_or_else(|e| panic!("{}: {e}", host.len()));
            assert_eq!(response.into_body().into_inner(), "http://127.0.0.1:7/");
        }
        assert_eq!(lb.services(), [name]);
    }

    /// An authority with no host (`http://:8080/`, `http://user@:80/`) or
    /// the DNS root alone (`http://./`) names no service: it is refused as
    /// such and starts no discovery (before: on-demand services named ``
    /// (empty) and `.`, fetched from the source, each holding one of the
    /// `max_services` slots).
    #[tokio::test(start_paused = true)]
    async fn an_empty_host_names_no_service() {
        let lb = LoadBalancer::builder()
            .source(StaticSource::new())
            .discover_on_demand(true)
            .build(echo())
            .unwrap();
        for host in [":8080", "user@:80", ":", ".", ".:80"] {
            let err = lb.clone().oneshot(get(host)).await.unwrap_err();
            assert!(err.is_no_service_in_uri(), "{host}: {err}");
        }
        assert!(lb.services().is_empty(), "{:?}", lb.services());
    }

    /// A URI without a host whose userinfo holds a password
    /// (`http://me:S3cret@:8080/`) is refused without the password in the
    /// error's text or `Debug`: it read `request URI
    /// `http://me:S3cret@:8080/` has no host naming a service`; now
    /// `http://***@:8080/`, as every URL the crate's errors quote.
    #[tokio::test(start_paused = true)]
    async fn a_uri_without_host_keeps_its_userinfo_out_of_the_error() {
        let lb = LoadBalancer::builder()
            .source(StaticSource::new())
            .discover_on_demand(true)
            .build(echo())
            .unwrap();
        let err = lb
            .clone()
            .oneshot(get("me:S3cret@:8080"))
            .await
            .unwrap_err();
        assert!(err.is_no_service_in_uri(), "{err}");
        assert_eq!(
            err.to_string(),
            "request URI `http://***@:8080/` has no host naming a service"
        );
        assert!(!format!("{err:?}").contains("S3cret"), "{err:?}");
    }

    /// A URI without a host whose query or fragment carries a token
    /// (`/api?access_token=S3cret`, a gateway forwarding its client's
    /// request line) is refused without the token in the error's text or
    /// `Debug`: it read `request URI `/api?access_token=S3cret` has no host
    /// naming a service`; now `/api?***`.
    #[tokio::test(start_paused = true)]
    async fn a_uri_without_host_keeps_its_query_out_of_the_error() {
        let lb = LoadBalancer::builder()
            .source(StaticSource::new())
            .discover_on_demand(true)
            .build(echo())
            .unwrap();
        for (uri, shown) in [
            ("/api?access_token=S3cret", "/api?***"),
            (
                "http://:8080/api?access_token=S3cret",
                "http://:8080/api?***",
            ),
        ] {
            let req = Request::get(uri).body(String::new()).unwrap();
            let err = lb.clone().oneshot(req).await.unwrap_err();
            assert!(err.is_no_service_in_uri(), "{err}");
            assert_eq!(
                err.to_string(),
                format!("request URI `{shown}` has no host naming a service")
            );
            assert!(!format!("{err:?}").contains("S3cret"), "{err:?}");
        }
        assert!(lb.services().is_empty(), "{:?}", lb.services());
    }

    /// A 20 MiB host name is refused at once with a short error and starts
    /// no discovery. Memory: the one request; time: paused.
    #[tokio::test(start_paused = true)]
    async fn a_huge_host_name_gets_a_short_error() {
        let lb = LoadBalancer::builder()
            .source(StaticSource::new())
            .discover_on_demand(true)
            .build(echo())
            .unwrap();
        let host = "a".repeat(60_000);
        let uri = format!("http://{host}/");
        let err = lb
            .clone()
            .oneshot(Request::get(uri).body(String::new()).unwrap())
            .await
            .unwrap_err();
        assert!(err.is_unknown_service(), "{err}");
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
        assert!(lb.services().is_empty());
        let huge = "h".repeat(20 << 20);
        let err = tower_ribbon::instance::Instance::new("svc", huge, 80).unwrap_err();
        assert!(err.is_invalid_host());
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
    }
}

// ---------------------------------------------------------------------------
// Error messages name their cause and what to do.

mod messages {
    use std::time::Duration;

    use http::{Method, Request, Response};
    use tower::ServiceExt;
    use tower_ribbon::discovery::StaticSource;
    use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
    use tower_ribbon::{BoxError, Error, LoadBalancer};

    async fn message(policy: RetryPolicy, on_demand: bool, method: Method, uri: &str) -> Error {
        let source = StaticSource::new()
            .with_list("user-service", "127.0.0.1:1,127.0.0.1:2")
            .unwrap()
            .with_list("empty-service", "")
            .unwrap();
        let inner = tower::service_fn(|req: Request<String>| async move {
            match req.uri().path() {
                "/hang" => std::future::pending().await,
                "/refuse" => Err(BoxError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
                _ => Ok(Response::new(String::new())),
            }
        });
        let lb = LoadBalancer::builder()
            .source(source)
            .services(["user-service", "empty-service"])
            .discover_on_demand(on_demand)
            .max_services(1)
            .retry(policy.budget(RetryBudgetConfig::unlimited()))
            .build(inner)
            .unwrap();
        assert!(lb.ready_service("user-service").await);
        if on_demand {
            // Takes the one on-demand slot (not idle under paused time), so
            // the next unknown host meets the cap.
            let filler = Request::get("http://filler/").body(String::new()).unwrap();
            let _ = lb.clone().oneshot(filler).await;
        }
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(String::new())
            .unwrap();
        lb.oneshot(request).await.unwrap_err()
    }

    fn has(err: &Error, parts: &[&str]) {
        let text = err.to_string();
        for part in parts {
            assert!(text.contains(part), "`{part}` missing from: {text}");
        }
    }

    /// Paused time; one request each.
    #[tokio::test(start_paused = true)]
    async fn each_message_names_its_cause() {
        let err = message(RetryPolicy::none(), false, Method::GET, "http://nowhere/").await;
        assert!(err.is_unknown_service());
        has(
            &err,
            &[
                "`nowhere`",
                "known services: `empty-service`, `user-service`",
                "discover_on_demand",
            ],
        );

        let err = message(RetryPolicy::none(), true, Method::GET, "http://nowhere/").await;
        has(&err, &["`nowhere`", "max_services"]);

        let err = message(
            RetryPolicy::none(),
            false,
            Method::GET,
            "http://empty-service/",
        )
        .await;
        assert!(err.is_no_instances());
        has(&err, &["`empty-service`", "no UP instance"]);

        let per_try = RetryPolicy::default().per_try_timeout(Duration::from_millis(100));
        let err = message(per_try, false, Method::POST, "http://user-service/hang").await;
        assert!(err.is_timeout());
        has(
            &err,
            &[
                ": the per-try (read) timeout (100ms) fired before the response headers",
                "POST not retried: the request may have reached the server",
            ],
        );

        let deadline = RetryPolicy::default().deadline(Duration::from_millis(150));
        let err = message(deadline, false, Method::GET, "http://user-service/hang").await;
        assert!(err.is_timeout());
        has(&err, &["deadline", "fired"]);

        let twice = RetryPolicy::default().max_next(1);
        let err = message(twice, false, Method::GET, "http://user-service/refuse").await;
        assert_eq!(err.attempts().len(), 2);
        has(&err, &["not retried: no retries left", "2 attempts"]);
    }

    /// The unknown-service error lists at most 10 known services, sorted,
    /// then how many more exist.
    #[tokio::test(start_paused = true)]
    async fn unknown_service_lists_ten_known_services_and_a_count() {
        let mut source = StaticSource::new();
        let names: Vec<String> = (0..13).map(|i| format!("svc-{i:02}")).collect();
        for name in &names {
            source = source.with_list(name, "127.0.0.1:1").unwrap();
        }
        let inner = tower::service_fn(|_: Request<String>| async {
            Ok::<_, BoxError>(Response::new(String::new()))
        });
        let lb = LoadBalancer::builder()
            .source(source)
            .services(names.clone())
            .build(inner)
            .unwrap();
        let request = Request::get("http://nowhere/").body(String::new()).unwrap();
        let err = lb.oneshot(request).await.unwrap_err();
        let listed: Vec<String> = names[..10].iter().map(|n| format!("`{n}`")).collect();
        has(
            &err,
            &[
                &format!("known services: {}, and 3 more", listed.join(", ")),
                "declare it with `Builder::service`, or turn on `Builder::discover_on_demand`",
            ],
        );
    }
}

/// An inner service whose error type is `BoxError` (tower's `Timeout`,
/// `Buffer`, `BoxService`, a `service_fn` returning `BoxError`): a request
/// awaited inside a spawned task (`tokio::spawn`, an axum handler: futures
/// that must be `Send`) compiles and answers through `lb.request(req)` and
/// `lb.clone().send(req)`. (Through `lb.oneshot(req)` it does not compile:
/// tower's `Oneshot` carries its `Service` bound into the auto-trait
/// check, where rustc cannot prove `BoxError: From<Box<dyn Error + '0>>`
/// for every lifetime, rust-lang/rust#64552, as apollographql/router#1570
/// met with tower's `BoxCloneService`; the docs of `request` say so.)
#[tokio::test]
async fn a_spawned_request_over_a_box_error_inner_is_send() {
    let source = StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap();
    let inner = tower::ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .service(tower::service_fn(|_: Request<String>| async {
            Ok::<_, BoxError>(Response::new(String::from("ok")))
        }));
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .build(inner)
        .unwrap();
    let request = || Request::get("http://svc/x").body(String::new()).unwrap();
    let by_ref = lb.clone();
    let req = request();
    let answered = tokio::spawn(async move { by_ref.request(req).await.map(|r| r.status()) });
    assert_eq!(answered.await.unwrap().unwrap(), http::StatusCode::OK);
    let owned = lb.clone();
    let req = request();
    let answered = tokio::spawn(async move { owned.send(req).await.map(|r| r.status()) });
    assert_eq!(answered.await.unwrap().unwrap(), http::StatusCode::OK);
}
