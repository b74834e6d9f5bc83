//! The Eureka builders refuse at `build()` the settings that make every
//! fetch fail, with `BuildError::Invalid` naming the setting and its range,
//! as `LoadBalancer::builder` does (tests/build_bounds.rs). They used to
//! accept `max_body_bytes(0)` and `max_instances(0)` (every fetch then a
//! TooLarge / TooManyInstances error) and zero timeouts.
#![cfg(feature = "eureka")]

use std::time::Duration;

use tower_ribbon::discovery::eureka::{
    EurekaRegistry, EurekaRegistryBuilder, EurekaSource, EurekaSourceBuilder,
};
use tower_ribbon::error::BuildError;

const URL: &str = "http://127.0.0.1:1/eureka";

/// A change to the builders, the key refused and its reason.
type Case = (
    fn(EurekaSourceBuilder) -> EurekaSourceBuilder,
    fn(EurekaRegistryBuilder) -> EurekaRegistryBuilder,
    &'static str,
    &'static str,
);

fn cases() -> Vec<Case> {
    const ZERO_BOUND: &str = "0 is outside 1..=usize::MAX (every payload would be refused)";
    vec![
        (
            |b| b.max_body_bytes(0),
            |b| b.max_body_bytes(0),
            "eureka max_body_bytes",
            "0 is outside 1..=usize::MAX (no body would be accepted)",
        ),
        (
            |b| b.max_instances(0),
            |b| b.max_instances(0),
            "eureka max_instances",
            ZERO_BOUND,
        ),
        (
            |b| b.max_metadata_entries(0),
            |b| b.max_metadata_entries(0),
            "eureka max_metadata_entries",
            ZERO_BOUND,
        ),
        (
            |b| b.request_timeout(Duration::ZERO),
            |b| b.request_timeout(Duration::ZERO),
            "eureka request_timeout",
            "must be more than zero",
        ),
        (
            |b| b.connect_timeout(Duration::ZERO),
            |b| b.connect_timeout(Duration::ZERO),
            "eureka connect_timeout",
            "must be more than zero",
        ),
    ]
}

fn refused<T>(built: Result<T, BuildError>) -> (String, String) {
    match built {
        Ok(_) => ("built".to_owned(), String::new()),
        Err(e @ BuildError::Invalid(_)) => (e.key().unwrap_or_default().to_owned(), e.to_string()),
        Err(e) => ("not Invalid".to_owned(), e.to_string()),
    }
}

#[tokio::test]
async fn settings_that_make_every_fetch_fail_are_refused_at_build() {
    for (source, registry, key, reason) in cases() {
        let expected = (key.to_owned(), format!("invalid setting `{key}`: {reason}"));
        let got = refused(source(EurekaSource::builder().server_urls(URL)).build());
        assert_eq!(got, expected, "EurekaSource");
        let got = refused(registry(EurekaRegistry::builder().server_urls(URL)).build());
        assert_eq!(got, expected, "EurekaRegistry");
    }
}

#[tokio::test]
async fn the_smallest_values_in_range_build() {
    let one = Duration::from_millis(1);
    EurekaSource::builder()
        .server_urls(URL)
        .max_body_bytes(1)
        .max_instances(1)
        .max_metadata_entries(1)
        .request_timeout(one)
        .connect_timeout(one)
        .build()
        .expect("source");
    EurekaRegistry::builder()
        .server_urls(URL)
        .max_body_bytes(1)
        .max_instances(1)
        .max_metadata_entries(1)
        .request_timeout(one)
        .connect_timeout(one)
        .build()
        .expect("registry");
}

/// A server URL with a 64 KiB scheme is refused with a short error: the
/// URL is quoted (cut to 128 bytes) and so is the scheme the reason names.
#[tokio::test]
async fn a_long_unsupported_scheme_makes_a_short_error() {
    let url = format!("{}://127.0.0.1:1/eureka", "s".repeat(64 * 1024));
    let (key, text) = refused(EurekaSource::builder().server_urls(&url).build());
    assert_eq!(key, "eureka server URL");
    assert!(text.contains("unsupported scheme"), "{text}");
    assert!(text.len() < 400, "an error of {} bytes", text.len());
}
