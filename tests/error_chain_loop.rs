//! An inner error whose source chain loops (an error type whose `source()`
//! returns itself) fails its request like any other unclassifiable error,
//! and its text ends. Before, the classification walks followed `source()`
//! with no bound and the request hung, its thread at 100 % CPU (helper
//! 214); every walk of a source chain now stops at 64 errors
//! (`error::MAX_CHAIN`), the gRPC ones included.

use std::time::Duration;

use http::{Request, Response};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::{BoxError, LoadBalancer};

#[derive(Debug)]
struct Loops;

impl std::fmt::Display for Loops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an error whose source is itself")
    }
}

impl std::error::Error for Loops {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self)
    }
}

#[test]
fn a_looping_source_chain_ends_the_request() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let text = rt.block_on(async {
            let inner = tower::service_fn(|_req: Request<String>| async {
                Err::<Response<String>, BoxError>(Box::new(Loops))
            });
            let lb = LoadBalancer::builder()
                .source(StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap())
                .service("svc")
                .retry(RetryPolicy::none())
                .build(inner)
                .unwrap();
            let req = Request::get("http://svc/").body(String::new()).unwrap();
            lb.request(req).await.unwrap_err().to_string()
        });
        let _ = tx.send(text);
    });
    let text = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the request answers within 5 s");
    eprintln!("{text}");
    assert!(text.contains("an error whose source is itself"), "{text}");
}
