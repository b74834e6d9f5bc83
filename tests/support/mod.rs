//! Shared test support: real backends and the Eureka server fixture.
#![allow(dead_code, unreachable_pub)]

pub mod backend;
pub mod eureka;
pub mod java;

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;

/// The hyper-util client the tests balance over.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A plain hyper-util HTTP/1 client.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `n` GETs to `uri` one after another and counts response bodies
/// (backend names); errors are counted under `error: <message>`.
pub async fn tally(lb: &LoadBalancer<HttpClient>, uri: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let request = http::Request::get(uri)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let key = match lb.clone().oneshot(request).await {
            Ok(response) => match response.into_body().collect().await {
                Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                Err(e) => format!("error: body: {e}"),
            },
            Err(e) => format!("error: {e}"),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// `[("a", 1), ...]` as a map, for comparing with [`tally`].
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Spring Cloud's `SimpleDiscoveryClient` keys listing `backends` as
/// instances of `service`, each with its instance id (the backend's name)
/// and `metadata.zone`.
pub fn simple_discovery(service: &str, backends: &[(&backend::Backend, &str)]) -> String {
    let key = format!("spring.cloud.discovery.client.simple.instances.{service}");
    let mut s = String::new();
    for (i, (b, zone)) in backends.iter().enumerate() {
        s.push_str(&format!(
            "{key}[{i}].uri=http://127.0.0.1:{}\n{key}[{i}].instance-id={}\n{key}[{i}].metadata.zone={zone}\n",
            b.port(),
            b.name()
        ));
    }
    s
}
