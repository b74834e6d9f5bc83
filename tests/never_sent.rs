//! A request hyper hands back unsent (the connection closed before it was
//! written: hyper-util's `Canceled` on a fresh connection) never reached
//! the server, so even a POST may go to another instance, as after a
//! refused connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tower::ServiceExt;
use tower_ribbon::stats::Outcome;

#[path = "common/never_reached.rs"]
mod never_reached;
use never_reached::{balancer, ok_server, post};

/// Accepts each connection and closes it at once, reading nothing;
/// counts the connections.
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

/// Ten POSTs over an instance that closes every connection at once and a
/// healthy one (round robin): each reaches the healthy one. Before, the 5
/// whose first attempt went to the closing instance failed with
/// `[OtherError]`, "POST not retried", though hyper had handed them back
/// unsent; 5 of 10 succeeded.
#[tokio::test]
async fn a_post_hyper_never_sent_goes_to_the_next_instance() {
    let (closing, accepted) = closing_server().await;
    let (healthy, served) = ok_server(false).await;
    let lb = balancer(closing, healthy, false).await;
    let mut ok = 0;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        match lb.clone().oneshot(post()).await {
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
    assert_eq!((ok, outcomes), (10, Vec::<Outcome>::new()));
    assert_eq!(served.load(Ordering::SeqCst), 10);
    // Every other first attempt goes to the closing instance until its
    // third failure in a row trips its circuit breaker (a connect
    // failure, Ribbon's threshold of 3).
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
