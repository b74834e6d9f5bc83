//! What a registration refuses at `build`, because the real Eureka server
//! would take it and then not serve it back (an attacker's findings).
//!
//! - The instance id (and app name) is percent-encoded into every lease
//!   URL, and Tomcat's 8 KiB request header limit counts the request line:
//!   an id of 8 192 plain bytes, the most the builder took, or 1 400 `é`
//!   (8 400 bytes encoded) registered, then every heartbeat was answered
//!   400, which never registers again, and the running service was evicted
//!   for good. An id at the new bound (`MAX_LEASE_PATH_BYTES` for the
//!   longest call, the status call to OUT_OF_SERVICE) renews and drains
//!   against the real server. The id as a path segment of every heartbeat:
//!   [spring-cloud-netflix#4121](https://github.com/spring-cloud/spring-cloud-netflix/issues/4121)
//!   (heartbeats answered 400 for an id's characters).
//! - Eureka writes metadata keys as XML element names and values as their
//!   text in its XML registry (`GET /apps/`, one document for every app):
//!   an empty key gave `<>empty key</>` and a NUL `a&#x0;b`, and the whole
//!   document, every app's records, was malformed for every XML reader.
//!   Keys are element names: [spring-cloud-netflix#751](https://github.com/spring-cloud/spring-cloud-netflix/issues/751)
//!   (`system_version` served as `<system__version>`); one instance's
//!   metadata failing every reader's whole fetch:
//!   [eureka#856](https://github.com/Netflix/eureka/issues/856).
#![cfg(feature = "eureka")]

mod support;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{
    EurekaRegistration, EurekaRegistrationBuilder, MAX_LEASE_PATH_BYTES,
};
use tower_ribbon::error::BuildError;

const URL: &str = "http://127.0.0.1:1/eureka";

/// What the longest lease call adds around the id, for the app `app` and
/// a server path of `/eureka`:
/// `/eureka/apps/{APP}/{id}/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=`
/// and 19 digits.
fn around_id(app: &str) -> usize {
    format!("/eureka/apps/{app}//status?value=OUT_OF_SERVICE&lastDirtyTimestamp=").len() + 19
}

fn builder(app: &str, url: &str) -> EurekaRegistrationBuilder {
    EurekaRegistration::builder(app, "127.0.0.1", 19_911)
        .server_urls(url)
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1_800))
}

/// The refused setting's key and reason.
fn refused(built: Result<EurekaRegistration, BuildError>) -> (String, String) {
    match built {
        Err(BuildError::Invalid(setting)) => {
            (setting.key().to_owned(), setting.reason().to_owned())
        }
        other => panic!("expected BuildError::Invalid, got {other:?}"),
    }
}

/// An id of exactly `encoded` bytes once percent-encoded, with `é`s in it.
fn id_of(encoded: usize) -> String {
    format!("{}{}", "é".repeat(100), "a".repeat(encoded - 600))
}

#[test]
fn ids_the_server_cannot_renew_are_refused_at_build() {
    let limit = MAX_LEASE_PATH_BYTES.to_string();
    // The attacker's two ids: 8 192 plain bytes, 1 400 `é` (8 400 encoded).
    let (key, reason) = refused(
        builder("long-id", URL)
            .instance_id("a".repeat(8_192))
            .build(),
    );
    assert_eq!(key, "instance id");
    assert!(
        reason.contains("8192 bytes once percent-encoded") && reason.contains(&limit),
        "{reason}"
    );
    let (key, reason) = refused(
        builder("long-id", URL)
            .instance_id("é".repeat(1_400))
            .build(),
    );
    assert_eq!(key, "instance id");
    assert!(
        reason.contains("8400 bytes once percent-encoded (2800 raw"),
        "{reason}"
    );
    assert!(reason.contains(&limit), "{reason}");
    // Exactly at the bound builds; one byte more does not.
    let room = MAX_LEASE_PATH_BYTES - around_id("LONG-ID");
    assert!(
        builder("long-id", URL)
            .instance_id(id_of(room))
            .build()
            .is_ok()
    );
    let (key, reason) = refused(builder("long-id", URL).instance_id(id_of(room + 1)).build());
    assert_eq!(key, "instance id");
    assert!(reason.contains(&format!("at most {room}")), "{reason}");
    // The longest server path counts, whichever server it is.
    let two = format!("{URL},http://127.0.0.1:2/a/longer/path/eureka/");
    assert!(
        builder("long-id", &two)
            .instance_id(id_of(room))
            .build()
            .is_err()
    );
    // An app name that leaves no room, or with the default id.
    let app = "A".repeat(MAX_LEASE_PATH_BYTES);
    let (key, reason) = refused(builder(&app, URL).instance_id("i").build());
    assert_eq!(key, "app name");
    assert!(reason.contains(&limit), "{reason}");
    let app = "A".repeat(MAX_LEASE_PATH_BYTES / 2);
    assert_eq!(refused(builder(&app, URL).build()).0, "app name");
}

#[test]
fn metadata_eureka_would_write_as_malformed_xml_is_refused_at_build() {
    for key in [
        "",
        "a b",
        "1x",
        "-x",
        "a:b",
        "<x>",
        "a&b",
        "@class",
        "a\u{0}b",
        "a\r\nFORGED",
    ] {
        let (setting, reason) = refused(builder("meta-keys", URL).metadata(key, "v").build());
        assert_eq!(setting, "metadata", "{key:?}");
        assert!(reason.contains("not an XML name"), "{key:?}: {reason}");
        assert!(!reason.contains('\n') && !reason.contains('\r'), "{reason}");
    }
    for value in ["a\u{0}b", "\u{1b}[31m", "\u{1f}", "\u{FFFF}"] {
        let secret = format!("S3cret{value}");
        let (setting, reason) =
            refused(builder("meta-keys", URL).metadata("token", &secret).build());
        assert_eq!(setting, "metadata");
        assert!(
            reason.contains("`token`") && !reason.contains("S3cret"),
            "{reason}"
        );
    }
    // A long hostile key is quoted cut and escaped.
    let long = format!("a\u{1b}{}", "k".repeat(1 << 16));
    let (_, reason) = refused(builder("meta-keys", URL).metadata(long, "v").build());
    assert!(
        reason.len() < 600 && !reason.contains('\u{1b}'),
        "{}",
        reason.len()
    );
    // XML names and XML text build.
    let ok = builder("meta-keys", URL)
        .metadata("zone", "zone-a")
        .metadata("management.port", "8081")
        .metadata("_a-b.c_d", "tab\tand\nlines\r")
        .metadata("zoné", "\u{7f}é😀")
        .build();
    assert!(ok.is_ok(), "{ok:?}");
}

/// The real server renews, drains and cancels an id at the bound, with
/// `é`s in it, and serves accepted edge metadata as XML without a
/// forbidden character reference.
#[tokio::test]
async fn an_id_at_the_bound_renews_at_the_real_server() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "long-id";
    let room = MAX_LEASE_PATH_BYTES - around_id("LONG-ID");
    let handle = builder(app, &eureka.url())
        .instance_id(id_of(room))
        .metadata("_a-b.c_d", "tab\tand\nlines")
        .metadata("zoné", "\u{7f}é")
        .build()
        .expect("an id at the bound builds")
        .start()
        .await
        .expect("registered");
    handle.renew_now().await.expect("the heartbeat is taken");
    // The longest call, then back.
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("the status call is taken");
    assert_eq!(eureka.statuses(app).await.len(), 1);
    assert_eq!(eureka.statuses(app).await[0].1, "OUT_OF_SERVICE");
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    handle.renew_now().await.expect("renewed");
    let stats = handle.stats();
    assert!(stats.renewals >= 2 && stats.failures == 0, "{stats:?}");
    let xml = reqwest::Client::new()
        .get(format!("{}/apps/", eureka.url()))
        .header("Accept", "application/xml")
        .send()
        .await
        .expect("apps")
        .text()
        .await
        .expect("text");
    // XStream doubles `_` in element names (spring-cloud-netflix#751).
    assert!(
        xml.contains("a-b.c__d>tab"),
        "{}",
        &xml[..xml.len().min(2_000)]
    );
    assert!(!xml.contains("<>"), "empty element name");
    assert!(
        !forbidden_reference(&xml),
        "a character reference XML 1.0 forbids"
    );
    handle.shutdown().await.expect("cancelled");
    assert!(eureka.statuses(app).await.is_empty());
}

/// Whether `xml` holds a character reference to a character XML 1.0
/// forbids (`&#x0;`, `&#1;`, …): a C0 control other than tab, LF or CR.
fn forbidden_reference(xml: &str) -> bool {
    xml.match_indices("&#").any(|(at, _)| {
        let rest = &xml[at + 2..];
        let end = rest.find(';').unwrap_or(0);
        let code = match rest[..end].strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => rest[..end].parse().ok(),
        };
        code.is_some_and(|c| c < 0x20 && !matches!(c, 0x9 | 0xA | 0xD))
    })
}
