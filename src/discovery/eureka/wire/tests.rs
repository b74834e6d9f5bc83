use super::*;

fn port(json: &str, default_enabled: bool) -> Result<(u16, bool), RecordError> {
    let port: raw::Port<'_> = serde_json::from_str(json).unwrap();
    convert::read_port(&port, default_enabled)
}

#[test]
fn port_encodings() {
    assert_eq!(
        port(r#"{"$": 8080, "@enabled": "true"}"#, false),
        Ok((8080, true))
    );
    assert_eq!(
        port(r#"{"$": "8081", "@enabled": true}"#, false),
        Ok((8081, true))
    );
    assert_eq!(
        port(r#"{"$": 443, "@enabled": "false"}"#, true),
        Ok((443, false))
    );
    assert_eq!(port(r#"{"$": 80}"#, true), Ok((80, true)));
    assert_eq!(port(r#"" 81 ""#, true), Ok((81, true)));
    assert_eq!(port(r#"{"$": 70000}"#, true), Err(RecordError::BadPort));
    assert_eq!(port(r#"{"$": -1}"#, true), Err(RecordError::BadPort));
    assert_eq!(port(r#"{"$": "9001x"}"#, true), Err(RecordError::BadPort));
    assert_eq!(
        port(r#"{"$": 0, "@enabled": "true"}"#, true),
        Err(RecordError::PortZero)
    );
    assert_eq!(
        port(r#"{"$": 0, "@enabled": "false"}"#, true),
        Ok((0, false))
    );
    assert_eq!(
        port(r#"{"$": 8080, "@enabled": "yes"}"#, true),
        Err(RecordError::BadEnabled)
    );
    assert_eq!(
        port(r#"{"@enabled": "true"}"#, true),
        Err(RecordError::BadPort)
    );
    assert_eq!(port("[1]", true), Err(RecordError::BadPort));
}

#[test]
fn bad_records_are_rejected_not_fatal() {
    let body = br#"{"application": {"name": "A", "instance": [
        {"instanceId": "ok", "hostName": "h", "status": "UP", "port": {"$": 1}},
        {"instanceId": "noport", "hostName": "h", "status": "UP", "port": {"$": 1, "@enabled": "false"}},
        {"instanceId": "badhost", "hostName": "a b", "status": "UP", "port": {"$": 1}},
        {"instanceId": "nohost", "status": "UP", "port": {"$": 1}},
        {"instanceId": 7, "hostName": "h"},
        "not an object", 42, null
    ]}}"#;
    let app = parse_application(body).unwrap();
    assert_eq!(app.instances.len(), 1);
    assert_eq!(app.instances[0].instance.id(), "ok");
    let reasons: Vec<RecordError> = app.rejected.iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        [
            RecordError::NoEnabledPort,
            RecordError::BadHost,
            RecordError::NoHost,
            RecordError::WrongType,
        ]
    );
    assert_eq!(app.rejected[0].id.as_deref(), Some("noport"));
    assert_eq!(app.rejected[0].raw_status.as_deref(), Some("UP"));
}

/// A record whose preferred host field is an address of no one host
/// (`0.0.0.0`, `::`, multicast) uses its other field (helper 194: an
/// `ipAddr` of `0.0.0.0` beside a good `hostName` was refused under
/// `prefer_ip_address`); a malformed field still refuses the record.
#[test]
fn a_preferred_address_of_no_one_host_falls_back_to_the_other_field() {
    let body = br#"{"application": {"name": "A", "instance": [
        {"instanceId": "zero-ip", "hostName": "good.host", "ipAddr": "0.0.0.0", "status": "UP", "port": {"$": 1}},
        {"instanceId": "zero-name", "hostName": "::", "ipAddr": "10.0.0.7", "status": "UP", "port": {"$": 1}},
        {"instanceId": "bad-name", "hostName": "a b", "ipAddr": "10.0.0.8", "status": "UP", "port": {"$": 1}},
        {"instanceId": "neither", "hostName": "224.0.0.1", "ipAddr": "0.0.0.0", "status": "UP", "port": {"$": 1}},
        {"instanceId": "bracket-v4", "hostName": "good.host", "ipAddr": "[0.0.0.0]", "status": "UP", "port": {"$": 1}},
        {"instanceId": "zone-v4", "hostName": "good.host", "ipAddr": "0.0.0.0%eth0", "status": "UP", "port": {"$": 1}}
    ]}}"#;
    // `[0.0.0.0]` and `0.0.0.0%eth0` are malformed, not addresses of no
    // one host: no fallback (helper 195).
    for (prefer_ip_address, hosts, rejected) in [
        (
            true,
            vec!["good.host", "10.0.0.7", "10.0.0.8"],
            vec!["neither", "bracket-v4", "zone-v4"],
        ),
        (
            false,
            vec!["good.host", "10.0.0.7", "good.host", "good.host"],
            vec!["bad-name", "neither"],
        ),
    ] {
        let options = ParseOptions {
            prefer_ip_address,
            ..ParseOptions::default()
        };
        let app = parse_application_with(body, options).unwrap();
        let got: Vec<&str> = app.instances.iter().map(|i| i.instance.host()).collect();
        assert_eq!(got, hosts, "prefer_ip_address {prefer_ip_address}");
        let refused: Vec<&str> = app.rejected.iter().filter_map(|r| r.id.as_deref()).collect();
        assert_eq!(refused, rejected, "prefer_ip_address {prefer_ip_address}");
        assert!(app.rejected.iter().all(|r| r.reason == RecordError::BadHost));
    }
}

#[test]
fn structural_errors() {
    assert!(matches!(
        parse_application(b""),
        Err(WireError::Truncated { .. })
    ));
    assert!(matches!(
        parse_application(b"{\"application\": {\"name\""),
        Err(WireError::Truncated { .. })
    ));
    assert!(matches!(
        parse_application(b"<html>502</html>"),
        Err(WireError::Syntax { .. })
    ));
    assert!(
        parse_application(b"<html>502</html>")
            .unwrap_err()
            .to_string()
            .contains("not Eureka JSON")
    );
    assert!(matches!(
        parse_application(b"{}"),
        Err(WireError::NoRoot { key: "application" })
    ));
    assert!(matches!(
        parse_application(b"{\"application\": 5}"),
        Err(WireError::Malformed { .. })
    ));
    assert!(matches!(
        parse_applications(b"{\"applications\": []}"),
        Err(WireError::Malformed { .. })
    ));
    assert!(matches!(
        parse_applications(b"{\"applications\": {\"garbage\": 1}}"),
        Err(WireError::NotRegistry)
    ));
    assert!(matches!(
        parse_application(b"{\"application\": {\"name\": \"A\"}} trailing"),
        Err(WireError::Syntax { .. })
    ));
    let empty = parse_application(br#"{"application": {"name": "A"}}"#).unwrap();
    assert!(empty.instances.is_empty());
    let empty = parse_application(br#"{"application": {"name": "A", "instance": []}}"#).unwrap();
    assert!(empty.instances.is_empty() && empty.rejected.is_empty());
}

/// `{"application":{"garbage":true}}` and records that are all malformed
/// are not "no instances".
#[test]
fn shape_errors() {
    assert!(matches!(
        parse_application(br#"{"application": {"garbage": true}}"#),
        Err(WireError::NoName)
    ));
    let bad_ports = br#"{"application": {"name": "A", "instance": [
        {"instanceId": "a", "hostName": "h", "port": {"$": "9001x"}},
        {"instanceId": "b", "hostName": "h", "port": {"$": "9001x"}},
        {"instanceId": "c", "hostName": "h", "port": {"$": "9001x"}}]}}"#;
    assert!(matches!(
        parse_application(bad_ports),
        Err(WireError::AllRecordsMalformed {
            records: 3,
            first: RecordError::BadPort
        })
    ));
    // Well-formed records without an enabled port are valid Eureka: an
    // application with nothing to route to, not garbage.
    let disabled = br#"{"application": {"name": "A", "instance": [
        {"instanceId": "a", "hostName": "h", "port": {"$": 1, "@enabled": false}}]}}"#;
    assert_eq!(parse_application(disabled).unwrap().rejected.len(), 1);
    // The same rules inside `applications`.
    let apps =
        br#"{"applications": {"apps__hashcode": "UP_1_", "application": [{"garbage": true}]}}"#;
    assert!(matches!(parse_applications(apps), Err(WireError::NoName)));
}

#[test]
fn element_budget_and_deadline() {
    let zeros = format!(
        r#"{{"application": {{"name": "A", "instance": [{}0]}}}}"#,
        "0,".repeat(1000)
    );
    let options = ParseOptions::default().with_max_instances(100);
    assert!(matches!(
        parse_application_with(zeros.as_bytes(), options),
        Err(WireError::TooManyInstances { limit: 100 })
    ));
    let past = Instant::now();
    assert!(matches!(
        decode_application(zeros.as_bytes(), ParseOptions::default(), Some(past)),
        Err(WireError::Deadline)
    ));
}

#[test]
fn port_preference() {
    let both = br#"{"application": {"name": "A", "instance": {"instanceId": "a", "hostName": "h",
        "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 8443, "@enabled": "true"}}}}"#;
    let secure = parse_application(both).unwrap();
    assert_eq!(secure.instances[0].instance.to_string(), "https://h:8443");
    let plain = parse_application_with(
        both,
        ParseOptions::default().with_port_preference(PortPreference::Plain),
    )
    .unwrap();
    assert_eq!(plain.instances[0].instance.to_string(), "http://h:8080");
}

#[test]
fn escaped_strings_and_name_after_instances() {
    let body = br#"{"application": {"instance": [{"instanceId": "a\u0041", "hostName": "h",
        "port": 1, "metadata": {"k\"ey": "v\n", "@class": "x", "n": 5, "o": {"x": 1}}}],
        "name": "LATE"}}"#;
    let app = parse_application(body).unwrap();
    assert_eq!(app.name, "LATE");
    let i = &app.instances[0].instance;
    assert_eq!(i.id(), "aA");
    assert_eq!(i.service_id(), "LATE");
    let meta: Vec<(&str, &str)> = i
        .metadata()
        .iter()
        .map(|(k, v)| (k, v.as_str()))
        .collect();
    assert_eq!(meta, [("k\"ey", "v\n"), ("n", "5")]);
}

/// A number beyond `f64` or a lone surrogate escape in one record (valid
/// JSON grammar, refused by `serde_json`) costs that value, not the
/// payload: before, each of these `/apps` payloads was refused whole
/// (`Syntax`), so no application's update was taken.
#[test]
fn a_value_serde_json_cannot_hold_costs_that_value_not_the_payload() {
    let record = |id: &str, port: &str, meta: &str| {
        format!(
            r#"{{"instanceId":"{id}","hostName":"10.0.0.1","app":"A","status":"UP","port":{port},"metadata":{meta}}}"#
        )
    };
    let payload = |bad: String| {
        format!(
            r#"{{"applications":{{"application":[{{"name":"A","instance":[{bad},{}]}},{{"name":"B","instance":{}}}]}}}}"#,
            record("a2", "8081", "{}"),
            record("b1", "8080", "{}").replace(r#""A""#, r#""B""#)
        )
    };
    let cases = [
        // A port out of range reads as `null`: the record is skipped as
        // one with port 70000 (or with no port) is.
        (record("a1", r#"{"$":1e400,"@enabled":"true"}"#, "{}"), Err(RecordError::BadPort)),
        (record("a1", "-1e400", "{}"), Err(RecordError::NoEnabledPort)),
        (record("a1", "8080", r#"{"weight":1e400,"k":"v"}"#), Ok(vec![("k", "v")])),
        (record("a1", "8080", r#"{"hint":"x\ud800","\udc00":"v"}"#), Ok(vec![("hint", "x\u{fffd}"), ("\u{fffd}", "v")])),
    ];
    for (bad, metadata) in cases {
        let apps = parse_applications(payload(bad.clone()).as_bytes())
            .unwrap_or_else(|e| panic!("{bad}: {e}"));
        let ids = |app: &Application| -> Vec<String> {
            app.instances.iter().map(|i| i.instance.id().to_owned()).collect()
        };
        assert_eq!(ids(&apps.applications[1]), ["b1"], "{bad}");
        match metadata {
            Err(reason) => {
                assert_eq!(ids(&apps.applications[0]), ["a2"], "{bad}");
                assert_eq!(apps.applications[0].rejected[0].reason, reason);
            }
            Ok(want) => {
                assert_eq!(ids(&apps.applications[0]), ["a1", "a2"], "{bad}");
                let got: Vec<(&str, &str)> = (apps.applications[0].instances[0].instance.metadata().iter())
                    .map(|(k, v)| (k, v.as_str()))
                    .collect();
                let mut want = want;
                want.sort();
                assert_eq!(got, want, "{bad}");
            }
        }
    }
    // The single-application path too (`GET /apps/{APP}`).
    let app = format!(
        r#"{{"application":{{"name":"A","instance":[{},{}]}}}}"#,
        record("a1", "1e400", "{}"),
        record("a2", "8081", r#"{"k":"\udbff"}"#)
    );
    let app = parse_application(app.as_bytes()).expect("one usable record");
    assert_eq!(app.instances.len(), 1);
    assert_eq!(app.instances[0].instance.metadata()["k"], "\u{fffd}");
    // Still refused: a body that is not JSON, with or without such values.
    assert!(matches!(
        parse_applications(br#"{"applications": 1e400 x}"#),
        Err(WireError::Syntax { .. })
    ));
}

/// A malformed payload's error, its chain of sources and its `Debug` stay
/// short whatever text the payload carried: the JSON decoder's message
/// quotes an unexpected string whole (`invalid type: string "…"`), and
/// it was kept as the error's source. A 2.3 MB string where the envelope
/// wants an object: chain 2 359 425 bytes, `Debug` 2 883 724 before; now
/// 564 and 702.
#[test]
fn a_malformed_payload_quotes_a_bounded_message() {
    let big = "x\\u001b\\n".repeat(1 << 18);
    let body = format!(r#"{{"application": "{big}"}}"#);
    let e = parse_application(body.as_bytes()).unwrap_err();
    let WireError::Malformed { line, column, .. } = e else {
        panic!("{e}");
    };
    assert_eq!((line, column), (1, 2_359_314));
    let mut chain = e.to_string();
    let mut next = std::error::Error::source(&e);
    while let Some(source) = next {
        chain.push_str(": ");
        chain.push_str(&source.to_string());
        next = source.source();
    }
    let debug = format!("{e:?}");
    assert!(chain.contains("invalid type: string"), "{chain}");
    assert!(!chain.chars().chain(debug.chars()).any(char::is_control));
    assert_eq!((chain.len(), debug.len()), (564, 702));
}
