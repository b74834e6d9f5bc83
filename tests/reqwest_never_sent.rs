//! `never_sent.rs` through `ReqwestService`: a POST that reqwest's inner
//! hyper-util client hands back unsent (an instance accepting and closing
//! every connection at once: hyper-util's `Canceled`) never reached a
//! server, so it may go to the next instance, as through hyper-util's
//! client. Run with default features and with
//! `--no-default-features --features reqwest` (as `scripts/test` does).
//! Before, in that build (found by an attack): the check for hyper-util's
//! `Canceled` was compiled with the `hyper-util` feature only, so 5 of
//! 10 POSTs failed with "POST not retried: the request may have reached
//! the server" and counted as the instance's other errors (10 of 10 with
//! the default features).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tower::ServiceExt;
use tower_ribbon::stats::Outcome;

#[path = "common/ok_server.rs"]
mod ok_server;

async fn closing_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn a_post_reqwest_never_sent_goes_to_the_next_instance() {
    let (closing, accepted) = closing_server().await;
    let (healthy, served) = ok_server::ok_server(false).await;
    let lb = ok_server::round_robin(
        &[closing, healthy],
        tower_ribbon::ReqwestService::default(),
        |b| b,
    )
    .await;
    let mut ok = 0;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for _ in 0..10 {
        let post = http::Request::post("http://svc/orders")
            .body(reqwest::Body::from("one order"))
            .unwrap();
        match lb.clone().oneshot(post).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            Err(err) => {
                outcomes.extend(err.attempts().iter().map(|a| a.outcome));
                eprintln!("{err}");
            }
        }
    }
    eprintln!(
        "ok {ok}, accepted {}, served {}",
        accepted.load(Ordering::SeqCst),
        served.load(Ordering::SeqCst)
    );
    assert_eq!((ok, outcomes), (10, Vec::<Outcome>::new()));
}
