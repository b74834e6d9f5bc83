//! What the tests of requests that never reached a server share
//! (`h2_refused_stream.rs`, `never_sent.rs`): a healthy server counting the
//! requests it answers, a round-robin balancer over two instances, and a
//! POST (never retried once it may have reached a server).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_ribbon::LoadBalancer;

#[path = "ok_server.rs"]
mod ok_servers;
// Not every test file includes both.
#[allow(unused_imports)]
pub use ok_servers::{SVC, ok_server, ok_server_with, round_robin, slow_ok_server};

/// Round robin from the first of `ports` (on 127.0.0.1) through
/// hyper-util's h2c client, with `policy` and a declined attempt counted
/// once per `every` (`StatsConfig::declined_counted_every`); ready.
#[allow(dead_code)] // not every test file including this uses it
pub async fn h2_round_robin(
    ports: &[u16],
    policy: tower_ribbon::retry::RetryPolicy,
    every: std::time::Duration,
) -> LoadBalancer<tower_ribbon::service::HttpClient<Full<Bytes>>> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut stats = tower_ribbon::stats::StatsConfig::default();
    stats.declined_counted_every = every;
    round_robin(ports, client, |b| b.retry(policy).stats(stats)).await
}

/// Round robin from the first of two instances (`first`, `second` on
/// 127.0.0.1) over hyper-util's client (HTTP/2 only with `h2`), ready.
pub async fn balancer(
    first: u16,
    second: u16,
    h2: bool,
) -> LoadBalancer<tower_ribbon::service::HttpClient<Full<Bytes>>> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http::<Full<Bytes>>();
    round_robin(&[first, second], client, |b| b).await
}

/// A POST with a small body.
pub fn post() -> Request<Full<Bytes>> {
    Request::post("http://svc/orders")
        .body(Full::new(Bytes::from_static(b"one order")))
        .unwrap()
}
