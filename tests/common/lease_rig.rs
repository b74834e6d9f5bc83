//! The rig of the Eureka lease tests (`eureka_late_lease_runs.rs`,
//! `eureka_dropped_runs.rs`): one instance of app `LATE` registered through
//! stub servers (`support/eureka_stub.rs`) that answer every lease call at
//! once until a test holds one (`slow`), and counts of the calls each stub
//! took.
#![allow(dead_code)]

use std::time::Duration;

use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaRegistrationBuilder};

use super::eureka_stub::{Answer, Stub};

pub const APP: &str = "LATE";
pub const ID: &str = "lateid1";

/// A read-back's answer: the instance served with `status`.
pub fn inst(status: &str) -> Answer {
    Answer::ok(format!(
        r#"{{"instance":{{"instanceId":"{ID}","status":"{status}"}}}}"#
    ))
}

/// `200` after `ms` milliseconds.
pub fn slow(ms: u64) -> Answer {
    slow_status(200, ms)
}

/// `status` after `ms` milliseconds.
pub fn slow_status(status: u16, ms: u64) -> Answer {
    Answer {
        status,
        body: Vec::new(),
        delay_ms: ms,
    }
}

/// The instance's path.
pub fn ip() -> String {
    format!("/eureka/apps/{APP}/{ID}")
}

/// The registration's method and path, as the stubs key them.
pub fn post() -> String {
    format!("POST /eureka/apps/{APP}")
}

/// Every lease call answered at once; read-backs serve UP.
pub fn script(s: &Stub) {
    let p = ip();
    s.set(&post(), vec![Answer::status(204)]);
    s.set(&format!("GET {p}"), vec![inst("UP")]);
    s.set(&format!("PUT {p}"), vec![Answer::status(200)]);
    s.set(&format!("PUT {p}/status"), vec![Answer::status(200)]);
    s.set(&format!("DELETE {p}"), vec![Answer::status(200)]);
}

/// Calls of `method` whose path contains `needle` that `s` took.
pub fn count(s: &Stub, method: &str, needle: &str) -> usize {
    s.log()
        .iter()
        .filter(|(m, p, _)| m == method && p.contains(needle))
        .count()
}

/// [`count`] over several stubs.
pub fn total(s: &[&Stub], method: &str, needle: &str) -> usize {
    s.iter().map(|s| count(s, method, needle)).sum()
}

/// DELETEs of the instance over several stubs.
pub fn deletes(s: &[&Stub]) -> usize {
    total(s, "DELETE", &ip())
}

/// The registration through `urls`: renewals only when asked (1 h), a
/// 500 ms request timeout.
pub fn builder(urls: &str) -> EurekaRegistrationBuilder {
    EurekaRegistration::builder(APP, "127.0.0.1", 8080)
        .instance_id(ID)
        .server_urls(urls)
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_millis(500))
}

/// [`builder`], built.
pub fn registration(urls: &str) -> EurekaRegistration {
    builder(urls).build().unwrap()
}

/// Two stubs, A and B, each answering every lease call at once, and the
/// registration's server list `A,B` (A first).
pub async fn two_stubs() -> (Stub, Stub, String) {
    let (a, b) = (Stub::start().await, Stub::start().await);
    script(&a);
    script(&b);
    let urls = format!("{},{}", a.url(), b.url());
    (a, b, urls)
}
