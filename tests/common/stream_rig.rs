//! The rig the stream tests share (`streams_framing_h2.rs`,
//! `streams_held.rs`, `streams_read_ahead.rs`): a balancer over static
//! instances on 127.0.0.1 with no retry and no ejection (so every count
//! read is the stream's own), hyper clients over HTTP/1 and h2c, and the
//! per-instance readings the tests compare.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::{BoxError, LoadBalancer};

/// The request body the hyper clients here send.
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// A balancer of `svc` over `addrs`: no retry, no outlier detection, a
/// 10 s read timeout (far above any hold in the tests).
pub fn builder(svc: &str, addrs: &[SocketAddr]) -> tower_ribbon::Builder {
    let list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    LoadBalancer::builder()
        .source(StaticSource::new().with_list(svc, &list).unwrap())
        .service(svc)
        .retry(RetryPolicy::none())
        .read_timeout(Some(Duration::from_secs(10)))
        .outlier_detection(OutlierDetection::disabled())
}

/// In-flight count per instance of `svc`, in port order.
pub fn loads<S>(lb: &LoadBalancer<S>, svc: &str) -> Vec<usize> {
    let mut v: Vec<(u16, usize)> = lb
        .snapshot(svc)
        .unwrap()
        .endpoints()
        .iter()
        .map(|e| (e.instance().port(), e.stats().in_flight()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Latency average per instance of `svc`, in port order.
pub fn ewma<S>(lb: &LoadBalancer<S>, svc: &str) -> Vec<Option<Duration>> {
    let mut v: Vec<(u16, Option<Duration>)> = lb
        .snapshot(svc)
        .unwrap()
        .endpoints()
        .iter()
        .map(|e| (e.instance().port(), e.stats().ewma()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// An empty request body.
pub fn empty() -> ReqBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

/// A hyper-util client speaking h2c (prior knowledge) only.
pub fn h2c() -> Client<HttpConnector, ReqBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<ReqBody>()
}

/// A hyper-util client speaking HTTP/1.
pub fn h1() -> Client<HttpConnector, ReqBody> {
    Client::builder(TokioExecutor::new()).build_http::<ReqBody>()
}

/// `GET http://{host}{path}` with an empty body.
pub fn get(host: &str, path: &str) -> Request<ReqBody> {
    Request::get(format!("http://{host}{path}"))
        .body(empty())
        .unwrap()
}

/// A balancer of `name` whose one instance is `below:80`: stacked over a
/// balancer of `below`, it hands that one requests for `http://below/...`.
/// No retry, no outlier detection.
pub fn over(name: &str, below: &str) -> tower_ribbon::Builder {
    LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_list(name, &format!("{below}:80"))
                .unwrap(),
        )
        .service(name)
        .retry(RetryPolicy::none())
        .outlier_detection(OutlierDetection::disabled())
}

/// Reads `n` frames of `r`'s body, 2 s at most each, each a frame and
/// not an error; the data bytes among them.
pub async fn read_frames<B>(r: &mut http::Response<B>, n: usize) -> usize
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut bytes = 0;
    for _ in 0..n {
        let f = tokio::time::timeout(Duration::from_secs(2), r.body_mut().frame())
            .await
            .expect("a frame within 2 s")
            .expect("a frame")
            .expect("ok");
        bytes += f.data_ref().map_or(0, |d| d.len());
    }
    bytes
}
