//! Balances tonic calls over three local tonic servers.
//!
//! ```text
//! cargo run --example grpc --features grpc
//! cargo run --release --example grpc --features grpc -- --bench [calls]
//! ```
//!
//! Starts three `grpc.health.v1.Health` servers on 127.0.0.1 (the service
//! and client come generated in `tonic-health`, so no `protoc` is needed),
//! makes tonic's generated `HealthClient` send its calls through a
//! `tower_ribbon::LoadBalancer` over a `StaticSource` (any instance source,
//! Eureka included, works the same), with origin `http://my-grpc-service`,
//! and shows:
//! 1. unary `Check` and server-streaming `Watch` calls spread over the three;
//! 2. one server answering UNAVAILABLE: `Check` is opted into retries, so
//!    every call still succeeds, and outlier detection ejects the server
//!    after five failures;
//! 3. one server dying: opted-in calls do not fail.
//!
//! With `--bench`, it instead times `calls` unary calls (default 20 000),
//! one at a time and 32 at a time, through the balancer and through
//! tonic's own `Channel` (`Channel::balance_list` over the same three
//! servers, and a single endpoint) and through the balancer's inner client
//! alone (hyper-util's h2c client, one server), and prints calls/s and µs
//! per call (elapsed time / calls).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::grpc::{self, GrpcRetryLayer};
use tower_ribbon::retry::RetryPolicy;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A Health service that names itself in `x-backend` and can be told to
/// answer UNAVAILABLE.
#[derive(Clone)]
struct Named {
    name: &'static str,
    unavailable: Arc<AtomicBool>,
}

impl Named {
    fn reply<T>(&self, message: T) -> Result<Response<T>, Status> {
        if self.unavailable.load(Ordering::Relaxed) {
            return Err(Status::unavailable(format!("{} is draining", self.name)));
        }
        let mut response = Response::new(message);
        response.metadata_mut().insert(
            "x-backend",
            tonic::metadata::MetadataValue::from_static(self.name),
        );
        Ok(response)
    }
}

#[tonic::async_trait]
impl Health for Named {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.reply(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        })
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let items = [ServingStatus::Serving, ServingStatus::NotServing]
            .map(|s| Ok(HealthCheckResponse { status: s as i32 }));
        self.reply(Box::pin(tokio_stream::iter(items)) as Self::WatchStream)
    }
}

/// A server on a free loopback port; it stops when `stop` is dropped.
struct Running {
    addr: SocketAddr,
    service: Named,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start(name: &'static str) -> Result<Running, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = Named {
        name,
        unavailable: Arc::new(AtomicBool::new(false)),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(HealthServer::new(service.clone()))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    Ok(Running {
        addr,
        service,
        stop: Some(stop),
    })
}

fn request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

fn backend_of<T>(response: &Response<T>) -> String {
    response
        .metadata()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let bench = args.next().as_deref() == Some("--bench");
    let calls: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);

    let mut servers = vec![start("a").await?, start("b").await?, start("c").await?];
    let list = servers
        .iter()
        .map(|s| s.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    println!("tonic servers: {list}");

    // The balanced transport: h2c client, gRPC status classification,
    // `Check` opted into retries (it is safe to repeat).
    let source = StaticSource::new().with_list("my-grpc-service", &list)?;
    let channel = grpc::balance(
        LoadBalancer::builder()
            .source(source)
            .service("my-grpc-service")
            .retry(RetryPolicy::default().max_next(2)),
        grpc::h2c_client(),
        GrpcRetryLayer::new().method("/grpc.health.v1.Health/Check"),
    )?;
    let balanced =
        HealthClient::with_origin(channel, http::Uri::from_static("http://my-grpc-service"));

    if bench {
        return overhead(&servers, balanced, calls).await;
    }

    // 1. Unary and server-streaming calls, balanced per call.
    let mut unary = BTreeMap::new();
    for _ in 0..9 {
        let response = balanced.clone().check(request()).await?;
        *unary.entry(backend_of(&response)).or_insert(0) += 1;
    }
    println!("9 Check calls: {unary:?}");
    let mut streaming = BTreeMap::new();
    for _ in 0..3 {
        let response = balanced.clone().watch(request()).await?;
        let name = backend_of(&response);
        let mut stream = response.into_inner();
        let mut n = 0;
        while stream.message().await?.is_some() {
            n += 1;
        }
        streaming.insert(name, n);
    }
    println!("3 Watch calls, messages per server: {streaming:?}");

    // 2. b answers UNAVAILABLE: retried, then ejected.
    servers[1]
        .service
        .unavailable
        .store(true, Ordering::Relaxed);
    let mut served = BTreeMap::new();
    for _ in 0..30 {
        let name = match balanced.clone().check(request()).await {
            Ok(response) => backend_of(&response),
            Err(status) => format!("{:?}", status.code()),
        };
        *served.entry(name).or_insert(0) += 1;
    }
    println!("b UNAVAILABLE, 30 Check calls: {served:?}");

    // 3. c dies and b recovers: c's connections are refused (retried
    //    elsewhere); with b ejected and c failing, fewer than half the
    //    instances look healthy, so the panic threshold lets b serve again.
    servers[1]
        .service
        .unavailable
        .store(false, Ordering::Relaxed);
    servers[2].stop.take();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut served = BTreeMap::new();
    for _ in 0..30 {
        let name = match balanced.clone().check(request()).await {
            Ok(response) => backend_of(&response),
            Err(status) => format!("{:?}", status.code()),
        };
        *served.entry(name).or_insert(0) += 1;
    }
    println!("c stopped, 30 Check calls: {served:?}");
    Ok(())
}

/// Times `calls` unary calls with `client`, `concurrency` at a time.
async fn time<T>(
    client: &HealthClient<T>,
    calls: usize,
    concurrency: usize,
) -> Result<Duration, BoxError>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    T::Error: Into<BoxError>,
{
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let share = calls / concurrency + usize::from(worker < calls % concurrency);
        tasks.spawn(async move {
            for _ in 0..share {
                client.clone().check(request()).await?;
            }
            Ok::<_, Status>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

async fn overhead<T>(
    servers: &[Running],
    balanced: HealthClient<T>,
    calls: usize,
) -> Result<(), BoxError>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    T::Error: Into<BoxError>,
{
    let endpoints = servers
        .iter()
        .map(|s| Endpoint::from_shared(format!("http://{}", s.addr)))
        .collect::<Result<Vec<_>, _>>()?;
    let list = HealthClient::new(Channel::balance_list(endpoints.clone().into_iter()));
    let single = HealthClient::new(endpoints[0].connect().await?);
    // The balancer's inner client alone, to one server: what the balancer
    // adds is the difference to this row.
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let raw_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build::<_, tonic::body::Body>(connector);
    let raw = HealthClient::with_origin(raw_client, format!("http://{}", servers[0].addr).parse()?);

    println!(
        "{calls} unary Check calls per row (µs/call = elapsed / calls), release build recommended"
    );
    println!(
        "{:<34} {:>11} {:>10} {:>9}",
        "path", "concurrency", "calls/s", "µs/call"
    );
    for concurrency in [1, 32] {
        // Warm up every path (connections, pools), then time them in turn.
        time(&balanced, 300, concurrency).await?;
        time(&list, 300, concurrency).await?;
        time(&single, 300, concurrency).await?;
        time(&raw, 300, concurrency).await?;
        // Five rounds, each path in turn, so load from elsewhere on the
        // machine falls on all paths alike.
        let names = [
            "tower-ribbon LoadBalancer (3)",
            "tonic Channel::balance_list (3)",
            "tonic Channel, one endpoint",
            "hyper-util h2c client, one server",
        ];
        let mut took = [Duration::ZERO; 4];
        let rounds = 5;
        for _ in 0..rounds {
            took[0] += time(&balanced, calls / rounds, concurrency).await?;
            took[1] += time(&list, calls / rounds, concurrency).await?;
            took[2] += time(&single, calls / rounds, concurrency).await?;
            took[3] += time(&raw, calls / rounds, concurrency).await?;
        }
        let calls = calls / rounds * rounds;
        let rows = names.into_iter().zip(took);
        for (name, took) in rows {
            let per_call = took.as_secs_f64() * 1e6 / calls as f64;
            let rate = calls as f64 / took.as_secs_f64();
            println!("{name:<34} {concurrency:>11} {rate:>10.0} {per_call:>9.1}");
        }
    }
    Ok(())
}
