//! A programmable loopback proxy in front of one real Eureka server:
//! answers 503 (a peer that refuses) or holds a registration or a read
//! before passing it on (a slow peer applying a write late), and logs
//! what it saw. Shared by `eureka_reregistration_late.rs` and
//! `eureka_operator_and_shutdown.rs`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower_ribbon::discovery::eureka::EurekaRegistry;

use crate::support;
use crate::support::eureka::EurekaFixture;

/// A proxy in front of one real Eureka server.
#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    /// Answer 503 to everything (a peer that refuses).
    pub fail: Arc<AtomicBool>,
    /// Hold a `POST /apps/APP` this long (ms) before passing it on.
    pub hold_post_ms: Arc<AtomicU64>,
    /// Hold a `GET /apps/APP/ID` this long (ms) before passing it on.
    pub hold_get_ms: Arc<AtomicU64>,
    /// Requests held, and held requests forwarded.
    pub held: Arc<AtomicUsize>,
    pub forwarded_late: Arc<AtomicUsize>,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/eureka", self.port)
    }
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

pub async fn proxy(upstream_port: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = Proxy {
        port: listener.local_addr().unwrap().port(),
        fail: Arc::default(),
        hold_post_ms: Arc::default(),
        hold_get_ms: Arc::default(),
        held: Arc::default(),
        forwarded_late: Arc::default(),
        log: Arc::default(),
    };
    let upstream = format!("127.0.0.1:{upstream_port}");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let px = p.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (client, upstream, px) = (client.clone(), upstream.clone(), px.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (client, upstream, px) = (client.clone(), upstream.clone(), px.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let pq = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default();
                        let failing = px.fail.load(Ordering::SeqCst);
                        let segments = pq.split('?').next().unwrap_or("").split('/').count();
                        let hold_ms = if parts.method == http::Method::POST {
                            px.hold_post_ms.load(Ordering::SeqCst)
                        } else if parts.method == http::Method::GET
                            && !pq.contains('?')
                            && segments == 5
                        {
                            // /eureka/apps/APP/ID
                            px.hold_get_ms.load(Ordering::SeqCst)
                        } else {
                            0
                        };
                        px.log.lock().unwrap().push(format!(
                            "{} {pq}{}{}",
                            parts.method,
                            if failing { " -> 503" } else { "" },
                            if hold_ms > 0 && !failing {
                                format!(" (held {hold_ms} ms)")
                            } else {
                                String::new()
                            }
                        ));
                        if failing {
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .status(503)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            );
                        }
                        if hold_ms > 0 {
                            px.held.fetch_add(1, Ordering::SeqCst);
                        }
                        let mut fwd = Request::builder()
                            .method(parts.method.clone())
                            .uri(format!("http://{upstream}{pq}"));
                        for (k, v) in &parts.headers {
                            if k != http::header::HOST {
                                fwd = fwd.header(k, v);
                            }
                        }
                        let fwd = fwd.body(Full::new(body)).unwrap();
                        // Detached: a held write reaches the server even if
                        // the caller went away.
                        let late = px.forwarded_late.clone();
                        let task = tokio::spawn(async move {
                            if hold_ms > 0 {
                                tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                            }
                            let r = client.request(fwd).await;
                            if hold_ms > 0 {
                                late.fetch_add(1, Ordering::SeqCst);
                            }
                            match r {
                                Ok(resp) => {
                                    let (p, b) = resp.into_parts();
                                    let b =
                                        b.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                    Response::from_parts(p, Full::new(b))
                                }
                                Err(_) => Response::builder()
                                    .status(502)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            }
                        });
                        Ok::<_, Infallible>(task.await.unwrap())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    p
}

pub async fn served(eureka: &EurekaFixture, app: &str, id: &str) -> Option<String> {
    eureka
        .statuses(app)
        .await
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| s)
}

/// Counts what a balancer reading `eureka` sends to `app` (100 requests).
pub async fn route_through(
    eureka: &EurekaFixture,
    app: &str,
) -> std::collections::BTreeMap<String, usize> {
    let registry = EurekaRegistry::builder()
        .server_url(eureka.url())
        .fetch_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    registry.ready().await.expect("first fetch");
    let lb = tower_ribbon::LoadBalancer::builder()
        .source(registry)
        .service(app)
        .build(support::http_client())
        .unwrap();
    support::tally(&lb, &format!("http://{app}/x"), 100).await
}
