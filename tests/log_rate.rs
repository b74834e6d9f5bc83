//! Requests to unknown services are logged at INFO at most once a second
//! (`LogLimit`), the others at DEBUG and counted in the next INFO line:
//! the host name is the caller's choice (a gateway forwards any), so one
//! INFO line per request let callers flood the logs (before: 1 000
//! requests, 1 000 INFO lines).

#[path = "common/log_capture.rs"]
mod log_capture;

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;

#[tokio::test(start_paused = true)]
async fn unknown_services_log_one_info_line_a_second() {
    let (_guard, captured) = log_capture::capture(tracing::Level::INFO);
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_list("known", "127.0.0.1:1")
                .unwrap(),
        )
        .service("known")
        .build(inner)
        .unwrap();
    let send = |n: usize| {
        let lb = lb.clone();
        async move {
            for i in 0..n {
                let req = Request::get(format!("http://made-up-{i}/"))
                    .body(())
                    .unwrap();
                let err = lb.clone().oneshot(req).await.unwrap_err();
                assert!(err.is_unknown_service(), "{err}");
            }
        }
    };
    send(1_000).await;
    let lines = |text: &str| {
        text.lines()
            .filter(|l| l.contains("unknown service"))
            .count()
    };
    assert_eq!(lines(&captured.text()), 1, "{}", captured.text());
    assert!(
        captured.text().contains("suppressed=0"),
        "{}",
        captured.text()
    );

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    send(10).await;
    let text = captured.text();
    assert_eq!(lines(&text), 2, "{text}");
    assert!(text.contains("suppressed=999"), "{text}");
    assert!(text.contains("made-up-0"), "{text}");
}
