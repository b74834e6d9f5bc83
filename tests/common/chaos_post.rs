//! Servers reached by one POST answered 503 through a balancer built from
//! a configuration text: the shared check of the profile-document tests
//! (a chaos document that must not apply sends it to one server).

use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;
use tower_ribbon::config::RibbonConfig;

use crate::support;

/// Six backends answering 503; `read` is given their `listOfServers`
/// value and returns the configuration read from a file naming them; the
/// servers one POST reached.
pub async fn servers_reached_by_a_post(read: impl Fn(&str) -> RibbonConfig) -> usize {
    let mut bs = Vec::new();
    for i in 0..6 {
        bs.push(
            support::backend::Backend::start_with(
                &format!("b{i}"),
                support::backend::Behavior::Status(503),
            )
            .await
            .unwrap(),
        );
    }
    let list: Vec<String> = bs
        .iter()
        .map(|b| format!("127.0.0.1:{}", b.port()))
        .collect();
    let lb = read(&list.join(","))
        .builder_for("svc")
        .unwrap()
        .build(support::http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let req = http::Request::post("http://svc/x")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = lb.clone().oneshot(req).await.unwrap();
    let _ = r.into_body().collect().await;
    bs.iter().map(|b| b.hits()).sum()
}
