//! The registry bodies and steps the stub-based failover tests share
//! (`eureka_failover_spent.rs`, `_vip.rs`, `_empty_home.rs`,
//! `_refilling_home.rs`): two stub servers, ORDERS and USERS. Included
//! beside `eureka_stub.rs` as `#[path = "support/failover_stub.rs"] mod
//! failover_stub;`.
#![allow(dead_code)]

use tower_ribbon::discovery::eureka::EurekaRegistry;

use crate::eureka_stub::{Answer, Stub, record};

/// A full registry body (JSON) of `apps` with the apps hash `hash`.
pub fn registry_json(hash: &str, apps: &[(&str, Vec<String>)]) -> String {
    let apps: Vec<String> = apps
        .iter()
        .map(|(name, recs)| format!(r#"{{"name":"{name}","instance":[{}]}}"#, recs.join(",")))
        .collect();
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"{hash}","application":[{}]}}}}"#,
        apps.join(",")
    )
}

/// An app of one UP instance `id` on `port`.
pub fn app(name: &'static str, id: &str, port: u16) -> (&'static str, Vec<String>) {
    (name, vec![record(name, id, port, "UP", "ADDED", "{}")])
}

pub fn orders() -> (&'static str, Vec<String>) {
    app("ORDERS", "orders-1", 9001)
}

pub fn users() -> (&'static str, Vec<String>) {
    app("USERS", "users-1", 9002)
}

/// `stub` answers `apps` in full and an empty delta of the same hash.
pub fn serve(stub: &Stub, hash: &str, apps: &[(&str, Vec<String>)]) {
    stub.set("/eureka/apps", vec![Answer::ok(registry_json(hash, apps))]);
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(registry_json(hash, &[]))],
    );
}

/// `stub` fails (503) every fetch, VIP `users` included.
pub fn down(stub: &Stub) {
    stub.set("/eureka/apps", vec![Answer::status(503)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(503)]);
    stub.set("/eureka/vips/users", vec![Answer::status(503)]);
}

/// `id:port` of each instance the registry serves for `app`.
pub fn ids(registry: &EurekaRegistry, app: &str) -> Vec<String> {
    (registry.instances(app).iter())
        .map(|i| format!("{}:{}", i.id(), i.port()))
        .collect()
}
