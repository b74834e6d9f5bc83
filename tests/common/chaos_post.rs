//! Servers reached by one POST answered 503 through a balancer built from
//! a `.properties` text: the shared check of the profile-document tests
//! (a chaos document that must not apply sends it to one server).

use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;
use tower_ribbon::config::RibbonConfig;

use crate::support;

/// Six backends answering 503; `props` is given their `listOfServers`
/// value and returns the file's text; the servers one POST reached.
pub async fn servers_reached_by_a_post(props: impl Fn(&str) -> String) -> usize {
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
    let lb = RibbonConfig::from_properties_str(&props(&list.join(",")))
        .unwrap()
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
