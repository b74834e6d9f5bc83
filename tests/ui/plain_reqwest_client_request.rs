// Through `request`: a plain `reqwest::Client` is not a `tower::Service<http::Request<_>>`:
// the error names `InnerService` and says to wrap it in `ReqwestService`.
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;

async fn call() {
    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:8081")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(reqwest::Client::new())
        .unwrap();
    let request = http::Request::get("http://user-service/").body(String::new()).unwrap();
    let _ = lb.request(request).await;
}

fn main() {
    let _ = call();
}
