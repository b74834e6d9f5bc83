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
