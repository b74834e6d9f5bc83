//! Discover an app in a running Eureka server, send N GETs to it through
//! the balancer (with reqwest as the HTTP client), and print requests per
//! instance plus errors.
//!
//! ```text
//! cargo run --example eureka -- EUREKA_URL APP [N] [PATH] [RULE]
//! cargo run --example eureka -- http://127.0.0.1:8761/eureka user-service 300 /whoami round_robin
//! ```
//!
//! `scripts/eureka-server start` starts a local Eureka server and prints its
//! URL.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tower::ServiceExt;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::EurekaSource;
use tower_ribbon::rule::{Random, RoundRobin};
use tower_ribbon::{LoadBalancer, ReqwestService};

fn usage() -> ! {
    eprintln!("usage: eureka EUREKA_URL APP [N=300] [PATH=/] [RULE=round_robin|random]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(app)) = (args.first(), args.get(1)) else {
        usage()
    };
    let n: usize = match args.get(2) {
        Some(n) => n.parse().unwrap_or_else(|_| usage()),
        None => 300,
    };
    let path = args.get(3).map(String::as_str).unwrap_or("/");
    let rule = args.get(4).map(String::as_str).unwrap_or("round_robin");
    let service = app.to_ascii_lowercase();

    let source = EurekaSource::builder()
        .server_urls(url)
        .request_timeout(Duration::from_secs(5))
        .build()?;
    let builder = LoadBalancer::builder()
        .source(source)
        .service(service.clone())
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = Duration::from_secs(5);
            refresh
        });
    let client = ReqwestService::new(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
    );
    let lb = match rule {
        "round_robin" => builder.rule(RoundRobin::new).build(client)?,
        "random" => builder.rule(Random::new).build(client)?,
        other => {
            eprintln!("unknown rule `{other}`");
            usage()
        }
    };
    lb.ready_service(&service).await;
    let Some(snapshot) = lb.snapshot(&service) else {
        return Err(format!("service {service} is not configured").into());
    };
    match lb.refresh_status(&service).and_then(|s| s.last_error) {
        Some(error) => println!("{service}: registry fetch failed: {error}"),
        None => println!("{service}: {} UP instance(s) in {url}", snapshot.len()),
    }
    for e in snapshot.endpoints() {
        println!(
            "  {} id={} zone={}",
            e,
            e.instance().id(),
            e.instance().zone().unwrap_or("-")
        );
    }

    let uri = format!("http://{service}{path}");
    let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..n {
        let request = http::Request::get(uri.as_str()).body(String::new())?;
        match lb.clone().oneshot(request).await {
            Ok(response) => {
                let status = response.status();
                let from = response
                    .headers()
                    .get("x-instance")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await?
                    .to_bytes();
                let key = from.unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(&body);
                    text.lines().next().unwrap_or("").chars().take(40).collect()
                });
                *per_instance.entry(format!("{key} [{status}]")).or_default() += 1;
            }
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    println!("\n{n} GET {uri} in {:.2?}\n", started.elapsed());
    println!("{:<50} | requests", "instance (response body) [status]");
    println!("{}", "-".repeat(62));
    for (k, v) in &per_instance {
        println!("{k:<50} | {v:>8}");
    }
    println!("{:<50} | {:>8}", "errors", errors.values().sum::<usize>());
    for (e, v) in &errors {
        println!("  {v} x {e}");
    }
    if let Some(status) = lb.refresh_status(&service) {
        println!("\nrefresh: {status:?}");
    }
    if !errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
