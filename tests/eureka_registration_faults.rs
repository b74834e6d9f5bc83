//! `EurekaRegistration` when a status call fails: a draining
//! (OUT_OF_SERVICE) instance must never be left UP in the registry.
//!
//! Eureka registers an instance UP whatever status its registration
//! carries (its `InstanceStatusOverrideRule`s: a DOWN or STARTING body is
//! believed, else an override set through the status API wins, else
//! `AlwaysAvailableRule` gives UP), so OUT_OF_SERVICE holds only once
//! `PUT …/status` succeeds. Found by an attack on the crate: after a
//! registry restart, one failed status call left the instance UP for good
//! (later renewals answered 200 and nothing sent the status again), and a
//! `start` with `initial_status(OutOfService)` whose status call failed
//! returned `Err` but left the instance registered UP until its lease ran
//! out.
//!
//! A stub registry, not the real server: it copies the server's rules
//! above and fails the next status call with a 500 on demand, which the
//! real server cannot be made to do (`tests/eureka_registration.rs` runs
//! the restart against the real server).
#![cfg(feature = "eureka")]
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

#[derive(Default)]
struct Registry {
    status: HashMap<String, String>, // id -> status as served
    overrides: HashMap<String, String>,
    fail_next_status_put: bool,
    status_puts: usize,
}

async fn stub(reg: Arc<Mutex<Registry>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let reg = reg.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let reg = reg.clone();
                    async move {
                        let method = req.method().clone();
                        let path = req.uri().path().to_owned();
                        let query = req.uri().query().unwrap_or("").to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let parts: Vec<&str> = path
                            .trim_start_matches("/eureka/apps/")
                            .split('/')
                            .collect();
                        let mut r = reg.lock().unwrap();
                        let code = match (method.as_str(), parts.len()) {
                            ("POST", 1) => {
                                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                                let id = v["instance"]["instanceId"].as_str().unwrap().to_owned();
                                let s = v["instance"]["status"].as_str().unwrap().to_owned();
                                let served = if s != "UP" && s != "OUT_OF_SERVICE" {
                                    s
                                } else {
                                    r.overrides.get(&id).cloned().unwrap_or_else(|| "UP".into())
                                };
                                r.status.insert(id, served);
                                204
                            }
                            ("PUT", 2) => {
                                if r.status.contains_key(parts[1]) {
                                    200
                                } else {
                                    404
                                }
                            }
                            ("PUT", 3) => {
                                r.status_puts += 1;
                                if std::mem::take(&mut r.fail_next_status_put) {
                                    500
                                } else if let Some(v) =
                                    query.split('&').find_map(|p| p.strip_prefix("value="))
                                {
                                    r.overrides.insert(parts[1].to_owned(), v.to_owned());
                                    r.status.insert(parts[1].to_owned(), v.to_owned());
                                    200
                                } else {
                                    400
                                }
                            }
                            ("DELETE", 2) => {
                                r.status.remove(parts[1]);
                                200
                            }
                            _ => 400,
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/eureka")
}

/// A registration of `i1`, started.
async fn started(url: &str) -> tower_ribbon::discovery::eureka::RegistrationHandle {
    EurekaRegistration::builder("APP", "127.0.0.1", 9001)
        .instance_id("i1")
        .server_url(url)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

fn served(reg: &Mutex<Registry>) -> Option<String> {
    reg.lock().unwrap().status.get("i1").cloned()
}

/// A draining instance; the registry restarts (forgets instances and
/// overrides); the re-registration's status call fails once. The
/// registration is cancelled, as `start` cancels one whose status cannot be
/// set (before, it was left served UP until the next renewal, 30 s by
/// default); the next renewal registers again and sends the status, and it
/// holds from then on.
#[tokio::test]
async fn a_failed_status_call_after_a_restart_cancels_until_the_next_renewal() {
    let reg = Arc::new(Mutex::new(Registry::default()));
    let url = stub(reg.clone()).await;
    let handle = started(&url).await;
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .unwrap();
    assert_eq!(served(&reg).as_deref(), Some("OUT_OF_SERVICE"));
    {
        let mut r = reg.lock().unwrap();
        r.status.clear();
        r.overrides.clear();
        r.fail_next_status_put = true;
    }
    // Re-registered (served UP by the rules), the status call fails: the
    // registration is cancelled, not left UP until the next renewal.
    let first = handle.renew_now().await;
    assert!(
        matches!(
            first,
            Err(tower_ribbon::DiscoveryError::Status { status: 500, .. })
        ),
        "{first:?}"
    );
    assert_eq!(served(&reg).as_deref(), None);
    // The next renewal registers and sends it again; later ones send
    // nothing more.
    handle.renew_now().await.unwrap();
    assert_eq!(served(&reg).as_deref(), Some("OUT_OF_SERVICE"));
    for _ in 0..4 {
        handle.renew_now().await.unwrap();
    }
    assert_eq!(served(&reg).as_deref(), Some("OUT_OF_SERVICE"));
    // Calls: the first set_status, the failed one, the one resent.
    assert_eq!(reg.lock().unwrap().status_puts, 3);
    assert_eq!(handle.status(), InstanceStatus::OutOfService);
}

/// An operator's override (OUT_OF_SERVICE) over an instance that only
/// ever sent STARTING and UP; the registry forgets the instance but keeps
/// the override (as a restarted peer that got it replicated); the
/// re-registration's read-back fails (this stub answers no `GET`). Before,
/// a failed read sent UP and undid the operator's override (2 → 3 status
/// calls then, served UP; STARTING and UP now go in registration bodies,
/// so 0 status calls): what made `a_peer_restart_keeps_draining_and_operator_statuses`
/// (`tests/eureka_registrant_races.rs`) fail under load, when the read at a
/// peer just restarted timed out. Now the override is kept and no status
/// call is sent, then or at the renewals that read again.
#[tokio::test]
async fn a_failed_read_back_after_a_reregistration_keeps_an_operators_override() {
    let reg = Arc::new(Mutex::new(Registry::default()));
    let url = stub(reg.clone()).await;
    let handle = EurekaRegistration::builder("APP", "127.0.0.1", 9001)
        .instance_id("i1")
        .server_url(&url)
        .initial_status(InstanceStatus::Starting)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    handle.set_status(InstanceStatus::Up).await.unwrap();
    assert_eq!(served(&reg).as_deref(), Some("UP"));
    // STARTING and UP went in registration bodies: no status call.
    assert_eq!(reg.lock().unwrap().status_puts, 0);
    {
        let mut r = reg.lock().unwrap();
        r.overrides.insert("i1".into(), "OUT_OF_SERVICE".into());
        r.status.remove("i1");
    }
    handle.renew_now().await.unwrap();
    assert_eq!(served(&reg).as_deref(), Some("OUT_OF_SERVICE"));
    for _ in 0..3 {
        handle.renew_now().await.unwrap();
    }
    assert_eq!(served(&reg).as_deref(), Some("OUT_OF_SERVICE"));
    assert_eq!(reg.lock().unwrap().status_puts, 0);
    assert_eq!(handle.stats().registrations, 2);
}

/// `set_status` whose call fails (no restart): the status is kept and the
/// next renewal sends it, instead of the instance staying UP while the
/// handle says OUT_OF_SERVICE.
#[tokio::test]
async fn a_failed_set_status_is_sent_again_by_the_next_renewal() {
    let reg = Arc::new(Mutex::new(Registry::default()));
    let url = stub(reg.clone()).await;
    let handle = started(&url).await;
    reg.lock().unwrap().fail_next_status_put = true;
    assert!(
        handle
            .set_status(InstanceStatus::OutOfService)
            .await
            .is_err()
    );
    assert_eq!(served(&reg).as_deref(), Some("UP"));
    handle.renew_now().await.unwrap();
    assert_eq!(served(&reg).as_deref(), Some("OUT_OF_SERVICE"));
    handle.renew_now().await.unwrap();
    assert_eq!(reg.lock().unwrap().status_puts, 2);
    // Back to UP: sent once, and it holds.
    handle.set_status(InstanceStatus::Up).await.unwrap();
    handle.renew_now().await.unwrap();
    assert_eq!(served(&reg).as_deref(), Some("UP"));
    assert_eq!(reg.lock().unwrap().status_puts, 3);
}

/// `initial_status(OutOfService)` whose status call fails: `start` fails
/// and cancels the registration the server took, instead of leaving the
/// instance registered UP until its lease expires (90 s by default).
#[tokio::test]
async fn a_start_whose_status_cannot_be_set_leaves_nothing_registered() {
    let reg = Arc::new(Mutex::new(Registry::default()));
    reg.lock().unwrap().fail_next_status_put = true;
    let url = stub(reg.clone()).await;
    let started = EurekaRegistration::builder("APP", "127.0.0.1", 9001)
        .instance_id("i1")
        .initial_status(InstanceStatus::OutOfService)
        .server_url(url)
        .build()
        .unwrap()
        .start()
        .await;
    assert!(
        matches!(
            started,
            Err(tower_ribbon::DiscoveryError::Status { status: 500, .. })
        ),
        "{:?}",
        started.err()
    );
    assert_eq!(served(&reg), None);
    assert_eq!(reg.lock().unwrap().status_puts, 1);
}

/// A registration started twice (from clones) shares its instance: once
/// one handle shut it down (cancelled in the registry), the other's
/// renewals do not register it again. Before, the other's next renewal
/// met the 404 and registered the instance UP again after its shutdown.
#[tokio::test]
async fn a_shut_down_instance_is_not_registered_again_by_another_handle() {
    let reg = Arc::new(Mutex::new(Registry::default()));
    let url = stub(reg.clone()).await;
    let registration = EurekaRegistration::builder("APP", "127.0.0.1", 9001)
        .instance_id("i1")
        .server_url(url)
        .build()
        .unwrap();
    let first = registration.clone().start().await.unwrap();
    let second = registration.start().await.unwrap();
    assert_eq!(served(&reg).as_deref(), Some("UP"));
    first.shutdown().await.unwrap();
    assert_eq!(served(&reg), None);
    let renewed = second.renew_now().await;
    assert_eq!(served(&reg), None, "{renewed:?}");
    assert_eq!(second.stats().registrations, 2);
}

/// `UNKNOWN` is no status to register: Eureka answers every heartbeat of
/// an instance it serves as `UNKNOWN` with 404 (it reads it as a cleared
/// operator override), so the instance registered again at every renewal
/// and never took traffic. Refused at build as the initial status, and by
/// `set_status` before anything is sent (status kept, no call made).
#[tokio::test]
async fn unknown_is_refused_as_a_registrant_status() {
    let err = EurekaRegistration::builder("APP", "127.0.0.1", 9001)
        .server_url("http://127.0.0.1:1/eureka")
        .initial_status(InstanceStatus::Unknown)
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("UNKNOWN is not a status to register"),
        "{err}"
    );
    let reg = Arc::new(Mutex::new(Registry::default()));
    let url = stub(reg.clone()).await;
    let handle = started(&url).await;
    let refused = handle
        .set_status(InstanceStatus::Unknown)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("use DOWN, OUT_OF_SERVICE or STARTING"),
        "{refused}"
    );
    assert_eq!(handle.status(), InstanceStatus::Up);
    assert_eq!(reg.lock().unwrap().status_puts, 0);
    handle.renew_now().await.unwrap();
    assert_eq!(served(&reg).as_deref(), Some("UP"));
}
