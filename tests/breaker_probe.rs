//! The half-open circuit breaker through the balancer: once the blackout
//! ends exactly one request (the probe) goes to the instance until the
//! probe's result, under the default rule (round robin, which relies on
//! the service's health view) as under availability filtering; and any
//! response to the probe, a long stream's headers included, gives the
//! instance back at once (Ribbon clears the breaker on every response).
//!
//! Before the fix, the view recounted when the blackout ended, found the
//! instance available (probe not yet taken) and turned the health filter
//! off, and taking the probe did not make it recount: a dead instance whose
//! connects hang 2 s got 20 of 40 requests during its probe. And a probe
//! answered 200 with a body that kept streaming kept the breaker half-open
//! until the body ended: 1 of 100 requests over the next 10 s.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::BreakerState;
use tower_ribbon::{BoxError, LoadBalancer};

const A: u16 = 1000;

type Fut =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<String>, BoxError>> + Send>>;

/// A's connects fail after 2 s (a dead host); others answer 200 at once.
#[derive(Clone)]
struct DeadA(Arc<Mutex<Vec<(u16, Instant)>>>);

impl tower::Service<Request<String>> for DeadA {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Fut;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<String>) -> Fut {
        let port = req.uri().port_u16().unwrap();
        self.0.lock().unwrap().push((port, Instant::now()));
        Box::pin(async move {
            if port == A {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return Err::<Response<String>, BoxError>(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )));
            }
            Ok(Response::new(String::new()))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_half_open_instance_takes_only_its_probe() {
    // (port, start time) of every call.
    let calls = Arc::new(Mutex::new(Vec::<(u16, Instant)>::new()));
    let inner = DeadA(Arc::clone(&calls));
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1000,127.0.0.1:1001")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(RetryPolicy::none())
        .read_timeout(None)
        .outlier_detection(OutlierDetection::disabled())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let a = lb.snapshot("svc").unwrap().endpoints()[0].clone();
    assert_eq!(a.instance().port(), A);

    // Three connect failures trip A (blackout 10 s).
    for _ in 0..6 {
        let req = Request::get("http://svc/").body(String::new()).unwrap();
        let _ = lb.clone().oneshot(req).await;
    }
    assert!(matches!(
        a.stats().breaker_state(),
        BreakerState::Open { .. }
    ));
    // While open, A gets nothing.
    calls.lock().unwrap().clear();
    for _ in 0..10 {
        let req = Request::get("http://svc/").body(String::new()).unwrap();
        let _ = lb.clone().oneshot(req).await;
    }
    let open_calls = calls.lock().unwrap().iter().filter(|c| c.0 == A).count();
    assert_eq!(open_calls, 0);

    tokio::time::sleep(Duration::from_secs(11)).await;
    calls.lock().unwrap().clear();
    // 40 requests, one every 10 ms, all inside the first probe's 2 s.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let lb = lb.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            let req = Request::get("http://svc/").body(String::new()).unwrap();
            let _ = lb.oneshot(req).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let to_a = calls.lock().unwrap().iter().filter(|c| c.0 == A).count();
    let total = calls.lock().unwrap().len();
    assert_eq!(
        to_a, 1,
        "half-open A (dead) received {to_a} of {total} requests while its probe was in flight"
    );
}

mod streaming_probe {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};
    use tower_ribbon::rule::AvailabilityFiltering;

    use super::*;

    /// A body that ends at once, or never (a long stream: SSE, a watch).
    struct TestBody(bool);

    impl Body for TestBody {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.0 {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        }
        fn is_end_stream(&self) -> bool {
            !self.0
        }
    }

    /// A's breaker trips; after the blackout its probe is answered `200`
    /// with a body that keeps streaming (or `503`, the control). Then 100
    /// requests: with the 503 probe A takes its share at once (any
    /// response closes the breaker, as Ribbon), with the 200 probe A takes
    /// none until the stream ends.
    async fn after_probe(probe_status: u16) -> (usize, usize, Option<impl Sized>) {
        let calls = Arc::new(Mutex::new(Vec::<u16>::new()));
        let refused = Arc::new(Mutex::new(0u32));
        let (log, left) = (Arc::clone(&calls), Arc::clone(&refused));
        let inner = tower::service_fn(move |req: Request<String>| {
            let (log, left) = (Arc::clone(&log), Arc::clone(&left));
            async move {
                let port = req.uri().port_u16().unwrap();
                log.lock().unwrap().push(port);
                if port == A {
                    let mut l = left.lock().unwrap();
                    *l += 1;
                    if *l <= 3 {
                        return Err::<Response<TestBody>, BoxError>(Box::new(
                            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                        ));
                    }
                    if *l == 4 {
                        // The probe.
                        let mut r = Response::new(TestBody(probe_status == 200));
                        *r.status_mut() = http::StatusCode::from_u16(probe_status).unwrap();
                        return Ok(r);
                    }
                }
                Ok(Response::new(TestBody(false)))
            }
        });
        let source = StaticSource::new()
            .with_list("svc", "127.0.0.1:1000,127.0.0.1:1001,127.0.0.1:1002")
            .unwrap();
        let lb = LoadBalancer::builder()
            .source(source)
            .service("svc")
            .rule(|| AvailabilityFiltering::new(RoundRobin::with_start(0)))
            .retry(RetryPolicy::none())
            .read_timeout(None)
            .outlier_detection(OutlierDetection::disabled())
            .build(inner)
            .unwrap();
        assert!(lb.ready_service("svc").await);
        for _ in 0..9 {
            let req = Request::get("http://svc/").body(String::new()).unwrap();
            let _ = lb.clone().oneshot(req).await;
        }
        let a = lb.snapshot("svc").unwrap().endpoints()[0].clone();
        assert!(matches!(
            a.stats().breaker_state(),
            BreakerState::Open { .. }
        ));
        tokio::time::sleep(Duration::from_secs(11)).await;
        calls.lock().unwrap().clear();
        let mut held = None;
        let mut to_a = 0;
        for i in 0..100 {
            let req = Request::get("http://svc/").body(String::new()).unwrap();
            let resp = lb.clone().oneshot(req).await;
            let last = *calls.lock().unwrap().last().unwrap();
            if last == A {
                to_a += 1;
                if i < 3 && held.is_none() {
                    // The probe's response: the caller keeps reading it.
                    held = Some(resp);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("probe {probe_status}: A got {to_a} of 100");
        (to_a, 100, held)
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_answered_503_restores_the_instance_at_once() {
        let (to_a, total, _held) = after_probe(503).await;
        assert!(to_a >= 30, "A got {to_a} of {total}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_answered_200_with_a_stream_restores_the_instance_too() {
        let (to_a, total, _held) = after_probe(200).await;
        assert!(
            to_a >= 30,
            "A answered its probe 200 (body still streaming) and then got {to_a} of {total} requests over 10 s; \
             a 503 probe gives it its share at once"
        );
    }
}

mod stream_ending_late {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};
    use http_body_util::BodyExt;
    use tokio::sync::oneshot;

    use super::*;
    use tower_ribbon::instance::Endpoint;

    /// A body that ends when its sender says so (a download, an SSE stream).
    struct Gate(Option<oneshot::Receiver<()>>);

    impl Body for Gate {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.0.as_mut() {
                Some(rx) => match Pin::new(rx).poll(cx) {
                    Poll::Ready(_) => {
                        self.0 = None;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Ready(None),
            }
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    use std::future::Future;

    /// A's inner service: the first call is answered with a stream that
    /// ends when `tx` is sent (headers at once), every later call is
    /// refused; and a balancer over A alone (no retries, outlier ejection
    /// on).
    fn stream_then_refused(
        outliers: OutlierDetection,
    ) -> (
        oneshot::Sender<()>,
        LoadBalancer<
            impl tower_ribbon::InnerService<String, Response = Response<Gate>, Error = BoxError>,
        >,
    ) {
        let (tx, rx) = oneshot::channel();
        let gate = Arc::new(Mutex::new(Some(rx)));
        let inner = tower::service_fn(move |req: Request<String>| {
            let gate = Arc::clone(&gate);
            async move {
                assert_eq!(req.uri().port_u16(), Some(A));
                match gate.lock().unwrap().take() {
                    Some(rx) => Ok(Response::new(Gate(Some(rx)))),
                    None => Err::<Response<Gate>, BoxError>(Box::new(std::io::Error::from(
                        std::io::ErrorKind::ConnectionRefused,
                    ))),
                }
            }
        });
        let lb = LoadBalancer::builder()
            .source(
                StaticSource::new()
                    .with_list("svc", "127.0.0.1:1000")
                    .unwrap(),
            )
            .service("svc")
            .rule(|| RoundRobin::with_start(0))
            .retry(RetryPolicy::none())
            .read_timeout(None)
            .outlier_detection(outliers)
            .build(inner)
            .unwrap();
        (tx, lb)
    }

    /// [`stream_then_refused`], then the stream's headers at 0 s and a
    /// refused connect at 1, 2 and 3 s: the gate, the balancer, A and the
    /// open stream.
    async fn stream_then_three_refused(
        outliers: OutlierDetection,
    ) -> (
        oneshot::Sender<()>,
        LoadBalancer<
            impl tower_ribbon::InnerService<String, Response = Response<Gate>, Error = BoxError>,
        >,
        Endpoint,
        Response<tower_ribbon::service::TrackedBody<Gate>>,
    ) {
        let (tx, lb) = stream_then_refused(outliers);
        assert!(lb.ready_service("svc").await);
        let a = lb.snapshot("svc").unwrap().endpoints()[0].clone();
        let get = || Request::get("http://svc/").body(String::new()).unwrap();
        let stream = lb.clone().oneshot(get()).await.unwrap();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(lb.clone().oneshot(get()).await.is_err());
        }
        (tx, lb, a, stream)
    }

    /// As below, for outlier ejection: the stream's end does not zero the
    /// consecutive errors recorded after its headers, so two more refused
    /// connects eject A (5 in a row). Before, the end of the stream reset
    /// the count to 0 and A was not ejected.
    #[tokio::test(start_paused = true)]
    async fn a_stream_ending_after_failures_does_not_reset_the_ejection_count() {
        let (tx, lb, a, stream) = stream_then_three_refused(OutlierDetection::default()).await;
        let get = || Request::get("http://svc/").body(String::new()).unwrap();
        tx.send(()).unwrap();
        stream.into_body().collect().await.unwrap();
        assert_eq!(a.stats().consecutive_server_errors(), 3);
        for _ in 0..2 {
            assert!(lb.clone().oneshot(get()).await.is_err());
        }
        assert_eq!((a.stats().times_ejected(), a.stats().in_flight()), (1, 0));
    }

    /// A stream A answered (headers at 0 s) ends well after A's connects
    /// began failing and tripped its breaker (at 1, 2 and 3 s): the breaker
    /// stays open. The stream's response reset the breaker at its headers,
    /// before those failures; its end is no newer response. Before, the
    /// end of the stream recorded a response again, which closed the
    /// breaker (`Recovered`) and zeroed its count: an instance draining its
    /// streams while refusing connects (a graceful shutdown) was picked
    /// again as each stream ended.
    #[tokio::test(start_paused = true)]
    async fn a_stream_ending_after_failures_does_not_close_the_breaker() {
        let (tx, _lb, a, stream) = stream_then_three_refused(OutlierDetection::disabled()).await;
        let open = BreakerState::Open {
            remaining: Duration::from_secs(10),
        };
        assert_eq!(a.stats().breaker_state(), open);
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(()).unwrap();
        stream.into_body().collect().await.unwrap();
        assert_eq!(a.stats().in_flight(), 0);
        assert_eq!(
            (
                a.stats().breaker_state(),
                a.stats().successive_connection_failures()
            ),
            (
                BreakerState::Open {
                    remaining: Duration::from_secs(9)
                },
                3
            )
        );
    }
}
