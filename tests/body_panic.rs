//! A response body that panics while it is read fails its attempt, as a
//! body error does: its instance's stats recorded a success before
//! (helper 188: failures 0, success rate 1.0 after the panic). A panic of
//! the caller's own code while it holds a body is no fault of the
//! instance and still ends the attempt as the response said.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::{BoxError, LoadBalancer};

/// `Frames(n)`: `n` frames of "hello"; `Panics`: panics at its first poll.
enum Answer {
    Frames(usize),
    Panics,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Answer::Frames(0) => Poll::Ready(None),
            Answer::Frames(n) => {
                *n -= 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"hello")))))
            }
            Answer::Panics => panic!("the body's decoder failed"),
        }
    }
}

async fn balancer() -> LoadBalancer<
    impl tower::Service<
        Request<()>,
        Response = http::Response<Answer>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send,
> {
    let inner = tower::service_fn(|req: Request<()>| async move {
        let body = if req.uri().path() == "/panics" {
            Answer::Panics
        } else {
            Answer::Frames(2)
        };
        Ok::<_, BoxError>(http::Response::new(body))
    });
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap())
        .service("svc")
        .retry(RetryPolicy::none())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    lb
}

#[tokio::test(start_paused = true)]
async fn a_body_panicking_while_read_fails_its_attempt() {
    let lb = balancer().await;
    let stats = || lb.snapshot("svc").unwrap().endpoints()[0].clone();
    let response = lb
        .request(Request::get("http://svc/panics").body(()).unwrap())
        .await
        .unwrap();
    let read = tokio::spawn(response.into_body().collect()).await;
    assert!(read.is_err_and(|e| e.is_panic()), "the body panicked");
    let e = stats();
    assert_eq!((e.stats().requests(), e.stats().failures()), (1, 1));
    assert_eq!(e.stats().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_callers_panic_while_holding_a_body_is_not_its_instances_failure() {
    let lb = balancer().await;
    let response = lb
        .request(Request::get("http://svc/ok").body(()).unwrap())
        .await
        .unwrap();
    let e = lb.snapshot("svc").unwrap().endpoints()[0].clone();
    let caller = tokio::spawn(async move {
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "hello");
        assert_eq!(e.stats().in_flight(), 1, "the body is still held");
        panic!("the caller's own bug, the body still held");
    })
    .await;
    assert!(caller.is_err_and(|e| e.is_panic()));
    let e = lb.snapshot("svc").unwrap().endpoints()[0].clone();
    assert_eq!((e.stats().requests(), e.stats().failures()), (1, 0));
    assert_eq!(e.stats().in_flight(), 0);
}
