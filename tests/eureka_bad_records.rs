//! Malformed registrants against the real Eureka server: records Eureka
//! accepts and serves as they were sent (an enabled `securePort` of 0, a
//! host name with a scheme or a space, a port of 70000, both ports 0).
//!
//! They used to refuse every `/apps` and `/apps/delta` payload that held
//! them (`AllRecordsMalformed` as soon as one application's records were
//! all malformed), so one bad registrant of an unrelated application froze
//! the registry's whole local copy: an instance cancelled in Eureka stayed
//! listed for as long as the registrant stayed (after 5 `refresh_now`, 10
//! failures and the cancelled instance still listed). Now only the bad
//! records are skipped, as the Java client does; a registrant whose
//! `securePort` is an enabled 0 is reached on its plain port; and only a
//! payload whose records are all malformed is refused (for `EurekaSource`,
//! the requested application's).
#![cfg(feature = "eureka")]

mod support;

use std::time::{Duration, Instant};

use support::eureka::EurekaFixture;
use tower_ribbon::DiscoveryError;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::wire::{RecordError, WireError};
use tower_ribbon::discovery::eureka::{EurekaRegistry, EurekaSource};

/// `(app, instanceId, hostName, port, securePort)` of each bad registrant;
/// ports are `{"$": n, "@enabled": "true"}`, `None` a disabled 7002.
const BAD: [(&str, &str, &str, u32, Option<u32>); 5] = [
    // Usable on its plain port.
    ("ZEROSEC", "z1", "127.0.0.1", 8080, Some(0)),
    // Usable on neither: skipped.
    ("SCHEME", "s1", "http://10.0.0.9", 8080, None),
    ("SPACE", "sp1", "my host", 8080, None),
    ("BIGPORT", "p1", "10.0.0.9", 70_000, None),
    ("BOTHZERO", "bz", "10.0.0.9", 0, Some(0)),
];

/// Registers a record as given (`POST /apps/{APP}`), which the crate's own
/// `EurekaRegistration` refuses to send.
async fn register_raw(eureka: &EurekaFixture, bad: (&str, &str, &str, u32, Option<u32>)) {
    let (app, id, host, port, secure) = bad;
    let secure = match secure {
        Some(n) => serde_json::json!({"$": n, "@enabled": "true"}),
        None => serde_json::json!({"$": 7002, "@enabled": "false"}),
    };
    let body = serde_json::json!({"instance": {
        "instanceId": id, "hostName": host, "app": app, "ipAddr": "10.0.0.9",
        "vipAddress": app.to_ascii_lowercase(), "status": "UP",
        "port": {"$": port, "@enabled": "true"}, "securePort": secure,
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
    }});
    let resp = reqwest::Client::new()
        .post(format!("{}/apps/{app}", eureka.url()))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&body).expect("json"))
        .send()
        .await
        .expect("register request");
    assert_eq!(resp.status().as_u16(), 204, "Eureka takes {app}/{id}");
}

fn ids(registry: &EurekaRegistry, app: &str) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .instances(app)
        .iter()
        .map(|i| i.id().to_owned())
        .collect();
    ids.sort();
    ids
}

/// What the local copy should show with the bad registrants present: GOOD
/// without the cancelled instance, ZEROSEC over http on its plain port,
/// the others skipped.
fn assert_copy(registry: &EurekaRegistry, a: &str, path: &str) {
    assert_eq!(ids(registry, "GOOD"), [a], "{path}: {:?}", registry.stats());
    let zero: Vec<String> = registry
        .instances("ZEROSEC")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(zero, ["http://127.0.0.1:8080"], "{path}");
    for (app, ..) in &BAD[1..] {
        assert!(ids(registry, app).is_empty(), "{path}: {app} is skipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrants_of_other_apps_do_not_freeze_the_registry_copy() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let a = eureka.register("good", 20001).await;
    let b = eureka.register("good", 20002).await;
    let registry = EurekaRegistry::builder()
        .server_urls(&eureka.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(ids(&registry, "GOOD"), expected, "control");

    for bad in BAD {
        register_raw(&eureka, bad).await;
    }
    eureka.delete("good", &b).await;

    // Delta path: the delta holds b's cancellation and the bad records.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut errors = Vec::new();
    while Instant::now() < deadline {
        if let Err(e) = registry.refresh_now().await {
            errors.push(e.to_string());
        }
        if ids(&registry, "GOOD") == [a.as_str()] && !registry.instances("ZEROSEC").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        errors.is_empty(),
        "{} refreshes failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_copy(&registry, &a, "delta");
    let stats = registry.stats();
    assert_eq!((stats.full_fetches, stats.failures), (1, 0), "{stats:?}");
    assert!(stats.delta_fetches >= 1, "{stats:?}");

    // Full fetch path: a registry started now.
    let fresh = EurekaRegistry::builder()
        .server_urls(&eureka.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    fresh
        .ready()
        .await
        .expect("a full fetch with bad registrants");
    assert_copy(&fresh, &a, "full");
    assert_eq!(fresh.stats().failures, 0, "{:?}", fresh.stats());
}

/// `EurekaSource` (`/apps/{APP}`): the other applications are unaffected,
/// ZEROSEC is reached on its plain port, and an application whose records
/// are all malformed is still a typed decode error (the last good list is
/// kept), not an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_skips_bad_records_and_refuses_an_app_of_only_bad_records() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let a = eureka.register("good", 20001).await;
    for bad in BAD {
        register_raw(&eureka, bad).await;
    }
    let source = EurekaSource::builder()
        .server_urls(&eureka.url())
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let good = source.fetch("good").await.expect("GOOD");
    assert_eq!(
        good.iter().map(|i| i.id()).collect::<Vec<_>>(),
        [a.as_str()]
    );
    let zero = source.fetch("zerosec").await.expect("ZEROSEC");
    assert_eq!(zero.len(), 1);
    assert_eq!(zero[0].to_string(), "http://127.0.0.1:8080");
    assert!(!zero[0].is_secure());
    for (app, first) in [
        ("scheme", RecordError::BadHost),
        ("space", RecordError::BadHost),
        ("bigport", RecordError::BadPort),
        ("bothzero", RecordError::PortZero),
    ] {
        let err = source.fetch(app).await.expect_err(app);
        let wire = match &err {
            DiscoveryError::Decode { source, .. } => Some(source),
            _ => None,
        };
        assert!(
            matches!(wire, Some(WireError::AllRecordsMalformed { records: 1, first: f }) if *f == first),
            "{app}: {err:?}"
        );
    }
}

// Decoder level: the same rules on payloads built by hand, including a
// numeric `instanceId`, which the real server turns into a string.

/// `/apps` (or `/apps/delta`) with a GOOD application of one record and a
/// ZERO application holding `zero`.
fn two_apps(zero: &str) -> String {
    format!(
        r#"{{"applications": {{"versions__delta": "1", "apps__hashcode": "UP_2_", "application": [
            {{"name": "GOOD", "instance": [{{"instanceId": "a", "hostName": "10.0.0.1", "status": "UP",
                "port": {{"$": 1001, "@enabled": "true"}}, "actionType": "DELETED"}}]}},
            {{"name": "ZERO", "instance": [{zero}]}}]}}}}"#
    )
}

/// One application whose only record is malformed no longer refuses the
/// payload: that record is skipped with its reason (and id, so a delta
/// can still count and delete it), the other applications are kept.
#[test]
fn one_malformed_application_does_not_refuse_the_payload() {
    use tower_ribbon::discovery::eureka::wire::parse_applications;
    let record = |fields: &str| {
        format!(r#"{{"instanceId": "z1", "status": "UP", "actionType": "ADDED", {fields}}}"#)
    };
    let cases = [
        (
            record(r#""hostName": "10.0.0.9", "port": {"$": 0, "@enabled": "true"}"#),
            RecordError::PortZero,
        ),
        (
            record(r#""hostName": "http://10.0.0.9", "port": 8080"#),
            RecordError::BadHost,
        ),
        (
            record(r#""hostName": "my host", "port": 8080"#),
            RecordError::BadHost,
        ),
        (
            record(r#""hostName": "10.0.0.9", "port": {"$": 70000, "@enabled": "true"}"#),
            RecordError::BadPort,
        ),
        (
            r#"{"instanceId": 7, "hostName": "10.0.0.9", "port": 8080}"#.to_owned(),
            RecordError::WrongType,
        ),
    ];
    for (zero, reason) in cases {
        let apps = parse_applications(two_apps(&zero).as_bytes())
            .unwrap_or_else(|e| panic!("{zero}: refused with {e}"));
        assert_eq!(apps.applications.len(), 2, "{zero}");
        assert_eq!(apps.applications[0].instances.len(), 1, "{zero}");
        let bad = &apps.applications[1];
        assert!(bad.instances.is_empty(), "{zero}");
        assert_eq!(bad.rejected.len(), 1, "{zero}");
        assert_eq!(bad.rejected[0].reason, reason, "{zero}");
    }
}

/// The protection stays at the payload level: a payload whose records are
/// all malformed, over every application, is refused; so is a requested
/// application of only malformed records.
#[test]
fn a_payload_of_only_malformed_records_is_still_refused() {
    use tower_ribbon::discovery::eureka::wire::{parse_application, parse_applications};
    let bad = |id: &str| format!(r#"{{"instanceId": "{id}", "hostName": "h", "port": "9001x"}}"#);
    let apps = format!(
        r#"{{"applications": {{"application": [{{"name": "A", "instance": [{}, {}]}},
            {{"name": "B", "instance": {}}}]}}}}"#,
        bad("a1"),
        bad("a2"),
        bad("b1")
    );
    assert!(matches!(
        parse_applications(apps.as_bytes()),
        Err(WireError::AllRecordsMalformed {
            records: 3,
            first: RecordError::BadPort
        })
    ));
    let app = format!(
        r#"{{"application": {{"name": "A", "instance": [{}]}}}}"#,
        bad("a1")
    );
    assert!(matches!(
        parse_application(app.as_bytes()),
        Err(WireError::AllRecordsMalformed { records: 1, .. })
    ));
}

/// A port that cannot be used leaves the record usable on the other one,
/// whatever the port preference; usable on neither, the record is skipped
/// with the plain port's reason.
#[test]
fn an_unusable_port_falls_back_to_the_other_one() {
    use tower_ribbon::discovery::eureka::wire::{
        ParseOptions, PortPreference, parse_application_with,
    };
    let app = |port: &str, secure: &str| {
        format!(
            r#"{{"application": {{"name": "A", "instance": [
                {{"instanceId": "x", "hostName": "h", "port": {port}, "securePort": {secure}}},
                {{"instanceId": "ok", "hostName": "h", "port": 1}}]}}}}"#
        )
    };
    let on = |n: &str| format!(r#"{{"$": {n}, "@enabled": "true"}}"#);
    for preference in [PortPreference::Secure, PortPreference::Plain] {
        let options = ParseOptions::default().with_port_preference(preference);
        let url = |port: &str, secure: &str| {
            let parsed = parse_application_with(app(port, secure).as_bytes(), options)
                .unwrap_or_else(|e| panic!("{port} {secure}: {e}"));
            match parsed.instances.first() {
                Some(i) if i.instance.id() == "x" => Ok(i.instance.to_string()),
                _ => Err(parsed.rejected.first().map(|r| r.reason)),
            }
        };
        assert_eq!(url(&on("8080"), &on("0")), Ok("http://h:8080".to_owned()));
        assert_eq!(
            url(&on("8080"), &on("\"x\"")),
            Ok("http://h:8080".to_owned())
        );
        assert_eq!(url(&on("0"), &on("8443")), Ok("https://h:8443".to_owned()));
        assert_eq!(
            url(&on("70000"), &on("8443")),
            Ok("https://h:8443".to_owned())
        );
        assert_eq!(url(&on("0"), &on("0")), Err(Some(RecordError::PortZero)));
        assert_eq!(url(&on("70000"), &on("0")), Err(Some(RecordError::BadPort)));
    }
}

/// The crate's own registration cannot register such a record: an
/// enabled secure port 0 is refused at `build`, as port 0 is.
#[test]
fn registration_refuses_secure_port_zero() {
    use tower_ribbon::discovery::eureka::EurekaRegistration;
    use tower_ribbon::error::BuildError;
    let build = |secure: u16| {
        EurekaRegistration::builder("zero", "127.0.0.1", 8080)
            .server_urls("http://127.0.0.1:1/eureka")
            .secure_port(secure)
            .build()
    };
    match build(0) {
        Err(BuildError::Invalid(_)) => {}
        Err(other) => panic!("secure_port(0): {other:?}"),
        Ok(_) => panic!("secure_port(0) was accepted"),
    }
    assert!(build(8443).is_ok());
}

/// Host names no resolver takes (an empty label, the root alone, a label
/// of 64 bytes) are skipped as bad hosts, as a space or a scheme is: they
/// were listed, and every pick of one was a failed attempt. So is a name
/// ending in a number, which resolvers read as another IPv4 address than
/// it shows (`010.0.0.1` is 8.0.0.1).
#[test]
fn host_names_no_resolver_takes_are_skipped() {
    use tower_ribbon::discovery::eureka::wire::parse_application;
    let long_label = format!("{}.example", "a".repeat(64));
    for host in ["a..b", ".", ".a", long_label.as_str(), "010.0.0.1", "127.1"] {
        let body = format!(
            r#"{{"application": {{"name": "A", "instance": [
                {{"instanceId": "bad", "hostName": "{host}", "status": "UP", "port": 8080}},
                {{"instanceId": "good", "hostName": "10.0.0.1", "status": "UP", "port": 8080}}]}}}}"#
        );
        let app = parse_application(body.as_bytes()).expect(host);
        let ids: Vec<&str> = app.instances.iter().map(|i| i.instance.id()).collect();
        assert_eq!(ids, ["good"], "{host}");
        let rejected: Vec<_> = app
            .rejected
            .iter()
            .map(|r| (r.id.as_deref(), r.reason))
            .collect();
        assert_eq!(rejected, [(Some("bad"), RecordError::BadHost)], "{host}");
    }
}
