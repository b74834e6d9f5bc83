//! Which responses have content (`has_content`).

use super::content::has_content;

fn with_length(length: &str) -> http::Response<()> {
    http::Response::builder()
        .header(http::header::CONTENT_LENGTH, length)
        .body(())
        .unwrap()
}

/// A response whose `Content-Length` is zero, written `0`, `00` or
/// `000`, has no content, so its attempt ends at the headers; `00`
/// kept it in flight while the caller held the response. Other values
/// (and none) have content until the body says it ended.
#[test]
fn a_zero_length_however_written_has_no_content() {
    for zero in ["0", "00", "000"] {
        assert!(!has_content(&with_length(zero)), "{zero}");
    }
    for some in ["1", "10", "01", "x", ""] {
        assert!(has_content(&with_length(some)), "{some:?}");
    }
    let no_length = http::Response::new(());
    assert!(has_content(&no_length));
    let mut no_content = http::Response::new(());
    *no_content.status_mut() = http::StatusCode::NO_CONTENT;
    assert!(!has_content(&no_content));
}

/// A `Content-Length` of equal zeros in a list (`0, 0`, `0,0`, `00 , 0`:
/// duplicate fields a proxy merged, RFC 9110 §8.6) has no content, as
/// hyper reads it (`content_length_parse_all_values`: the body is empty):
/// its attempt ends at the headers. It stayed in flight on its instance
/// while the caller held the response unread: **3 list forms of zero:
/// 0 recognised → 3**.
#[test]
fn a_list_of_zero_lengths_has_no_content() {
    for zero in ["0, 0", "0,0", "00 , 0"] {
        assert!(!has_content(&with_length(zero)), "{zero}");
    }
}

/// Only bodies that know their end from the framing decide by it: reqwest's
/// (an empty one is its end; one with bytes under a 204 is open, its first
/// frame read ahead and kept for the caller), also under stacked
/// balancers at any depth; any other type, even one empty, is read by its
/// headers (`has_content`).
#[test]
fn only_framing_bodies_decide_by_their_framing() {
    use super::content::ended_with_headers;
    fn with_status<B>(body: B, status: u16) -> http::Response<B> {
        let mut response = http::Response::new(body);
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response
    }
    #[cfg(feature = "reqwest")]
    {
        use super::TrackCompletion;
        use http_body_util::BodyExt;
        let mut empty = with_status(reqwest::Body::from(bytes::Bytes::new()), 200);
        assert!(ended_with_headers(&mut empty).ended);
        let mut x = with_status(reqwest::Body::from("x"), 200);
        let framing = ended_with_headers(&mut x);
        assert!(!framing.ended && framing.peeked.is_none() && framing.known);
        // A 204 whose body still has bytes, all received: read ahead, the
        // frame kept, and ended (nothing follows it).
        let mut x = with_status(reqwest::Body::from("x"), 204);
        let framing = ended_with_headers(&mut x);
        assert!(framing.ended && framing.peeked.is_some());
        // Three balancers stacked: each takes the first one's verdict, and
        // the caller reads the frame the first one read ahead.
        let stacked = with_status(reqwest::Body::from("x"), 204)
            .track(None)
            .track(None)
            .track(None);
        let mut again = stacked;
        assert!(ended_with_headers(&mut again).ended);
        let read = ready_now(again.into_body().collect());
        assert_eq!(
            read.ok().map(|c| c.to_bytes()),
            Some(bytes::Bytes::from("x"))
        );
        let mut stacked = with_status(reqwest::Body::from(bytes::Bytes::new()), 200)
            .track(None)
            .track(None);
        assert!(ended_with_headers(&mut stacked).ended);
    }
    let mut empty = with_status(http_body_util::Empty::<bytes::Bytes>::new(), 200);
    assert!(!ended_with_headers(&mut empty).ended);
    let mut empty = with_status(http_body_util::Empty::<bytes::Bytes>::new(), 204);
    assert!(ended_with_headers(&mut empty).ended);
    assert!(ended_with_headers(&mut with_status((), 304)).ended);
    assert!(!ended_with_headers(&mut with_status((), 200)).ended);
}

/// Polls a future that needs no waker until it is ready.
#[cfg(feature = "reqwest")]
fn ready_now<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1_000 {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("not ready after 1 000 polls");
}

/// A `Transfer-Encoding` beside a `Content-Length` of 0 has content: the
/// encoding overrides the length (RFC 9112 §6.3), and hyper reads the
/// body as chunked. It counted as ended with its headers, so a stream
/// sent so was out of the in-flight count while read (helper 130).
#[test]
fn a_transfer_encoding_overrides_a_zero_length() {
    let response = http::Response::builder()
        .header(http::header::CONTENT_LENGTH, "0")
        .header(http::header::TRANSFER_ENCODING, "chunked")
        .body(())
        .unwrap();
    assert!(has_content(&response));
    let mut no_content = response;
    *no_content.status_mut() = http::StatusCode::NO_CONTENT;
    assert!(!has_content(&no_content));
}
