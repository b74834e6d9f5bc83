//! The seed flow of a Spring Cloud system with a Rust service in it:
//!
//! ```text
//! curl ─▶ Spring Cloud Gateway (lb://user-api) ─▶ Eureka ─▶ this Rust USER-API
//!                                                            │
//!                      Java AUTH-SERVICE instances ◀─ Eureka ┘ (through LoadBalancer)
//! ```
//!
//! This example is the Rust `USER-API`: it serves `GET /hello` on
//! 127.0.0.1:PORT, registers itself in Eureka (so the gateway's
//! `lb://user-api` route reaches it), and answers each request by calling
//! `http://auth-service/whoami` through a `LoadBalancer` over an
//! `EurekaRegistry`. On Ctrl-C it sets itself OUT_OF_SERVICE, cancels its
//! registration and exits.
//!
//! ```text
//! URL=$(scripts/eureka-server start | tail -1)
//! scripts/auth-service start "$URL"; scripts/auth-service start "$URL"
//! GW=$(scripts/gateway start "$URL" | tail -1)
//! cargo run --example gateway_chain -- "$URL" 18088 &
//! curl "$GW/user-api/hello"     # -> "user-api (rust) -> auth-service:PORT"
//! ```
//!
//! Features: `eureka` and `hyper-util` (both on by default).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaRegistry};
use tower_ribbon::{InstanceStatus, LoadBalancer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(eureka), Some(port)) = (
        args.first(),
        args.get(1).and_then(|p| p.parse::<u16>().ok()),
    ) else {
        eprintln!("usage: gateway_chain EUREKA_URL PORT");
        std::process::exit(2);
    };

    // Callers side: AUTH-SERVICE through the shared registry.
    let registry = EurekaRegistry::builder()
        .server_urls(eureka)
        .fetch_interval(Duration::from_secs(5))
        .build()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let auth = LoadBalancer::builder()
        .source(registry)
        .service("auth-service")
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = Duration::from_secs(5);
            refresh
        })
        .build(client)?;

    // Server side: GET /hello calls AUTH-SERVICE; /health for Eureka.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let auth = auth.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let auth = auth.clone();
                    async move {
                        let body = match req.uri().path() {
                            "/health" => "UP".to_owned(),
                            _ => {
                                let call = http::Request::get("http://auth-service/whoami")
                                    .body(Empty::new());
                                match call {
                                    Ok(call) => match auth.oneshot(call).await {
                                        Ok(resp) => match resp.into_body().collect().await {
                                            Ok(b) => format!(
                                                "user-api (rust) -> {}",
                                                String::from_utf8_lossy(&b.to_bytes())
                                            ),
                                            Err(e) => format!("user-api (rust) -> body error: {e}"),
                                        },
                                        Err(e) => format!("user-api (rust) -> error: {e}"),
                                    },
                                    Err(e) => format!("bad request: {e}"),
                                }
                            }
                        };
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    // Be found: register as USER-API.
    let registration = EurekaRegistration::builder("user-api", "127.0.0.1", port)
        .server_urls(eureka)
        .health_path("/health")
        .build()?;
    let handle = registration.start().await?;
    let handle_id = |port: &u16| format!("127.0.0.1:{port}");
    println!(
        "USER-API {} registered in {eureka}; Ctrl-C to stop",
        handle_id(&port)
    );

    tokio::signal::ctrl_c().await?;
    handle.set_status(InstanceStatus::OutOfService).await.ok();
    handle.shutdown().await?;
    server.abort();
    println!("deregistered");
    Ok(())
}
