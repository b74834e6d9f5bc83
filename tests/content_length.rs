//! A caller's `Content-Length` that its body contradicts is the caller's
//! error, found before any attempt: no instance is picked or counted and
//! no server sees the request. Before, through hyper-util's client over
//! HTTP/1 a length above the body's made the server wait for the rest (a
//! 5 s read timeout, counted as a connection failure: three such POSTs
//! counted three failures and two successive connection failures over two
//! healthy instances), and over HTTP/2 a length above or below the body's,
//! or one that is no number, made h2's server reset the stream
//! (`PROTOCOL_ERROR`: a failure and a consecutive 5xx of a healthy
//! instance each, so five eject it). Found by this crate's own review of
//! the "caller's request trips healthy instances" class (stop 44).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use tower_ribbon::retry::ReplayBody;

#[path = "common/broken_upload.rs"]
mod broken_upload;
// Its `post` has no `Content-Length` to vary.
#[allow(dead_code)]
#[path = "common/never_reached.rs"]
mod never_reached;
use broken_upload::expect_untouched;
use never_reached::{SVC, balancer, ok_server};

/// A POST of `body` declaring `lengths` as its `Content-Length` fields.
fn post(lengths: &[&str], body: &'static str) -> Request<Full<Bytes>> {
    let mut request = Request::post("http://svc/orders")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    for length in lengths {
        request
            .headers_mut()
            .append(http::header::CONTENT_LENGTH, length.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn a_length_the_body_contradicts_is_the_callers_error() {
    for h2 in [false, true] {
        let (a, served_a) = ok_server(h2).await;
        let (b, served_b) = ok_server(h2).await;
        let lb = balancer(a, b, h2).await;
        for lengths in [&["100"][..], &["3"], &["abc"], &["10", "11"], &["-10"]] {
            let err = lb
                .request(post(lengths, "0123456789"))
                .await
                .expect_err("refused");
            assert!(err.is_invalid_request(), "h2 {h2} {lengths:?}: {err}");
            assert_eq!((err.instance(), err.attempts().len()), (None, 0));
            assert!(
                err.to_string()
                    .starts_with("service `svc`: the request's content-length `"),
                "{err}"
            );
        }
        assert_eq!(
            (
                served_a.load(Ordering::SeqCst),
                served_b.load(Ordering::SeqCst)
            ),
            (0, 0)
        );
        expect_untouched(&lb.snapshot(SVC).unwrap());
        // A length the body has, given once or twice, and none at all.
        for lengths in [&["10"][..], &["10", "10"], &[]] {
            let response = lb.request(post(lengths, "0123456789")).await.unwrap();
            assert_eq!(response.status(), 200, "h2 {h2} {lengths:?}");
        }
        assert_eq!(
            served_a.load(Ordering::SeqCst) + served_b.load(Ordering::SeqCst),
            3
        );
    }
}

/// The error text quotes the caller's value escaped and cut (a 4 KiB
/// value with a tab gives a line under 300 bytes).
#[tokio::test]
async fn the_error_quotes_the_value_escaped_and_cut() {
    let (a, _) = ok_server(false).await;
    let (b, _) = ok_server(false).await;
    let lb = balancer(a, b, false).await;
    let long = format!("1\t{}", "7".repeat(4096));
    let err = lb.request(post(&[&long], "x")).await.expect_err("refused");
    let text = err.to_string();
    assert!(text.len() < 300, "{}", text.len());
    assert!(text.contains("`1\\t777"), "{text}");
    assert!(!text.contains('\t'), "{text}");
}

/// A buffered `ReplayBody` reports its length and is checked; a streamed
/// one cannot be (its length is unknown until it ends) and is sent.
#[tokio::test]
async fn a_buffered_replay_body_is_checked() {
    let (a, _) = ok_server(false).await;
    let (b, _) = ok_server(false).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<ReplayBody<Full<Bytes>>>();
    let lb = tower_ribbon::LoadBalancer::builder()
        .source(tower_ribbon::discovery::StaticSource::new().with_instances(
            SVC,
            vec![
                tower_ribbon::instance::Instance::new(SVC, "127.0.0.1", a).unwrap(),
                tower_ribbon::instance::Instance::new(SVC, "127.0.0.1", b).unwrap(),
            ],
        ))
        .service(SVC)
        .build(client)
        .unwrap();
    let request = Request::post("http://svc/orders")
        .header(http::header::CONTENT_LENGTH, "5")
        .body(ReplayBody::from_bytes(Bytes::from_static(b"0123456789")))
        .unwrap();
    let err = lb.request(request).await.expect_err("refused");
    assert!(err.is_invalid_request(), "{err}");
    let request = Request::post("http://svc/orders")
        .header(http::header::CONTENT_LENGTH, "10")
        .body(ReplayBody::streaming(Full::new(Bytes::from_static(
            b"0123456789",
        ))))
        .unwrap();
    assert_eq!(lb.request(request).await.unwrap().status(), 200);
}

/// Through `ReqwestService`: a `reqwest::Body` holding bytes reports its
/// length, so the same request is refused before any attempt.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn through_reqwest_too() {
    let (a, served) = ok_server(false).await;
    let lb = tower_ribbon::LoadBalancer::builder()
        .source(tower_ribbon::discovery::StaticSource::new().with_instances(
            SVC,
            vec![tower_ribbon::instance::Instance::new(SVC, "127.0.0.1", a).unwrap()],
        ))
        .service(SVC)
        .build(tower_ribbon::ReqwestService::default())
        .unwrap();
    let request = Request::post("http://svc/orders")
        .header(http::header::CONTENT_LENGTH, "100")
        .body(reqwest::Body::from("0123456789"))
        .unwrap();
    let err = lb.request(request).await.expect_err("refused");
    assert!(err.is_invalid_request(), "{err}");
    assert_eq!(err.attempts().len(), 0);
    assert_eq!(served.load(Ordering::SeqCst), 0);
    expect_untouched(&lb.snapshot(SVC).unwrap());
}

/// A stream of `frames` (its length unknown until it ends), not
/// replayable; with `reports_end`, `is_end_stream` is true once the last
/// frame is out (as most bodies do: hyper then sends that frame as the
/// last, short or not).
struct Chunks(std::collections::VecDeque<&'static str>, bool);

impl Chunks {
    fn new(frames: &[&'static str]) -> Self {
        Self(frames.iter().copied().collect(), false)
    }

    fn reporting_end(frames: &[&'static str]) -> Self {
        Self(frames.iter().copied().collect(), true)
    }
}

/// What a [`Chunks`] frame poll gives: never an error.
type Polled = std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>>;

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Polled {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|s| Ok(http_body::Frame::data(Bytes::from_static(s.as_bytes())))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.1 && self.0.is_empty()
    }
}

impl tower_ribbon::retry::TryCloneBody for Chunks {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

/// A POST of `body` declaring `length`.
fn streamed<B>(length: &str, body: B) -> Request<B> {
    Request::post("http://svc/orders")
        .header(http::header::CONTENT_LENGTH, length)
        .body(body)
        .unwrap()
}

/// Round robin over `a` and `b` through hyper-util's client for bodies `B`.
async fn stream_balancer<B>(
    a: u16,
    b: u16,
    h2: bool,
) -> tower_ribbon::LoadBalancer<tower_ribbon::service::HttpClient<B>>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(h2)
        .build_http::<B>();
    never_reached::round_robin(&[a, b], client, |b| b).await
}

/// A `ReplayBody::streaming` body checks the declared length as it is
/// sent: short of it, past it, over HTTP/1 and h2c, the request fails as
/// the caller's (`RequestError`), once, counted against no instance.
/// Before: over HTTP/1 a short stream was an `OtherError` of the instance
/// (the server waited for the rest) and a long one was cut at the length
/// and answered 200 (the server read a truncated upload as whole); over
/// h2c the server reset both (`PROTOCOL_ERROR`), an `OtherError` each.
/// Also a stream declaring no one length is refused before any attempt.
/// Peers: [hyperium/hyper#2263](https://github.com/hyperium/hyper/issues/2263)
/// (a streamed request with a `Content-Length` whose body ends early hung
/// until the server closed the connection; hyper now fails it with
/// `BodyWriteAborted`), [jetty/jetty.project#553](https://github.com/jetty/jetty.project/issues/553)
/// (abort the exchange when more or less than the declared length is
/// written, rather than send a truncated body as whole).
#[tokio::test]
async fn a_stream_contradicting_its_length_is_the_callers_error() {
    type Body = ReplayBody<Chunks>;
    for h2 in [false, true] {
        let (a, _) = ok_server(h2).await;
        let (b, _) = ok_server(h2).await;
        let lb = stream_balancer::<Body>(a, b, h2).await;
        for (length, frames) in [
            ("10", &["01234"][..]),
            ("10", &["01234", "5678"]),
            ("10", &["01234", "56789", "a"]),
            ("5", &["01", "23456789"]),
            ("0", &["x"]),
        ] {
            if !h2 && (frames.len() == 3 || length == "0") {
                // hyper's HTTP/1 client stops reading a body at its
                // length: the frame past it is never polled, and the
                // server reads the declared bytes, whole (as for any
                // body: hyper cuts it there).
                let response = lb
                    .request(streamed(length, ReplayBody::streaming(Chunks::new(frames))))
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                continue;
            }
            broken_upload::expect_request_errors(1, || {
                lb.request(streamed(length, ReplayBody::streaming(Chunks::new(frames))))
            })
            .await;
            let err = lb
                .request(streamed(length, ReplayBody::streaming(Chunks::new(frames))))
                .await
                .expect_err("refused");
            let mut chain = String::new();
            let mut next = std::error::Error::source(&err);
            while let Some(e) = next {
                chain.push_str(&format!("{e}: "));
                next = e.source();
            }
            // hyper's HTTP/2 client resets the stream (INTERNAL_ERROR)
            // and keeps no body error, as for any failing upload.
            assert!(
                chain.contains("content-length") != h2,
                "h2 {h2} {length} {frames:?}: {chain}"
            );
        }
        expect_untouched(&lb.snapshot(SVC).unwrap());
        for length in ["abc", "-1", ""] {
            let err = lb
                .request(streamed(length, ReplayBody::streaming(Chunks::new(&["x"]))))
                .await
                .expect_err("refused");
            assert!(err.is_invalid_request(), "h2 {h2} {length:?}: {err}");
            assert_eq!(err.attempts().len(), 0);
        }
        let mut twice = streamed("1", ReplayBody::streaming(Chunks::new(&["x"])));
        twice
            .headers_mut()
            .append(http::header::CONTENT_LENGTH, "2".parse().unwrap());
        assert!(lb.request(twice).await.unwrap_err().is_invalid_request());
        // The length the stream has, in one frame or several, and a
        // stream declaring none.
        for (length, frames) in [("10", &["0123456789"][..]), ("10", &["01234", "", "56789"])] {
            let response = lb
                .request(streamed(length, ReplayBody::streaming(Chunks::new(frames))))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "h2 {h2} {frames:?}");
        }
        let response = lb
            .request(
                Request::post("http://svc/orders")
                    .body(ReplayBody::streaming(Chunks::new(&["01234"])))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        expect_untouched(&lb.snapshot(SVC).unwrap());
    }
}

/// Any other stream over HTTP/1: hyper's client fails a body ending short
/// of its `Content-Length` (`BodyWriteAborted`), read as the caller's
/// error. Before: an `OtherError` of the instance each (a failure and a
/// consecutive error of a healthy instance).
#[tokio::test]
async fn any_stream_short_of_its_length_over_http1_is_the_callers_error() {
    let (a, _) = ok_server(false).await;
    let (b, _) = ok_server(false).await;
    let lb = stream_balancer::<Chunks>(a, b, false).await;
    broken_upload::expect_request_errors(6, || {
        lb.request(streamed("10", Chunks::new(&["01", "234"])))
    })
    .await;
    expect_untouched(&lb.snapshot(SVC).unwrap());
    let response = lb
        .request(streamed("5", Chunks::new(&["01", "234"])))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A boxed stream reporting its end with its last frame, short of its
/// `Content-Length`, over HTTP/1 (found by helper 111): hyper sent it short
/// as the whole body and the server waited for the rest, so each request
/// was a read timeout of a healthy instance (5 s each here, counted).
/// Boxed again so that it does not report its end early, it now fails as
/// the caller's error at once. Also a `ReplayBody` of such a stream.
#[tokio::test]
async fn a_boxed_stream_reporting_its_end_short_of_its_length_is_the_callers_error() {
    use http_body_util::BodyExt;
    type Boxed = http_body_util::combinators::BoxBody<Bytes, Infallible>;
    let (a, _) = ok_server(false).await;
    let (b, _) = ok_server(false).await;
    let lb = stream_balancer::<Boxed>(a, b, false).await;
    let started = std::time::Instant::now();
    broken_upload::expect_request_errors(4, || {
        lb.request(streamed(
            "10",
            Chunks::reporting_end(&["01", "234"]).boxed(),
        ))
    })
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    expect_untouched(&lb.snapshot(SVC).unwrap());
    // The length it has, reporting its end with the last frame.
    for frames in [&["01", "234"][..], &["01234"]] {
        let response = lb
            .request(streamed("5", Chunks::reporting_end(frames).boxed()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{frames:?}");
    }
    let (c, _) = ok_server(false).await;
    let (d, _) = ok_server(false).await;
    let lb = stream_balancer::<ReplayBody<Chunks>>(c, d, false).await;
    broken_upload::expect_request_errors(2, || {
        lb.request(streamed(
            "10",
            ReplayBody::streaming(Chunks::reporting_end(&["01", "234"])),
        ))
    })
    .await;
    expect_untouched(&lb.snapshot(SVC).unwrap());
}

/// A streamed `reqwest::Body` through `ReqwestService`, over HTTP/1 and
/// h2c (found by helper 112): short of its length and reporting its end,
/// past it, or crossing it in one frame. Before: over HTTP/1 a 5 s read
/// timeout of a healthy instance each (the body sent short as whole);
/// over h2c the server's reset, an `OtherError` each (ten ejected one of
/// two healthy instances). Now wrapped again, it fails as the caller's.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_streamed_reqwest_body_contradicting_its_length_is_the_callers_error() {
    use tower_ribbon::ReqwestService;
    for h2 in [false, true] {
        let (a, _) = ok_server(h2).await;
        let (b, _) = ok_server(h2).await;
        let service = if h2 {
            let client = reqwest::Client::builder()
                .http2_prior_knowledge()
                .retry(reqwest::retry::never())
                .build()
                .unwrap();
            ReqwestService::new(client).http2_only(true)
        } else {
            ReqwestService::default()
        };
        let lb = never_reached::round_robin(&[a, b], service, |b| b).await;
        let started = std::time::Instant::now();
        for (length, body) in [
            ("10", Chunks::reporting_end(&["01", "234"])),
            ("10", Chunks::new(&["01", "234"])),
            ("5", Chunks::new(&["01", "23456789"])),
        ] {
            let frames: Vec<_> = body.0.iter().copied().collect();
            let cell = std::sync::Mutex::new(Some(body));
            broken_upload::expect_request_errors(1, || {
                let body = cell.lock().unwrap().take().expect("sent once");
                lb.request(streamed(length, reqwest::Body::wrap(body)))
            })
            .await;
            assert!(
                started.elapsed() < std::time::Duration::from_secs(4),
                "h2 {h2} {length} {frames:?}"
            );
        }
        if h2 {
            // Past the length in a later frame: hyper's HTTP/1 client stops
            // at the length and never asks for it; over h2c it fails.
            broken_upload::expect_request_errors(1, || {
                lb.request(streamed(
                    "10",
                    reqwest::Body::wrap(Chunks::new(&["01234", "56789", "a"])),
                ))
            })
            .await;
        }
        expect_untouched(&lb.snapshot(SVC).unwrap());
        let response = lb
            .request(streamed(
                "5",
                reqwest::Body::wrap(Chunks::reporting_end(&["01", "234"])),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "h2 {h2}");
    }
}
