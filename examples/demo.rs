//! The main job, with nothing installed beyond the toolchain: three local
//! HTTP backends on 127.0.0.1, a static instance list, and 300 requests to
//! `http://user-service/whoami` balanced with round robin, then random.
//!
//! Run: `cargo run --example demo` (feature `hyper-util`, on by default).

#[path = "../tests/support/backend.rs"]
mod backend;

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::rule::{Random, RoundRobin};

const REQUESTS: usize = 300;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut backends = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        backends.push(backend::Backend::start(name).await?);
    }
    let list = backends
        .iter()
        .map(|b| b.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    println!("user-service.ribbon.listOfServers = {list}\n");
    let source = StaticSource::new().with_list("user-service", &list)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let mut table: Vec<(&str, BTreeMap<String, usize>)> = Vec::new();
    for rule in ["round_robin", "random"] {
        let builder = LoadBalancer::builder()
            .source(source.clone())
            .service("user-service");
        let lb = match rule {
            "round_robin" => builder.rule(RoundRobin::new).build(client.clone())?,
            _ => builder.rule(Random::new).build(client.clone())?,
        };
        let mut counts = BTreeMap::new();
        for _ in 0..REQUESTS {
            let request = http::Request::get("http://user-service/whoami").body(Empty::new())?;
            let key = match lb.clone().oneshot(request).await {
                Ok(response) => {
                    String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes())
                        .into_owned()
                }
                Err(e) => format!("error: {e}"),
            };
            *counts.entry(key).or_insert(0usize) += 1;
        }
        table.push((rule, counts));
    }

    let instances: Vec<String> = backends
        .iter()
        .map(|b| format!("{} ({})", b.name(), b.addr()))
        .collect();
    let width = instances.iter().map(String::len).max().unwrap_or(8).max(8);
    print!("{:<width$}", "instance");
    for (rule, _) in &table {
        print!(" | {rule:>11}");
    }
    println!();
    println!("{}", "-".repeat(width + table.len() * 14));
    for (backend, label) in backends.iter().zip(&instances) {
        print!("{label:<width$}");
        for (_, counts) in &table {
            print!(
                " | {:>11}",
                counts.get(backend.name()).copied().unwrap_or(0)
            );
        }
        println!();
    }
    let errors: Vec<String> = table
        .iter()
        .flat_map(|(rule, c)| {
            c.iter()
                .filter(|(k, _)| k.starts_with("error"))
                .map(move |(k, v)| format!("{rule}: {v} x {k}"))
        })
        .collect();
    print!("{:<width$}", "errors");
    for (_, counts) in &table {
        let n: usize = counts
            .iter()
            .filter(|(k, _)| k.starts_with("error"))
            .map(|(_, v)| v)
            .sum();
        print!(" | {n:>11}");
    }
    println!();
    for e in errors {
        println!("  {e}");
    }
    Ok(())
}
