//! Registrant text in the crate's logs, against the real Eureka server.
//!
//! Eureka takes an app name holding CR/LF (`POST /apps/EVIL%0D%0A...`,
//! upper-cased and served as it was sent) and a 1 MiB `instanceId`. A
//! record the decoder skips (here a port of 70 000) is named in one
//! warning per payload, with its app name and id: the app name was
//! written raw, so any registrant could forge a log line in every client
//! at every fetch, and the id whole (a 1 MiB warning every fetch). Both
//! are now cut and escaped as the crate's errors quote outside text.
#![cfg(feature = "eureka")]

mod support;

#[path = "common/log_capture.rs"]
mod log_capture;

use support::eureka::EurekaFixture;
use tower_ribbon::discovery::eureka::wire;

/// `wire::MAX_INSTANCE_ID_BYTES`, written out so the test builds against
/// the code before the bound.
const MAX_ID: usize = 8 * 1024;

/// An app name with a forged log line after CR/LF.
const EVIL_APP: &str = "EVIL\r\n2026-12-02T10:00:00.000000Z  INFO FORGED: all instances healthy";

/// Registers an instance of `app` (sent as written, percent-encoded in the
/// path; VIP address `vip`) with `id`, `host` and `port` by a raw `POST /apps/{app}`, as any
/// registrant may; Eureka takes it (204).
async fn register_raw(
    client: &reqwest::Client,
    eureka: &EurekaFixture,
    (app, vip): (&str, &str),
    id: &str,
    host: &str,
    port: u32,
) {
    let body = serde_json::json!({"instance": {
        "instanceId": id, "hostName": host, "app": app, "ipAddr": host,
        "vipAddress": vip, "status": "UP",
        "port": {"$": port, "@enabled": "true"},
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
    }});
    let path = percent_encoding::utf8_percent_encode(app, percent_encoding::NON_ALPHANUMERIC);
    let resp = client
        .post(format!("{}/apps/{path}", eureka.url()))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&body).expect("json"))
        .send()
        .await
        .expect("register request");
    assert_eq!(resp.status().as_u16(), 204, "Eureka takes the registrant");
}

#[tokio::test]
async fn a_skipped_registrants_name_and_id_cannot_forge_or_flood_log_lines() {
    log_capture::init();
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let id = "L".repeat(1 << 20);
    let client = reqwest::Client::new();
    register_raw(
        &client,
        &eureka,
        (EVIL_APP, "evil"),
        &id,
        "10.0.0.9",
        70_000,
    )
    .await;
    // A well-formed registrant of another app, so the payload is not
    // refused as all malformed.
    let good = eureka.register("good-app", 18_080).await;
    let payload = client
        .get(format!("{}/apps", eureka.url()))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("GET /apps")
        .bytes()
        .await
        .expect("body");
    assert!(payload.len() > 1 << 20, "the server serves the whole id");

    let (guard, captured) = log_capture::capture(tracing::Level::WARN);
    let apps = wire::parse_applications(&payload).expect("one skipped record");
    drop(guard);
    let ids: Vec<&str> = (apps.applications.iter())
        .flat_map(|a| a.instances.iter().map(|i| i.instance.id()))
        .collect();
    assert_eq!(ids, [good.as_str()]);
    let logged = captured.text();
    let lines: Vec<&str> = logged.lines().collect();
    println!("logged {} bytes in {} lines", logged.len(), lines.len());
    assert_eq!(
        lines.len(),
        1,
        "one warning line, nothing forged: {:?}",
        &logged[..logged.len().min(600)]
    );
    assert!(
        lines[0].contains("skipping unusable Eureka instance records"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(
            r"first_app=EVIL\r\n2026-12-02T10:00:00.000000Z  INFO FORGED: ALL INSTANCES HEALTHY"
        ),
        "{}",
        lines[0]
    );
    // The id is cut to 128 bytes and marked, not logged whole.
    assert!(
        lines[0].contains(&format!("first_id={}…", "L".repeat(128))),
        "{}",
        &lines[0][..600.min(lines[0].len())]
    );
    assert!(logged.len() < 1024, "warning of {} bytes", logged.len());
}

/// Eureka takes and serves a usable record whose `instanceId` is 1 MiB
/// (its POST carries the id in the body; only its heartbeats, which carry
/// it in the path, are refused with 400 past Tomcat's 8 KiB, so a
/// registrant that posts again stays listed). Such an instance used to be
/// listed and picked, and every request to it recorded the whole id twice
/// in its spans (`ribbon.instance.id` on the request and the attempt: 2 MiB
/// formatted per request under a `fmt` subscriber, exported as is by
/// OpenTelemetry), and in metrics labels and cookies. Ids longer than
/// `MAX_INSTANCE_ID_BYTES` (8 KiB, past what a lease call can carry) are now
/// skipped as malformed, like an unusable host.
#[tokio::test]
async fn a_registrant_with_an_id_no_heartbeat_can_carry_is_skipped() {
    log_capture::init();
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let long = "L".repeat(1 << 20);
    // `wire::MAX_INSTANCE_ID_BYTES`: an id of exactly that length is kept.
    let edge = "E".repeat(MAX_ID);
    let client = reqwest::Client::new();
    for (id, port) in [(long.as_str(), 18_081), (edge.as_str(), 18_082)] {
        register_raw(
            &client,
            &eureka,
            ("LONG-ID", "long-id"),
            id,
            "127.0.0.1",
            port,
        )
        .await;
    }
    let short = eureka.register("long-id", 18_083).await;
    let source = tower_ribbon::discovery::eureka::EurekaSource::builder()
        .server_url(eureka.url())
        .build()
        .expect("source");
    let app = source.fetch_application("long-id").await.expect("fetch");
    let mut lengths: Vec<usize> = app
        .instances
        .iter()
        .map(|i| i.instance.id().len())
        .collect();
    lengths.sort_unstable();
    assert_eq!(lengths, [short.len(), MAX_ID]);
}
