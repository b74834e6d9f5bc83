//! Eureka end to end: start K small HTTP instances of an app on 127.0.0.1,
//! register each of them in a running Eureka server (as a Spring Boot
//! service would), discover them back through the registry and send N
//! GETs through the balancer (reqwest as the HTTP client); print requests
//! per instance, then cancel the registrations.
//!
//! ```text
//! URL=$(scripts/eureka-server start | tail -n 1)
//! cargo run --example eureka -- "$URL"
//! cargo run --example eureka -- "$URL" demo-service 300 --instances 3
//! scripts/eureka-server stop-all
//! ```
//!
//! With `--instances 0` nothing is registered and the example balances
//! over whatever instances of APP the registry already lists.
//! Features: `eureka` and `reqwest` (both on by default).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaSource};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{LoadBalancer, ReqwestService};

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: eureka EUREKA_URL [APP=demo-service] [N=300] [--instances K=3]";

struct Args {
    url: String,
    app: String,
    requests: usize,
    instances: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut instances = 3;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--instances" => {
                instances = it
                    .next()
                    .and_then(|k| k.parse().ok())
                    .filter(|k| *k <= 50)
                    .ok_or("--instances takes a number from 0 to 50")?;
            }
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    let url = positional.next().ok_or("EUREKA_URL is missing")?;
    let app = positional.next().unwrap_or_else(|| "demo-service".into());
    let requests = match positional.next() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("N must be a number, not {n:?}"))?,
        None => 300,
    };
    Ok(Args {
        url,
        app: app.to_ascii_lowercase(),
        requests,
        instances,
    })
}

/// Starts one instance that answers every request with its name; returns
/// its port.
async fn serve(name: String) -> Result<u16, Error> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let body = Bytes::from(name);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("eureka: {why}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let service = args.app.clone();

    // 1. Our own instances, registered as a Spring Boot service would be.
    let mut handles = Vec::new();
    for k in 1..=args.instances {
        let port = serve(format!("{service}-{k}")).await?;
        let registration = EurekaRegistration::builder(&service, "127.0.0.1", port)
            .server_urls(&args.url)
            .renew_interval(Duration::from_secs(5))
            .build()?;
        handles.push(registration.start().await?);
        println!(
            "registered {service}-{k} at 127.0.0.1:{port} in {}",
            args.url
        );
    }

    // 2. The caller: discover through the registry, balance with round robin.
    let source = EurekaSource::builder()
        .server_urls(&args.url)
        .request_timeout(Duration::from_secs(5))
        .build()?;
    let lb = LoadBalancer::builder()
        .source(source)
        .service(service.clone())
        .rule(RoundRobin::new)
        .refresh({
            let mut c = RefreshConfig::default();
            c.interval = Duration::from_millis(500);
            c
        })
        .build(ReqwestService::new(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never())
                .no_proxy()
                .build()?,
        ))?;
    let want = args.instances.max(1);
    let waited = Instant::now();
    let listed = loop {
        let listed = lb.snapshot(&service).map_or(0, |s| s.len());
        if listed >= want || waited.elapsed() > Duration::from_secs(30) {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "{service}: {listed} UP instance(s) listed by {} after {:.1?}",
        args.url,
        waited.elapsed()
    );

    // 3. N requests through the balancer.
    let uri = format!("http://{service}/hello");
    let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..args.requests {
        let request = http::Request::get(uri.as_str()).body(String::new())?;
        match lb.clone().oneshot(request).await {
            Ok(response) => {
                let status = response.status();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await?
                    .to_bytes();
                let name: String = String::from_utf8_lossy(&body).chars().take(40).collect();
                *per_instance
                    .entry(format!("{name} [{status}]"))
                    .or_default() += 1;
            }
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    println!(
        "\n{} GET {uri} in {:.2?}\n",
        args.requests,
        started.elapsed()
    );
    println!("{:<40} | requests", "instance [status]");
    println!("{}", "-".repeat(52));
    for (k, v) in &per_instance {
        println!("{k:<40} | {v:>8}");
    }
    println!("{:<40} | {:>8}", "errors", errors.values().sum::<usize>());
    for (e, v) in &errors {
        println!("  {v} x {e}");
    }

    // 4. Leave the registry as we found it.
    for handle in handles {
        handle.shutdown().await?;
    }
    if !errors.is_empty() || per_instance.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
