//! Unit tests of `service::classify`.

use super::*;

/// Only hyper-util's exact text, with no source, is the refusal; a
/// longer or shorter text, or one with a cause, is not (and is read no
/// further than the constant's length).
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
#[test]
fn the_plain_connectors_scheme_refusal_is_its_exact_text() {
    let exact: BoxError = "invalid URL, scheme is not http".into();
    assert!(is_plain_connector_scheme_refusal(exact.as_ref()));
    for other in [
        "invalid URL, scheme is not https",
        "invalid URL, scheme is not htt",
        "invalid URL, scheme is missing",
        "",
    ] {
        let e: BoxError = other.into();
        assert!(!is_plain_connector_scheme_refusal(e.as_ref()), "{other}");
    }
    let long: BoxError = "x".repeat(1 << 20).into();
    assert!(!is_plain_connector_scheme_refusal(long.as_ref()));
    #[derive(Debug)]
    struct Caused(std::io::Error);
    impl std::fmt::Display for Caused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("invalid URL, scheme is not http")
        }
    }
    impl StdError for Caused {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }
    let caused = Caused(std::io::Error::other("refused"));
    assert!(!is_plain_connector_scheme_refusal(&caused));
}

#[test]
fn statuses() {
    let d = FailureStatuses::default();
    assert_eq!(d.classify_status(Some(200)), Outcome::Success);
    assert_eq!(d.classify_status(Some(404)), Outcome::Success);
    assert_eq!(d.classify_status(Some(429)), Outcome::FailureStatus(429));
    assert_eq!(d.classify_status(Some(503)), Outcome::FailureStatus(503));
    assert_eq!(d.classify_status(None), Outcome::Success);
    let only = FailureStatuses::only([502]);
    assert_eq!(only.classify_status(Some(503)), Outcome::Success);
    assert_eq!(only.classify_status(Some(502)), Outcome::FailureStatus(502));
}

#[cfg(feature = "reqwest")]
#[test]
fn a_request_reqwest_cannot_build_never_reached_a_server() {
    let built = reqwest::Client::new().get("http://[::1").build();
    let err: BoxError = Box::new(built.expect_err("not a URL"));
    assert_eq!(classify_error(&err), Outcome::ConnectFailure);
}

#[test]
fn io_errors() {
    let refused: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(classify_error(&refused), Outcome::ConnectFailure);
    let timeout: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut));
    assert_eq!(classify_error(&timeout), Outcome::ReadTimeout);
    let other: BoxError = "boom".into();
    assert_eq!(classify_error(&other), Outcome::OtherError);
    let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert_eq!(classify_error(&elapsed), Outcome::ReadTimeout);
}
