//! Composition property test of the whole request path: seeded random
//! cases of rule (14 rules and wrappers), instance list (0 to 4 instances,
//! zones, weights, DOWN ones, a list change mid-run), retry policy (same
//! and next retries, all operations, per-try timeout, deadline, backoff,
//! `max_retry_after`), hostile requests (URIs without a host or naming no
//! service, unknown methods, forged cookies, hints, `grpc-timeout`s) and
//! hostile answers (every status the policy reads, `Retry-After`,
//! `grpc-status`, `grpc-retry-pushback-ms`, `Content-Length` forms, errors,
//! hangs, slow answers), request bodies buffered or streamed (read by the
//! inner before it answers), with response bodies read, dropped unread, dropped
//! after one frame or held, and requests cancelled at random times, in
//! paused time. Invariants, each checked per case:
//! - no panic, in the request path or any task it starts;
//! - every request ends (with the default 5 s read timeout, no hang);
//! - at most `(1 + max_same) x (1 + max_next)` attempts per request;
//! - a non-idempotent request (POST, PATCH, CONNECT, an unknown method) is
//!   sent at most once unless the policy retries all operations (the inner
//!   answers or fails after the request reached it, so never a connect
//!   failure);
//! - once every request and body is done, every instance's in-flight count
//!   is 0 and its attempt count equals the calls the inner saw for it.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::{ReplayBody, RetryPolicy};
use tower_ribbon::{BoxError, Instance, LoadBalancer};

#[path = "common/rules.rs"]
mod rules;
use rules::build_rule;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static AUTH: Mutex<Vec<String>> = Mutex::new(Vec::new());
static BAD: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PER: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());
static CALLS: AtomicUsize = AtomicUsize::new(0);
static HUNG: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone)]
enum Answer {
    Ok(u16, Vec<(&'static str, &'static str)>, Option<u64>),
    Err,
    Hang,
}

const HEADERS: &[(&str, &[&str])] = &[
    (
        "retry-after",
        &[
            "0",
            "1",
            "-1",
            "99999999999999999999",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "+5",
            "1.5",
            "",
            "120",
        ],
    ),
    (
        "grpc-status",
        &["0", "1", "14", "00", "99", "-1", "4294967296", "", "8"],
    ),
    (
        "grpc-retry-pushback-ms",
        &[
            "0",
            "-1",
            "1500",
            "18446744073709551615",
            "x",
            "99999999999",
        ],
    ),
    (
        "content-type",
        &[
            "application/grpc",
            "text/html",
            "application/grpc+proto",
            "",
        ],
    ),
    ("content-length", &["0", "0, 0", "5", "00"]),
    ("set-cookie", &["sc-lb=127.0.0.1:2", "x=y"]),
    ("grpc-message", &["a b", "%ff%00"]),
];
const REQ_HEADERS: &[(&str, &[&str])] = &[
    (
        "cookie",
        &[
            "sc-lb=127.0.0.1:1",
            "sc-lb=127.0.0.1:9",
            "sc-lb=",
            "sc-lb=a\u{7f}",
            "a=b; sc-lb=[::1]:3",
        ],
    ),
    ("x-hint", &["z1", "z2", "", "nozone"]),
    (
        "grpc-timeout",
        &[
            "1n",
            "99999999H",
            "0m",
            "1S",
            "abc",
            "100000000S",
            "1u",
            "5M",
        ],
    ),
    ("content-type", &["application/grpc", "text/plain"]),
    ("te", &["trailers"]),
    ("x-key", &["a", "b", ""]),
    ("host", &["svc", "other", "svc:1"]),
];
const URIS: &[&str] = &[
    "http://svc/x",
    "http://SVC/x",
    "http://svc:80/x",
    "http://user@svc/x",
    "/relative",
    "http://[::1]/",
    "http://other/",
    "https://svc/x?q=1#f",
    "http://svc",
    "http://svc./x",
    "http://127.0.0.1:1/x",
    "svc:80",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "X",
];

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => (proptest::sample::select(&[200u16, 204, 301, 404, 429, 500, 502, 503, 504][..]),
              proptest::collection::vec((0..HEADERS.len(), 0usize..16), 0..3),
              proptest::option::of(0u64..8000))
            .prop_map(|(s, hs, d)| Answer::Ok(s, hs.into_iter().map(|(i, j)| (HEADERS[i].0, HEADERS[i].1[j % HEADERS[i].1.len()])).collect(), d)),
        1 => Just(Answer::Err),
        1 => Just(Answer::Hang),
    ]
}

/// One request: indexes into `URIS`, `METHODS` and `REQ_HEADERS` (header,
/// value), how its response body is handled (read, dropped unread, dropped
/// after one frame, held 1 s) and when it is cancelled (ms, or never).
type Req = (usize, usize, Vec<(usize, usize)>, u8, Option<u64>);

#[derive(Debug, Clone)]
struct Case {
    rule: u8,
    instances: Vec<(u16, Option<&'static str>, u32, bool)>,
    policy: (u32, u32, bool, Option<u64>, Option<u64>, bool, u64),
    answers: Vec<Answer>,
    requests: Vec<Req>,
    churn: bool,
    /// Request bodies as `ReplayBody::streaming` (else buffered), read by
    /// the inner before it answers.
    streaming: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0u8..14,
        proptest::collection::vec(
            (
                1u16..6,
                proptest::option::of(proptest::sample::select(&["z1", "z2", ""][..])),
                0u32..5,
                any::<bool>(),
            ),
            0..5,
        ),
        (
            0u32..3,
            0u32..3,
            any::<bool>(),
            proptest::option::of(1u64..3000),
            proptest::option::of(1u64..5000),
            any::<bool>(),
            0u64..2000,
        ),
        proptest::collection::vec(answer(), 0..12),
        proptest::collection::vec(
            (
                0..URIS.len(),
                0..METHODS.len(),
                proptest::collection::vec((0..REQ_HEADERS.len(), 0usize..16), 0..4),
                0u8..4,
                proptest::option::of(0u64..4000),
            ),
            1..8,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(rule, instances, policy, answers, requests, churn, streaming)| Case {
                rule,
                instances,
                policy,
                answers,
                requests,
                churn,
                streaming,
            },
        )
}

fn run(c: Case) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let insts = |c: &Case| -> Vec<Instance> {
            c.instances
                .iter()
                .map(|(p, z, w, down)| {
                    let mut i = Instance::new("svc", "127.0.0.1", *p)
                        .unwrap()
                        .with_weight(*w);
                    if let Some(z) = z {
                        i = i.with_zone(*z);
                    }
                    if *down {
                        i = i.with_status(tower_ribbon::InstanceStatus::Down);
                    }
                    i
                })
                .collect()
        };
        let source = StaticSource::new().with_instances("svc", insts(&c));
        let answers = Arc::new(Mutex::new(VecDeque::from(c.answers.clone())));
        let a2 = answers.clone();
        let inner = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
            CALLS.fetch_add(1, Ordering::SeqCst);
            AUTH.lock().unwrap().push(
                req.uri()
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            );
            if let Some(id) = req.headers().get("x-req") {
                PER.lock().unwrap().push((
                    req.method().to_string(),
                    id.to_str().unwrap().parse().unwrap(),
                ));
            }
            let next = a2.lock().unwrap().pop_front();
            async move {
                let _ = req.into_body().collect().await;
                match next {
                    None => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
                    Some(Answer::Err) => {
                        Err::<_, BoxError>(Box::new(std::io::Error::other("boom")))
                    }
                    Some(Answer::Hang) => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    Some(Answer::Ok(s, hs, d)) => {
                        if let Some(d) = d {
                            tokio::time::sleep(Duration::from_millis(d)).await;
                        }
                        let mut b = Response::builder().status(s);
                        for (k, v) in hs {
                            b = b.header(k, v);
                        }
                        Ok(b.body(Full::new(Bytes::from_static(b"body"))).unwrap())
                    }
                }
            }
        });
        let (ms, mn, all, per_try, deadline, budget_backoff, mra) = c.policy;
        let mut policy = RetryPolicy::default()
            .max_same(ms)
            .max_next(mn)
            .retry_on_all_operations(all)
            .retryable_statuses([500, 503, 429])
            .max_retry_after(Duration::from_millis(mra));
        if let Some(p) = per_try {
            policy = policy.per_try_timeout(Duration::from_millis(p));
        }
        if let Some(d) = deadline {
            policy = policy.deadline(Duration::from_millis(d));
        }
        if budget_backoff {
            policy = policy.backoff(Duration::from_millis(10), Duration::from_millis(100));
        }
        let make = build_rule(c.rule);
        let lb = LoadBalancer::builder()
            .source(source.clone())
            .service("svc")
            .rule(make)
            .retry(policy)
            .instance_cookie(Some("sc-lb"))
            .hash_key(tower_ribbon::service::HashKey::header(
                http::HeaderName::from_static("x-key"),
            ))
            .build(inner)
            .unwrap();
        let mut futs = Vec::new();
        for (k, (u, m, hs, mode, cancel)) in c.requests.iter().enumerate() {
            let (mode, cancel) = (*mode, *cancel);
            let mut b = Request::builder()
                .method(METHODS[*m])
                .uri(URIS[*u])
                .header("x-req", k.to_string());
            for (i, j) in hs {
                let (n, vs) = REQ_HEADERS[*i];
                b = b.header(n, vs[j % vs.len()]);
            }
            let body = if c.streaming {
                ReplayBody::streaming(Full::new(Bytes::from_static(b"payload")))
            } else {
                ReplayBody::from_bytes("payload")
            };
            let Ok(req) = b.body(body) else {
                continue;
            };
            let lb = lb.clone();
            futs.push(tokio::task::spawn_local(async move {
                let fut = lb.oneshot(req);
                let answered = match cancel {
                    // Cancelled at a random time (or answered before it).
                    Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), fut).await {
                        Ok(answered) => answered,
                        Err(_) => return,
                    },
                    // Bounded by the default 5 s read timeout per attempt.
                    None => match tokio::time::timeout(Duration::from_secs(3600), fut).await {
                        Ok(answered) => answered,
                        Err(_) => {
                            HUNG.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    },
                };
                if let Ok(resp) = answered {
                    let mut body = resp.into_body();
                    match mode {
                        0 => {
                            let _ = body.collect().await;
                        }
                        1 => drop(body),
                        2 => {
                            let _ = body.frame().await;
                            drop(body);
                        }
                        _ => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            drop(body);
                        }
                    }
                }
            }));
            if c.churn && k == 1 {
                source.set_instances("svc", insts(&c).into_iter().rev().skip(1).collect());
            }
        }
        for f in futs {
            if f.await.is_err() {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        if let Some(snap) = lb.snapshot("svc") {
            let auth = AUTH.lock().unwrap().clone();
            for e in snap.endpoints() {
                let a = e.authority().to_string();
                let sent = auth.iter().filter(|x| **x == a).count() as u64;
                if e.stats().in_flight() != 0 || (!c.churn && e.stats().requests() != sent) {
                    BAD.lock().unwrap().push(format!(
                        "{a}: in_flight {} requests {} sent {}",
                        e.stats().in_flight(),
                        e.stats().requests(),
                        sent
                    ));
                }
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(32),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn hostile_requests_and_answers_never_panic(c in case()) {
        std::panic::set_hook(Box::new(|info| { PANICS.fetch_add(1, Ordering::SeqCst); eprintln!("PANIC {info}"); }));
        let dbg = format!("{c:?}");
        let before = CALLS.load(Ordering::SeqCst);
        PER.lock().unwrap().clear();
        AUTH.lock().unwrap().clear();
        BAD.lock().unwrap().clear();
        let all = c.policy.2;
        let max = c.requests.len() as u32 * (1 + c.policy.0) * (1 + c.policy.1);
        run(c);
        let calls = CALLS.load(Ordering::SeqCst) - before;
        prop_assert!(calls as u32 <= max, "{} calls > {} {}", calls, max, dbg);
        if !all {
            let per = PER.lock().unwrap().clone();
            for (m, id) in &per {
                if ["POST", "PATCH", "CONNECT", "X"].contains(&m.as_str()) {
                    let n = per.iter().filter(|(_, i)| i == id).count();
                    prop_assert!(n <= 1, "{} sent {} times: {}", m, n, dbg);
                }
            }
        }
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "{}", dbg);
        prop_assert_eq!(HUNG.load(Ordering::SeqCst), 0, "{}", dbg);
        let bad = BAD.lock().unwrap().clone();
        prop_assert!(bad.is_empty(), "{:?} {}", bad, dbg);
    }
}
