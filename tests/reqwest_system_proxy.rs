//! `ReqwestService::default()` keeps reqwest's system proxy (the
//! `HTTP_PROXY` / `http_proxy` / `ALL_PROXY` environment variables), so
//! with one set in the environment every attempt goes through that
//! forward proxy instead of to the picked instance directly. An instance
//! that refuses connections then answers a POST with the proxy's 502:
//! the request never reached an instance, but the balancer sees a 502
//! from the instance and does not retry the POST (and a proxy that is
//! down is a connect failure of every instance: every breaker opens).
//! Without the variable, the same POST goes to the healthy instance.
//! Found by an attack; `ReqwestService::default()` now builds its client
//! with `no_proxy()`: the POST goes to the healthy instance, the proxy
//! takes nothing.
//!
//! Its own test binary: it sets a process-wide environment variable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

#[path = "common/closed_port.rs"]
mod closed_port;
#[path = "common/ok_server.rs"]
mod ok_server;

/// A forward proxy as squid or nginx behave for plain `http`: reads the
/// request head (absolute form), connects to its authority and pipes both
/// ways; a refused connect is answered 502. Counts the requests it took.
async fn forward_proxy() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                count.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&head).to_string();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                let authority = target
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                match tokio::net::TcpStream::connect(&authority).await {
                    Ok(mut upstream) => {
                        let _ = upstream.write_all(&head).await;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(_) => {
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn the_default_client_ignores_the_system_proxy() {
    let (proxy, proxied) = forward_proxy().await;
    // As a deployment's environment sets it (CI, corporate egress).
    // SAFETY: set before any client is built; this binary has one test.
    unsafe {
        std::env::set_var("HTTP_PROXY", format!("http://127.0.0.1:{proxy}"));
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let closed = closed_port::ClosedPort::new().unwrap();
    let (healthy, served) = ok_server::ok_server(false).await;
    let lb = ok_server::round_robin(
        &[closed.port(), healthy],
        tower_ribbon::ReqwestService::default(),
        |b| b,
    )
    .await;
    let post = http::Request::post("http://svc/orders")
        .body(reqwest::Body::from("one order"))
        .unwrap();
    let outcome = match lb.clone().oneshot(post).await {
        Ok(response) => format!("{}", response.status()),
        Err(e) => format!("error {e}"),
    };
    eprintln!(
        "outcome {outcome}; proxied {}, served {}",
        proxied.load(Ordering::SeqCst),
        served.load(Ordering::SeqCst)
    );
    assert_eq!(
        outcome, "200 OK",
        "a POST that never reached an instance was not sent to the healthy one"
    );
    assert_eq!(proxied.load(Ordering::SeqCst), 0, "sent through the proxy");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}
