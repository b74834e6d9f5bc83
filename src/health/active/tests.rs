//! Unit tests of health-check targets and settings.

use super::*;
use super::probe::{ProbeClient, probe};

fn instance() -> Instance {
    Instance::new("s", "10.0.0.5", 8080).unwrap()
}

fn url(check: &ActiveHealthCheck, i: &Instance) -> Option<String> {
    check.target_of(i).url
}

#[test]
fn targets_stay_on_the_instances_own_host() {
    let c = ActiveHealthCheck::new("health");
    assert_eq!(c.path, "/health");
    let i = instance();
    assert_eq!(url(&c, &i).unwrap(), "http://10.0.0.5:8080/health");
    let own = i
        .clone()
        .with_health_check_url("http://10.0.0.5:8080/status");
    assert_eq!(url(&c, &own).unwrap(), "http://10.0.0.5:8080/status");
    for elsewhere in [
        "http://10.0.0.6:8080/internal/admin/purge?all=true",
        "http://10.0.0.5:9999/internal/admin/purge?all=true",
        "https://10.0.0.5:9999/status",
        "ftp://10.0.0.5:8080/status",
        "not a url",
    ] {
        let t = c.target_of(&i.clone().with_health_check_url(elsewhere));
        assert_eq!(t.url.unwrap(), "http://10.0.0.5:8080/health", "{elsewhere}");
        assert!(t.warning.unwrap().contains("healthCheckUrl"));
    }
    let open = ActiveHealthCheck {
        allow_other_hosts: true,
        ..c.clone()
    };
    let other = i.clone().with_health_check_url("http://10.0.0.6:1/x");
    assert_eq!(url(&open, &other).unwrap(), "http://10.0.0.6:1/x");
    let tls_url = i.clone().with_health_check_url("https://10.0.0.5:8080/status");
    let secure = i.with_secure(true);
    if cfg!(feature = "tls") {
        assert_eq!(url(&c, &tls_url).unwrap(), "https://10.0.0.5:8080/status");
        assert_eq!(url(&c, &secure).unwrap(), "https://10.0.0.5:8080/health");
    } else {
        assert_eq!(url(&c, &tls_url).unwrap(), "http://10.0.0.5:8080/health");
        let t = c.target_of(&secure);
        assert_eq!(t.url, None);
        assert!(t.warning.unwrap().contains("`tls` feature"));
    }
}

#[test]
fn spring_boot_management_port_and_context_path() {
    let c = ActiveHealthCheck::default();
    let i = instance().with_metadata(MANAGEMENT_PORT, "8081");
    assert_eq!(url(&c, &i).unwrap(), "http://10.0.0.5:8081/actuator/health");
    let ctx = i.clone().with_metadata(MANAGEMENT_CONTEXT_PATH, "/manage/");
    assert_eq!(
        url(&c, &ctx).unwrap(),
        "http://10.0.0.5:8081/manage/actuator/health"
    );
    // healthCheckUrl on the management port wins.
    let hc = ctx
        .clone()
        .with_health_check_url("http://10.0.0.5:8081/mgmt/health");
    assert_eq!(url(&c, &hc).unwrap(), "http://10.0.0.5:8081/mgmt/health");
    // Malformed values are ignored with a warning.
    let bad = instance().with_metadata(MANAGEMENT_PORT, "80x");
    let t = c.target_of(&bad);
    assert_eq!(t.url.unwrap(), "http://10.0.0.5:8080/actuator/health");
    assert!(t.warning.unwrap().contains("management.port"));
    let bad_ctx = i.with_metadata(MANAGEMENT_CONTEXT_PATH, "a b");
    let t = c.target_of(&bad_ctx);
    assert_eq!(t.url.unwrap(), "http://10.0.0.5:8081/actuator/health");
    assert!(t.warning.is_some());
    let v6 = Instance::new("s", "::1", 8080)
        .unwrap()
        .with_metadata(MANAGEMENT_PORT, "9");
    assert_eq!(url(&c, &v6).unwrap(), "http://[::1]:9/actuator/health");
}

#[test]
fn hostile_metadata_gives_short_escaped_warnings() {
    // 1 MB values: the warning (built every round) stays short; CR/LF are
    // escaped.
    let c = ActiveHealthCheck::default();
    let huge = "9".repeat(1 << 20);
    for i in [
        instance().with_metadata(MANAGEMENT_PORT, huge.as_str()),
        instance()
            .with_metadata(MANAGEMENT_PORT, "1")
            .with_metadata(MANAGEMENT_CONTEXT_PATH, format!("a b{huge}")),
        instance().with_health_check_url(format!("http://elsewhere/{huge}")),
    ] {
        let w = c.target_of(&i).warning.unwrap();
        assert!(w.len() < 300, "{}", w.len());
    }
    let forged = instance().with_metadata(MANAGEMENT_PORT, "1\r\nFORGED");
    assert_eq!(
        c.target_of(&forged).warning.unwrap(),
        "management.port \"1\\r\\nFORGED\" ignored: not a port"
    );
}

#[test]
fn validate_names_the_field() {
    let mut c = ActiveHealthCheck::default();
    assert_eq!(c.validate(), Ok(()));
    c.unhealthy_threshold = 0;
    assert_eq!(
        c.validate().unwrap_err().field(),
        "ActiveHealthCheck::unhealthy_threshold"
    );
    c = ActiveHealthCheck {
        max_concurrent_probes: 0,
        ..ActiveHealthCheck::default()
    };
    assert_eq!(
        c.validate().unwrap_err().field(),
        "ActiveHealthCheck::max_concurrent_probes"
    );
    c = ActiveHealthCheck {
        interval: Duration::from_millis(9),
        ..ActiveHealthCheck::default()
    };
    assert_eq!(
        c.validate().unwrap_err().field(),
        "ActiveHealthCheck::interval"
    );
    c = ActiveHealthCheck {
        path: "x".into(),
        ..ActiveHealthCheck::default()
    };
    assert_eq!(c.validate().unwrap_err().field(), "ActiveHealthCheck::path");
}

#[cfg(feature = "tls")]
#[tokio::test(start_paused = true)]
async fn a_tls_handshake_that_never_answers_fails_the_probe_at_the_timeout() {
    // The server accepts and reads the ClientHello, then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let check = ActiveHealthCheck {
        timeout: Duration::from_secs(3),
        ..ActiveHealthCheck::default()
    };
    let client = ProbeClient::new(&check);
    let start = tokio::time::Instant::now();
    let url = format!("https://127.0.0.1:{port}/actuator/health");
    assert!(!probe(&client, &url, check.timeout).await);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    server.abort();
}

/// A registry health URL that is ignored is named in the warning without
/// its userinfo: `healthCheckUrl "http://admin:S3cret@10.0.0.6:8080/health"
/// ignored: another host` put the password in the log line; now
/// `http://***@10.0.0.6:8080/health`.
#[test]
fn an_ignored_health_url_is_logged_without_its_password() {
    let c = ActiveHealthCheck::new("health");
    for raw in [
        "http://admin:S3cret@10.0.0.6:8080/health",
        "ftp://admin:S3cret@10.0.0.5:8080/health",
    ] {
        let t = c.target_of(&instance().with_health_check_url(raw));
        assert_eq!(t.url.unwrap(), "http://10.0.0.5:8080/health");
        let warning = t.warning.unwrap();
        assert!(!warning.contains("S3cret"), "{warning}");
        assert!(warning.contains("***@10.0.0."), "{warning}");
    }
}

/// The first round raced the first list: the refresher made the endpoints
/// before the checks began (so they wait for no probe), the first
/// scheduled round took the list before it was published (empty), and the
/// round of first probes at its publication skipped them (none pending):
/// no probe until the next round, an `interval` later (here 600 s; the
/// project's CI saw 0 of 100 instances probed in 20 s once,
/// `tests/health_probe_sockets.rs`). Now that round also probes an
/// endpoint no round listed, once.
/// A server on 127.0.0.1 answering 200 and counting into `requests`
/// (with `hang`, accepting and never answering).
async fn counted_endpoint(
    requests: &Arc<std::sync::atomic::AtomicUsize>,
    hang: bool,
) -> crate::instance::Endpoint {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::clone(requests);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            if hang {
                requests.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
                continue;
            }
            let requests = Arc::clone(&requests);
            let service = hyper::service::service_fn(move |_req| {
                requests.fetch_add(1, Ordering::SeqCst);
                async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    crate::instance::Endpoint::new(Instance::new("s", "127.0.0.1", port).unwrap())
}

/// The list the checks read, and the start race of the tests below:
/// checks spawned with `check`, returned once their first round took the
/// (empty) list; publish with `publish`.
struct Race {
    current: Arc<std::sync::Mutex<Arc<Snapshot>>>,
    published: Arc<tokio::sync::Notify>,
    _task: crate::discovery::TaskGuard,
}

impl Race {
    async fn start(check: ActiveHealthCheck) -> Race {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let current = Arc::new(std::sync::Mutex::new(Arc::new(Snapshot::new(
            "s",
            Vec::new(),
            1,
        ))));
        let lists_taken = Arc::new(AtomicUsize::new(0));
        let published = Arc::new(tokio::sync::Notify::new());
        let hooks = CheckHooks {
            service: "s".into(),
            snapshot: Box::new({
                let (current, taken) = (Arc::clone(&current), Arc::clone(&lists_taken));
                move || {
                    taken.fetch_add(1, Ordering::SeqCst);
                    Some(Arc::clone(&current.lock().unwrap()))
                }
            }),
            changed: Box::new(|| {}),
            uneject_on_pass: true,
            wait_for_probe: Arc::new(AtomicBool::new(false)),
            published: Arc::clone(&published),
        };
        let task = spawn_health_checks(hooks, check, &tokio::runtime::Handle::current());
        while lists_taken.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Race {
            current,
            published,
            _task: task,
        }
    }

    fn publish(&self, endpoints: Vec<crate::instance::Endpoint>, version: u64) {
        *self.current.lock().unwrap() = Arc::new(Snapshot::new("s", endpoints, version));
        self.published.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_published_after_the_first_round_took_its_list_are_probed_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let requests = Arc::new(AtomicUsize::new(0));
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        endpoints.push(counted_endpoint(&requests, false).await);
    }
    let race = Race::start(ActiveHealthCheck {
        interval: Duration::from_secs(600),
        interval_jitter: Duration::ZERO,
        ..ActiveHealthCheck::new("/health")
    })
    .await;
    race.publish(endpoints, 2);
    let published = &race.published;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while requests.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(requests.load(Ordering::SeqCst), 3, "each endpoint probed once");
    // Listed now: a later list does not probe them again.
    published.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

/// In the start race above, a hung endpoint among those no round listed
/// must not hold up the first probe of an instance joining after them:
/// probed in the round of first probes, it did (helper 179: 1.8 to 2.8 s,
/// `ceil(hung / max_concurrent_probes) × timeout`); now they bring the
/// next full round forward, which runs beside the first probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_from_the_start_race_does_not_delay_a_joining_ones_first_probe() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (hung, joined) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let early = vec![counted_endpoint(&hung, true).await];
    let race = Race::start(ActiveHealthCheck {
        interval: Duration::from_secs(600),
        interval_jitter: Duration::ZERO,
        timeout: Duration::from_secs(60),
        max_concurrent_probes: 1,
        ..ActiveHealthCheck::new("/health")
    })
    .await;
    race.publish(early.clone(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hung.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(hung.load(Ordering::SeqCst), 1, "the hung endpoint's probe");
    let joining = counted_endpoint(&joined, false).await;
    joining.stats().start_active_pending();
    race.publish(vec![early[0].clone(), joining.clone()], 3);
    while joined.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        joined.load(Ordering::SeqCst),
        1,
        "the joining instance probed while the hung probe (60 s) runs"
    );
    assert!(!joining.stats().is_active_unhealthy());
}
