//! Registered text the real Eureka server takes (`POST /apps/{APP}`
//! answers 204) but cannot serve back, refused at `build` (attack 64c).
//!
//! - An instance id holding `\`: Tomcat decodes `%5C` and refuses a
//!   backslash in a path, so every heartbeat, status call, read-back and
//!   cancel of the instance was answered 400: its drain never landed
//!   (served UP), its `shutdown` failed (served UP for its lease), and a
//!   heartbeat answered 400 never registers again.
//! - An id holding U+FFFE or U+FFFF (no control character, so it passed),
//!   or a health or status page path holding NUL or U+FFFF: Eureka wrote
//!   `&#xfffe;` or `&#x0;` into its XML registry (`GET /apps/`, every
//!   app's records), malformed for every XML reader, as the metadata
//!   checks of `eureka_registration_limits.rs` already prevent.
//!
//! The host and `ip_addr` (also in the home page, health and status URLs)
//! were refused already (`Instance::new`), and the app name takes only
//! letters, digits, `-`, `_` and `.`; their rows are the siblings' guard.
#![cfg(feature = "eureka")]

mod support;

use support::eureka::EurekaFixture;
use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaRegistrationBuilder};
use tower_ribbon::error::BuildError;

const URL: &str = "http://127.0.0.1:1/eureka";

fn builder() -> EurekaRegistrationBuilder {
    EurekaRegistration::builder("hostile", "127.0.0.1", 8080).server_urls(URL)
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

#[test]
fn ids_with_a_backslash_or_a_non_xml_character_are_refused() {
    for (id, shown) in [
        ("CORP\\web01:backslash:20642", "`\\`"),
        ("\\", "`\\`"),
        ("a\u{FFFE}b", "U+FFFE"),
        ("a\u{FFFF}b", "U+FFFF"),
    ] {
        let (key, reason) = refused(builder().instance_id(id).build());
        assert_eq!(key, "instance id", "{id:?}");
        assert!(reason.contains(shown), "{id:?}: {reason}");
    }
    // What stays allowed: `é`, U+FFFD, an emoji, `:` and `@`.
    for id in ["é:hostile:8080", "a\u{FFFD}b", "😀", "host@zone:app:1"] {
        assert!(builder().instance_id(id).build().is_ok(), "{id:?}");
    }
}

#[test]
fn health_and_status_paths_with_a_non_xml_character_are_refused() {
    for path in ["/h\u{0}x", "/h\u{FFFF}", "/h\u{FFFE}", "/h\u{1b}[2J"] {
        let (key, reason) = refused(builder().health_path(path).build());
        assert_eq!(key, "health path", "{path:?}");
        assert!(reason.contains("XML 1.0"), "{path:?}: {reason}");
        let (key, _) = refused(builder().status_path(path).build());
        assert_eq!(key, "status path", "{path:?}");
    }
    for path in [
        "/actuator/health",
        "health?full=true",
        "/é/\u{FFFD}",
        "/a\tb",
    ] {
        assert!(
            builder()
                .health_path(path)
                .status_path(path)
                .build()
                .is_ok(),
            "{path:?}"
        );
    }
}

#[test]
fn hosts_with_a_backslash_or_a_non_xml_character_are_refused() {
    for host in ["CORP\\web01", "a\u{FFFF}b", "a\u{0}b"] {
        assert!(
            EurekaRegistration::builder("hostile", host, 8080)
                .server_urls(URL)
                .build()
                .is_err(),
            "host {host:?}"
        );
        assert!(builder().ip_addr(host).build().is_err(), "ip_addr {host:?}");
    }
}

/// Why a backslash is refused: the real server takes the registration
/// (204), then answers every lease call of the instance 400, the cancel
/// included. Sent raw, as any registrant may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_answers_every_lease_call_of_a_backslash_id_400() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let id = "CORP\\web01:backslash:20642";
    let (key, _) = refused(
        EurekaRegistration::builder("backslash", "127.0.0.1", 20642)
            .server_urls(&eureka.url())
            .instance_id(id)
            .build(),
    );
    assert_eq!(key, "instance id");

    let http = reqwest::Client::new();
    let body = serde_json::json!({"instance": {
        "instanceId": id, "hostName": "127.0.0.1", "app": "BACKSLASH",
        "ipAddr": "127.0.0.1", "vipAddress": "backslash", "status": "UP",
        "port": {"$": 20642, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn",
        },
    }});
    let registered = http
        .post(format!("{}/apps/BACKSLASH", eureka.url()))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status().as_u16(), 204);
    let path = format!(
        "{}/apps/BACKSLASH/CORP%5Cweb01:backslash:20642",
        eureka.url()
    );
    let calls = [
        http.put(format!("{path}?status=UP&lastDirtyTimestamp=1")),
        http.put(format!(
            "{path}/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=1"
        )),
        http.get(&path).header("Accept", "application/json"),
        http.delete(&path),
    ];
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.send().await.expect("lease call").status().as_u16());
    }
    assert_eq!(
        answers,
        [400, 400, 400, 400],
        "heartbeat, drain, read-back, cancel"
    );
    // Served UP, and nothing can cancel it: it expires with its lease.
    assert_eq!(
        eureka.statuses("backslash").await,
        [(id.to_owned(), "UP".to_owned())]
    );
}
