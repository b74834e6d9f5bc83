//! `EurekaRegistry`: an older answer never overwrites a newer one. Found
//! by an attack: a slow background first fetch (instance 9001) landed
//! after a `refresh_now` full fetch (9002, the registry's state then) and
//! the copy went back to the gone 9001; deltas whose status-count hash
//! still matched (`UP_1_`) never repaired it. Answers are applied in send
//! order (the Java client's `fetchRegistryGeneration` drops any answer
//! when another was applied since it started), and since stop 60 a
//! `refresh_now` made while a fetch runs waits for it and fetches after
//! it (`flight`): here the delta sent after the slow full answer carries
//! the change, so the copy ends at 9002 with one full download, not two.
//! A stub registry: the real server cannot be made to answer one fetch
//! slowly.
#![cfg(feature = "eureka")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_ribbon::discovery::eureka::EurekaRegistry;

fn instance(port: u16) -> String {
    change(port, "ADDED")
}

fn change(port: u16, action: &str) -> String {
    format!(
        r#"{{"instanceId":"svc-{port}","hostName":"127.0.0.1","app":"SVC","ipAddr":"127.0.0.1","status":"UP","overriddenStatus":"UNKNOWN","port":{{"$":{port},"@enabled":"true"}},"securePort":{{"$":443,"@enabled":"false"}},"dataCenterInfo":{{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}},"vipAddress":"svc","actionType":"{action}"}}"#
    )
}

fn apps(instances: &[String]) -> String {
    let app = if instances.is_empty() {
        String::new()
    } else {
        format!(r#"{{"name":"SVC","instance":[{}]}}"#, instances.join(","))
    };
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"UP_1_","application":[{app}]}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_full_fetch_must_not_overwrite_a_newer_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let full_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&full_calls);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let calls = Arc::clone(&calls);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let calls = Arc::clone(&calls);
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = if path.ends_with("/apps/delta") {
                            // The change made once the first full answer was
                            // taken (9001 replaced by 9002; the server holds
                            // one UP instance), kept in the delta queue.
                            if calls.load(Ordering::SeqCst) == 0 {
                                apps(&[])
                            } else {
                                apps(&[change(9001, "DELETED"), change(9002, "ADDED")])
                            }
                        } else if path.ends_with("/apps") || path.ends_with("/apps/") {
                            let n = calls.fetch_add(1, Ordering::SeqCst);
                            if n == 0 {
                                // The first full fetch: the state of that moment
                                // (instance 9001), answered slowly.
                                tokio::time::sleep(Duration::from_millis(800)).await;
                                apps(&[instance(9001)])
                            } else {
                                // 9001 is gone, replaced by 9002.
                                apps(&[instance(9002)])
                            }
                        } else {
                            String::new()
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let registry = EurekaRegistry::builder()
        .server_urls(&format!("http://{addr}/eureka"))
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    // The background first fetch is in flight; a caller refreshes now: it
    // waits for that fetch, then fetches after it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    registry.refresh_now().await.unwrap();
    let ports = |r: &EurekaRegistry| {
        r.instances("SVC")
            .iter()
            .map(|i| i.port())
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(&registry), [9002], "the newer answer is applied");
    // The slow, older answer arrives.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // One full download: the call joined the slow one.
    assert_eq!(full_calls.load(Ordering::SeqCst), 1);
    // Later deltas (the same change again; the hash UP_1_ matches) keep it.
    for _ in 0..3 {
        registry.refresh_now().await.unwrap();
    }
    assert_eq!(
        ports(&registry),
        [9002],
        "the registry went back to the older answer (instance 9001, gone from Eureka) and deltas keep it"
    );
    let stats = registry.stats();
    assert_eq!(
        (
            stats.full_fetches,
            stats.delta_fetches,
            stats.hash_mismatches
        ),
        (1, 4, 0),
        "{stats:?}"
    );
}
