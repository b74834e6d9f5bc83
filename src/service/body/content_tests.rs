//! Which responses have content (`has_content`).

use super::has_content;

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

/// Only bodies that know their end from the framing say they ended before
/// a read: reqwest's (an empty one is its end); any other type, even one
/// empty, is read by its headers (`has_content`).
#[test]
fn only_framing_bodies_end_before_a_read() {
    use super::content::body_framing;
    #[cfg(feature = "reqwest")]
    {
        assert_eq!(
            body_framing(&reqwest::Body::from(bytes::Bytes::new())),
            Some(true)
        );
        assert_eq!(body_framing(&reqwest::Body::from("x")), Some(false));
        // Inside a stacked balancer's tracked body too.
        use super::TrackCompletion;
        let stacked = http::Response::new(reqwest::Body::from("x")).track(None);
        assert_eq!(body_framing(stacked.body()), Some(false));
        let stacked = http::Response::new(reqwest::Body::from(bytes::Bytes::new())).track(None);
        assert_eq!(body_framing(stacked.body()), Some(true));
    }
    assert_eq!(
        body_framing(&http_body_util::Empty::<bytes::Bytes>::new()),
        None
    );
    assert_eq!(body_framing(&()), None);
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
