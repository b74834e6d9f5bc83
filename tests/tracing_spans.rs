//! Spans of one retried request, read through a tracing-subscriber layer:
//! one `ribbon.request` span with one `ribbon.attempt` child per attempt,
//! carrying the OpenTelemetry HTTP client attributes with exact values,
//! and a `retrying` event. Real loopback backends: one answers 503, the
//! other 200.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use support::backend::{Backend, Behavior};

#[path = "common/log_capture.rs"]
mod log_capture;

type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    parent: Option<u64>,
    fields: Fields,
    closed: bool,
}

#[derive(Debug, Clone)]
struct EventRec {
    span: Option<u64>,
    fields: Fields,
}

/// Records every span (name, parent, fields as text) and event.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<HashMap<u64, SpanRec>>>,
    events: Arc<Mutex<Vec<EventRec>>>,
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = if let Some(parent) = attrs.parent() {
            Some(parent.into_u64())
        } else if attrs.is_contextual() {
            ctx.current_span().id().map(Id::into_u64)
        } else {
            None
        };
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let rec = SpanRec {
            name: attrs.metadata().name(),
            parent,
            fields,
            closed: false,
        };
        self.spans.lock().unwrap().insert(id.into_u64(), rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(rec) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Visitor(&mut rec.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let span = ctx.event_span(event).map(|s| s.id().into_u64());
        self.events.lock().unwrap().push(EventRec { span, fields });
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Some(rec) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            rec.closed = true;
        }
    }
}

fn fields(pairs: &[(&str, String)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[tokio::test]
async fn one_retried_request_has_one_span_per_attempt_with_otel_fields() {
    log_capture::init();
    let failing = Backend::start_with("failing", Behavior::Status(503))
        .await
        .unwrap();
    let ok = Backend::start("ok").await.unwrap();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let list = format!("{},{}", failing.addr(), ok.addr());
    let source = StaticSource::new()
        .with_list("user-service", &list)
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .retry(RetryPolicy::default().budget(RetryBudgetConfig::unlimited()))
        .build(support::http_client())
        .unwrap();
    assert!(lb.ready_service("user-service").await);

    // Round robin alternates, so the first or the second request starts on
    // the failing instance and is retried on the other; stop there.
    let mut sent = 0;
    while failing.hits() == 0 && sent < 2 {
        let request = http::Request::get("http://user-service/x")
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = lb.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        sent += 1;
    }
    assert_eq!((failing.hits(), ok.hits()), (1, sent));

    let spans = capture.spans.lock().unwrap().clone();
    let requests: Vec<(u64, &SpanRec)> = spans
        .iter()
        .filter(|(_, s)| s.name == "ribbon.request")
        .map(|(id, s)| (*id, s))
        .collect();
    assert_eq!(requests.len(), sent);
    let children = |id: u64| {
        let mut c: Vec<&SpanRec> = spans
            .values()
            .filter(|s| s.name == "ribbon.attempt" && s.parent == Some(id))
            .collect();
        c.sort_by_key(|s| s.fields.get("http.request.resend_count").cloned());
        c
    };
    let (retried, request) = requests
        .iter()
        .find(|(id, _)| children(*id).len() == 2)
        .copied()
        .expect("one request with two attempts");
    for (other, _) in requests.iter().filter(|(id, _)| *id != retried) {
        assert_eq!(children(*other).len(), 1, "the other request: one attempt");
    }
    assert!(spans.values().all(|s| s.closed), "every span closed");

    let id = |b: &Backend| format!("127.0.0.1:{}", b.port());
    assert_eq!(
        request.fields,
        fields(&[
            ("otel.kind", "client".into()),
            ("http.request.method", "GET".into()),
            ("peer.service", "user-service".into()),
            ("ribbon.instance.id", id(&ok)),
            ("ribbon.attempts", "2".into()),
            ("http.response.status_code", "200".into()),
        ])
    );
    let attempts = children(retried);
    let common = |b: &Backend| {
        vec![
            ("otel.kind", "client".to_owned()),
            ("otel.name", "GET".to_owned()),
            ("http.request.method", "GET".to_owned()),
            ("peer.service", "user-service".to_owned()),
            ("server.address", "127.0.0.1".to_owned()),
            ("server.port", b.port().to_string()),
            ("ribbon.instance.id", id(b)),
        ]
    };
    let mut first = common(&failing);
    first.push(("http.response.status_code", "503".into()));
    first.push(("error.type", "503".into()));
    assert_eq!(attempts[0].fields, fields(&first));
    let mut second = common(&ok);
    second.push(("http.response.status_code", "200".into()));
    second.push(("http.request.resend_count", "1".into()));
    assert_eq!(attempts[1].fields, fields(&second));

    let events = capture.events.lock().unwrap().clone();
    let retrying: Vec<&EventRec> = events
        .iter()
        .filter(|e| e.fields.get("message").map(String::as_str) == Some("retrying"))
        .collect();
    assert_eq!(retrying.len(), 1);
    let e = &retrying[0].fields;
    assert_eq!(e["service"], "user-service");
    assert_eq!(e["reason"], "status");
    assert_eq!(e["retry"], "1");
    // The service's first retry line: none left out before it.
    assert_eq!(e["suppressed"], "0");
    assert_eq!(e["instance"], format!("http://{}", id(&failing)));
    // The event belongs to the request's span tree.
    let parent = retrying[0].span.expect("inside a span");
    assert!(parent == retried || spans[&parent].parent == Some(retried));
}

#[tokio::test]
async fn an_unknown_service_is_an_event_and_a_counter() {
    log_capture::init();
    use metrics_util::debugging::DebuggingRecorder;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);

    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:1")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(support::http_client())
        .unwrap();
    let request = http::Request::get("http://nowhere/x")
        .body(http_body_util::Empty::new())
        .unwrap();
    let err = lb.oneshot(request).await.unwrap_err();
    assert!(err.is_unknown_service());
    let text = err.to_string();
    assert!(text.contains("known services: `user-service`"), "{text}");
    assert!(text.contains("discover_on_demand"), "{text}");

    let counted: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => {
                Some((key.key().name().to_owned(), n))
            }
            _ => None,
        })
        .collect();
    assert_eq!(counted, [("ribbon_unknown_service_total".to_owned(), 1)]);
    let events = capture.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].fields["service"], "nowhere");
    assert_eq!(events[0].fields["message"], "request to an unknown service");
}

/// One backend answering 200, and a capture of spans and events set as
/// this thread's subscriber while the guard lives.
async fn backend_and_capture() -> (Backend, Capture, tracing::subscriber::DefaultGuard) {
    log_capture::init();
    let ok = Backend::start("ok").await.unwrap();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (ok, capture, guard)
}

#[tokio::test]
async fn an_extension_method_is_other_in_spans() {
    let (ok, capture, _guard) = backend_and_capture().await;

    let source = StaticSource::new()
        .with_list("user-service", &ok.addr().to_string())
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(support::http_client())
        .unwrap();
    assert!(lb.ready_service("user-service").await);

    // A method the caller made up (here 4 KiB long): neither a span name
    // nor an attribute value may carry it.
    let made_up = format!("MADE-UP-{}", "X".repeat(4096));
    let request = http::Request::builder()
        .method(made_up.as_str())
        .uri("http://user-service/x")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = lb.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ok.hits(), 1);

    let spans = capture.spans.lock().unwrap().clone();
    let of = |name: &str| -> Vec<Fields> {
        spans
            .values()
            .filter(|s| s.name == name)
            .map(|s| s.fields.clone())
            .collect()
    };
    let requests = of("ribbon.request");
    let attempts = of("ribbon.attempt");
    assert_eq!((requests.len(), attempts.len()), (1, 1));
    assert_eq!(requests[0]["http.request.method"], "_OTHER");
    assert_eq!(attempts[0]["http.request.method"], "_OTHER");
    assert_eq!(attempts[0]["otel.name"], "HTTP");
    for fields in requests.iter().chain(&attempts) {
        assert!(
            fields.values().all(|v| !v.contains("MADE-UP")),
            "{fields:?}"
        );
    }
}

/// An instance's id is registry text (Eureka serves ids up to 8 KiB, with
/// whatever characters a registrant sent): span fields carry it as the
/// crate's log events quote it, cut to 128 bytes and with line breaks and
/// bidirectional marks escaped. Before, the spans recorded it as it was,
/// which a JSON or OpenTelemetry exporter passes on (helper 181).
#[tokio::test]
async fn an_instance_id_is_cut_and_escaped_in_span_fields() {
    let (ok, capture, _guard) = backend_and_capture().await;

    let prefix = "evil\r\nINFO forged\u{2028}\u{202e}";
    let id = format!("{prefix}{}", "x".repeat(300));
    let instance = tower_ribbon::Instance::new("user-service", "127.0.0.1", ok.port())
        .unwrap()
        .with_id(id.as_str());
    let source = StaticSource::new().with_instances("user-service", vec![instance]);
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(support::http_client())
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    let request = http::Request::get("http://user-service/x")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = lb.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);

    let want = format!(
        "evil\\r\\nINFO forged\\u{{2028}}\\u{{202e}}{}…",
        "x".repeat(128 - prefix.len())
    );
    let spans = capture.spans.lock().unwrap().clone();
    let ids: Vec<(&str, &str)> = spans
        .values()
        .map(|s| (s.name, s.fields["ribbon.instance.id"].as_str()))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for (name, recorded) in ids {
        assert_eq!(recorded, want, "{name}");
    }
}
