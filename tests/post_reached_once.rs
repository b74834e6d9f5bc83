//! A POST that reached a server (the server read it whole) and then lost
//! its connection without an answer is never sent again, through
//! hyper-util's client and reqwest, on a fresh connection and on a pooled
//! one (the keep-alive race: the server closes the connection it kept
//! alive once the next request arrived), closed with a FIN or reset; and
//! over HTTP/2, a POST at the last stream id of a GOAWAY carrying an
//! error; and through the crate's HTTPS client, a POST the TLS server
//! read whole then closed (`close_notify` or reset). Each is counted on
//! the server side: read exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;

#[path = "common/goaway_server.rs"]
mod goaway_server;
#[path = "common/never_reached.rs"]
mod never_reached;
use never_reached::{SVC, ok_server, post};

#[path = "support/tls.rs"]
mod tls_support;

/// Reads one HTTP/1 request (headers, then a `content-length` body);
/// false at the end of the stream.
async fn read_request(socket: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body).await.is_ok()
}

/// A server answering the first `answered` requests of each connection
/// with 200 (keep-alive), then reading the next one whole and dropping
/// the connection unanswered (reset with `reset`); counts the requests
/// it read whole.
async fn dropping_server(answered: usize, reset: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let read = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&read);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                for _ in 0..answered {
                    if !read_request(&mut socket).await {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    socket.write_all(ok).await.unwrap();
                }
                if read_request(&mut socket).await {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                if reset {
                    socket.set_zero_linger().unwrap();
                }
                drop(socket);
            });
        }
    });
    (port, read)
}

/// The requests in flight on every instance of `lb`'s list.
fn in_flight<S>(lb: &LoadBalancer<S>) -> usize {
    let snapshot = lb.snapshot(SVC).unwrap();
    snapshot
        .endpoints()
        .iter()
        .map(|e| e.stats().in_flight())
        .sum()
}

fn instances(first: u16, second: u16) -> StaticSource {
    StaticSource::new().with_instances(
        SVC,
        vec![
            Instance::new(SVC, "127.0.0.1", first).unwrap(),
            Instance::new(SVC, "127.0.0.1", second).unwrap(),
        ],
    )
}

/// Round robin over `first` then `second`, through hyper-util's client
/// (`reqwest` false) or reqwest.
async fn outcomes(first: u16, second: u16, answered: usize, reqwest: bool) -> Vec<Outcome> {
    let builder = LoadBalancer::builder()
        .source(instances(first, second))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0));
    // `answered` POSTs to the dropping instance (and as many to the other
    // one, round robin), then the one it drops.
    let mut last = None;
    if reqwest {
        let lb = builder
            .build(tower_ribbon::ReqwestService::new(reqwest::Client::new()))
            .unwrap();
        assert!(lb.ready_service(SVC).await);
        for _ in 0..=2 * answered {
            let req = http::Request::post("http://svc/orders")
                .body(reqwest::Body::from("one order"))
                .unwrap();
            last = Some(lb.clone().oneshot(req).await.map(|_| ()));
        }
        assert_eq!(in_flight(&lb), 0);
    } else {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let lb = builder.build(client).unwrap();
        assert!(lb.ready_service(SVC).await);
        for _ in 0..=2 * answered {
            last = Some(lb.clone().oneshot(post()).await.map(|_| ()));
        }
        assert_eq!(in_flight(&lb), 0);
    }
    let err = last.unwrap().expect_err("dropped");
    err.attempts().iter().map(|a| a.outcome).collect()
}

/// Every client, connection (fresh or pooled) and close (FIN or reset):
/// the dropped POST was read once by its server, never by the other one
/// (which answered only the POSTs round robin gave it), and failed with
/// one `OtherError` attempt.
#[tokio::test]
async fn a_post_read_whole_then_dropped_is_never_sent_again() {
    for reqwest in [false, true] {
        for answered in [0, 1] {
            for reset in [false, true] {
                let (dropping, read) = dropping_server(answered, reset).await;
                let (healthy, served) = ok_server(false).await;
                let got = outcomes(dropping, healthy, answered, reqwest).await;
                let case = format!("reqwest {reqwest}, answered {answered}, reset {reset}");
                assert_eq!(got, [Outcome::OtherError], "{case}");
                assert_eq!(read.load(Ordering::SeqCst), answered + 1, "{case}");
                assert_eq!(served.load(Ordering::SeqCst), answered, "{case}");
            }
        }
    }
}

/// A GOAWAY naming stream 1, the POST's, as the last processed, with the
/// error `reason`, then the connection closed.
async fn failing_away_server(reason: u8) -> (u16, Arc<AtomicUsize>) {
    goaway_server::goaway_server(1, reason, true).await
}

/// A POST at the last stream id of a GOAWAY carrying an error (PROTOCOL,
/// INTERNAL, REFUSED_STREAM as a connection error, ENHANCE_YOUR_CALM) may
/// have been processed: one `OtherError` attempt, never sent to the
/// other instance (h2 fails it with the connection's closing, not with
/// the remote GOAWAY, which fails only the streams above the last id).
#[tokio::test]
async fn a_post_at_an_error_goaway_last_stream_id_is_never_sent_again() {
    for reason in [1u8, 2, 7, 11] {
        let (going_away, got) = failing_away_server(reason).await;
        let (healthy, served) = ok_server(true).await;
        let lb = never_reached::balancer(going_away, healthy, true).await;
        let err = lb.clone().oneshot(post()).await.expect_err("closed");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [Outcome::OtherError], "reason {reason}: {err:?}");
        assert_eq!(got.load(Ordering::SeqCst), 1, "reason {reason}");
        assert_eq!(served.load(Ordering::SeqCst), 0, "reason {reason}");
        assert_eq!(in_flight(&lb), 0, "reason {reason}");
    }
}

/// A TLS server (HTTP/1) that reads each request whole and drops the
/// connection unanswered: after a `close_notify`, or reset with `reset`;
/// counts the requests it read whole.
async fn tls_dropping_server(pki: &tls_support::Pki, reset: bool) -> (u16, Arc<AtomicUsize>) {
    let config = tls_support::server_config(pki, vec![b"http/1.1".to_vec()], false);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let read = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&read);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (seen, acceptor) = (Arc::clone(&seen), acceptor.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                if read_request(&mut tls).await {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                if reset {
                    tls.get_ref().0.set_zero_linger().unwrap();
                } else {
                    let _ = tls.shutdown().await;
                }
                drop(tls);
            });
        }
    });
    (port, read)
}

/// Through the crate's HTTPS client: a POST the TLS server read whole,
/// then closed with `close_notify` or reset, fails once (`OtherError`),
/// read once, never sent to the other instance.
#[tokio::test]
async fn a_post_read_whole_over_tls_then_dropped_is_never_sent_again() {
    let pki = tls_support::pki();
    for reset in [false, true] {
        let (dropping, read) = tls_dropping_server(&pki, reset).await;
        let (healthy, served) = ok_server(false).await;
        let client = tower_ribbon::tls::HttpsClient::builder()
            .http2(false)
            .webpki_roots(false)
            .add_root_pem(pki.ca_pem.as_bytes())
            .unwrap()
            .build()
            .unwrap();
        let source = StaticSource::new().with_instances(
            SVC,
            vec![
                Instance::new(SVC, "127.0.0.1", dropping)
                    .unwrap()
                    .with_secure(true),
                Instance::new(SVC, "127.0.0.1", healthy).unwrap(),
            ],
        );
        let lb = LoadBalancer::builder()
            .source(source)
            .service(SVC)
            .rule(|| RoundRobin::with_start(0))
            .build(client)
            .unwrap();
        assert!(lb.ready_service(SVC).await);
        let err = lb.clone().oneshot(post()).await.expect_err("dropped");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [Outcome::OtherError], "reset {reset}: {err:?}");
        assert_eq!(read.load(Ordering::SeqCst), 1, "reset {reset}");
        assert_eq!(served.load(Ordering::SeqCst), 0, "reset {reset}");
        assert_eq!(in_flight(&lb), 0, "reset {reset}");
    }
}
