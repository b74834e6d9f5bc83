// A streaming request body cannot be copied for a retry: the error names
// `TryCloneBody` and says how to wrap or buffer it.
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;

type Chunks = tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>;

async fn call() {
    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:8081")
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<StreamBody<Chunks>>();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(client)
        .unwrap();
    let chunks: Chunks = tokio_stream::iter(vec![Ok(Frame::data(Bytes::from_static(b"order")))]);
    let request = http::Request::post("http://user-service/")
        .body(StreamBody::new(chunks))
        .unwrap();
    let _ = lb.send(request).await;
}

fn main() {
    let _ = call();
}
