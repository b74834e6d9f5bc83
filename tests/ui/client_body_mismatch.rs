// A hyper-util client built for `Empty<Bytes>` bodies cannot send a
// `Full<Bytes>` request: rustc names both body types (E0308) at the call.
use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;

async fn call() {
    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:8081")
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(client)
        .unwrap();
    let request = http::Request::post("http://user-service/")
        .body(Full::new(Bytes::from_static(b"order")))
        .unwrap();
    let _ = lb.send(request).await;
}

fn main() {
    let _ = call();
}
