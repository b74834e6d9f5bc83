#![allow(dead_code, unused_imports)]
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;

const SVC: &str = "svc";

async fn recording_server(limit: u32) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(limit)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_big_header_collateral() {
    for (n, get) in [(200usize, false), (200, true), (20, false)] {
        let a = recording_server(4096).await;
        let b = recording_server(4096).await;
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        let lb = LoadBalancer::builder()
            .source(StaticSource::new().with_instances(
                SVC,
                vec![
                    Instance::new(SVC, "127.0.0.1", a).unwrap(),
                    Instance::new(SVC, "127.0.0.1", b).unwrap(),
                ],
            ))
            .service(SVC)
            .rule(|| RoundRobin::with_start(0))
            .build(client)
            .unwrap();
        assert!(lb.ready_service(SVC).await);
        let lb = Arc::new(lb);
        let mut tasks = Vec::new();
        for i in 0..n {
            let lb = Arc::clone(&lb);
            tasks.push(tokio::spawn(async move {
                let m = if get {
                    http::Method::GET
                } else {
                    http::Method::POST
                };
                let mut req = Request::builder()
                    .method(m)
                    .uri("http://svc/x")
                    .body(Full::new(Bytes::from_static(b"b")))
                    .unwrap();
                let big = i == n / 2;
                if big {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    req.headers_mut()
                        .insert("x-big", "v".repeat(20_000).parse().unwrap());
                }
                let r = lb.request(req).await;
                (
                    big,
                    r.map(|r| r.status().as_u16()).map_err(|e| {
                        let mut chain = format!(
                            "{:?}",
                            e.attempts().iter().map(|a| a.outcome).collect::<Vec<_>>()
                        );
                        let mut s: Option<&(dyn std::error::Error + 'static)> =
                            std::error::Error::source(&e);
                        while let Some(x) = s {
                            chain.push_str(&format!(" <- {x}"));
                            s = x.source();
                        }
                        chain
                    }),
                )
            }));
        }
        let mut ok = 0;
        let mut errs: HashMap<String, usize> = HashMap::new();
        for t in tasks {
            let (big, r) = t.await.unwrap();
            if big {
                continue;
            }
            match r {
                Ok(200) => ok += 1,
                other => *errs.entry(format!("{other:?}")).or_default() += 1,
            }
        }
        let snap = lb.snapshot(SVC).unwrap();
        let now = tokio::time::Instant::now();
        let st: Vec<_> = snap
            .endpoints()
            .iter()
            .map(|e| (e.stats().failures(), e.stats().is_ejected_at(now)))
            .collect();
        eprintln!(
            "n {n} get {get}: others ok {ok}/{}, errors {errs:?}; (failures, ejected) {st:?}",
            n - 1
        );
    }
}
