//! A request hyper hands back unsent (the connection closed before it was
//! written: hyper-util's `Canceled` on a fresh connection) never reached
//! the server, so even a POST may go to another instance, as after a
//! refused connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tower::ServiceExt;
use tower_ribbon::stats::Outcome;

#[path = "common/never_reached.rs"]
mod never_reached;
use never_reached::{balancer, ok_server, post};

/// Accepts each connection and closes it at once, reading nothing;
/// counts the connections.
async fn closing_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, accepted)
}

/// Ten POSTs over an instance that closes every connection at once and a
/// healthy one (round robin): each reaches the healthy one. Before, the 5
/// whose first attempt went to the closing instance failed with
/// `[OtherError]`, "POST not retried", though hyper had handed them back
/// unsent; 5 of 10 succeeded.
#[tokio::test]
async fn a_post_hyper_never_sent_goes_to_the_next_instance() {
    let (closing, accepted) = closing_server().await;
    let (healthy, served) = ok_server(false).await;
    let lb = balancer(closing, healthy, false).await;
    let mut ok = 0;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        match lb.clone().oneshot(post()).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            Err(err) => {
                outcomes.extend(err.attempts().iter().map(|a| a.outcome));
                eprintln!("{err}");
            }
        }
    }
    assert_eq!((ok, outcomes), (10, Vec::<Outcome>::new()));
    assert_eq!(served.load(Ordering::SeqCst), 10);
    // Every other first attempt goes to the closing instance until its
    // third failure in a row trips its circuit breaker (a connect
    // failure, Ribbon's threshold of 3).
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// A TCP stream whose replies are lost: once a request was written, a read
/// that brings bytes fails with `HostUnreachable`, as Linux reports an
/// established connection whose peer became unreachable (the ICMP error
/// kept as the socket's soft error, returned when the retransmissions give
/// up).
struct LostReplies {
    stream: tokio::net::TcpStream,
    wrote: bool,
}

impl tokio::io::AsyncRead for LostReplies {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let wrote = self.wrote;
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        match polled {
            std::task::Poll::Ready(Ok(())) if wrote && buf.filled().len() > before => {
                std::task::Poll::Ready(Err(std::io::ErrorKind::HostUnreachable.into()))
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for LostReplies {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for LostReplies {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// A POST whose reply is lost on an established connection with
/// `HostUnreachable` (the server answered it) is not retried: that error
/// kind names a connect failure only while connecting. Before, any
/// `HostUnreachable` in the error's chain was a connect failure, so the
/// POST went to the second instance too: both servers handled it (2);
/// now 1, and the one attempt is an `OtherError`.
#[tokio::test]
async fn a_post_whose_reply_is_lost_as_unreachable_is_not_sent_again() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower_ribbon::discovery::StaticSource;
    use tower_ribbon::instance::Instance;
    use tower_ribbon::rule::RoundRobin;

    let (first, served_first) = ok_server(false).await;
    let (second, served_second) = ok_server(false).await;
    let connector = tower::service_fn(|uri: http::Uri| {
        Box::pin(async move {
            let authority = uri.authority().unwrap().as_str().to_owned();
            let stream = tokio::net::TcpStream::connect(authority).await?;
            Ok::<_, std::io::Error>(TokioIo::new(LostReplies {
                stream,
                wrote: false,
            }))
        })
    });
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(connector);
    let svc = never_reached::SVC;
    let lb = tower_ribbon::LoadBalancer::builder()
        .source(StaticSource::new().with_instances(
            svc,
            vec![
                Instance::new(svc, "127.0.0.1", first).unwrap(),
                Instance::new(svc, "127.0.0.1", second).unwrap(),
            ],
        ))
        .service(svc)
        .rule(|| RoundRobin::with_start(0))
        .build(client)
        .unwrap();
    assert!(lb.ready_service(svc).await);
    let err = lb.oneshot(post()).await.unwrap_err();
    let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
    let served = served_first.load(Ordering::SeqCst) + served_second.load(Ordering::SeqCst);
    assert_eq!((served, outcomes), (1, vec![Outcome::OtherError]), "{err}");
}
