//! What the load generator calls: hyper-util's client directly, a
//! `LoadBalancer` over it with one of the crate's rules, or the peer,
//! tower's `balance::p2c::Balance` over `load::PeakEwma`-wrapped endpoints
//! that send real HTTP requests through the same kind of client.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::{Service, ServiceExt};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::instance::Instance;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule;
use tower_ribbon::service::HashKey;

/// The service id every scenario balances.
pub const SERVICE: &str = "svc";

/// The header carrying the consistent-hash key.
pub const KEY_HEADER: &str = "x-key";

/// hyper-util's HTTP/1 client, with `TCP_NODELAY`.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A fresh client (its own connection pool).
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Something that sends one GET and says how it ended: the status once
/// the whole body is read, or `None` for an error.
pub trait Target: Clone + Send + Sync + 'static {
    /// Sends one request, with `key` in [`KEY_HEADER`] if given.
    fn send(&self, key: Option<u64>) -> impl Future<Output = Option<u16>> + Send + 'static;
}

async fn read<B: http_body::Body>(response: Response<B>) -> Option<u16> {
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// hyper-util's client calling one backend, no balancer.
#[derive(Clone)]
pub struct Direct {
    client: HttpClient,
    uri: Uri,
}

impl Direct {
    /// Calls `http://<addr>/`.
    pub fn new(client: HttpClient, addr: std::net::SocketAddr) -> Self {
        let uri = format!("http://{addr}/").parse().expect("valid uri");
        Self { client, uri }
    }
}

impl Target for Direct {
    fn send(&self, _key: Option<u64>) -> impl Future<Output = Option<u16>> + Send + 'static {
        let request = Request::get(self.uri.clone())
            .body(Empty::new())
            .expect("request");
        let response = self.client.request(request);
        async move { read(response.await.ok()?).await }
    }
}

/// The crate's `LoadBalancer` over hyper-util's client.
#[derive(Clone)]
pub struct Lb {
    /// The balancer (snapshots and stats are read from it).
    pub lb: LoadBalancer<HttpClient>,
    /// `http://svc/`, parsed once as [`Direct`]'s URI is.
    pub uri: Uri,
}

fn lb_request(uri: &Uri, key: Option<u64>) -> Request<Empty<Bytes>> {
    let mut request = Request::get(uri.clone());
    if let Some(key) = key {
        request = request.header(HeaderName::from_static(KEY_HEADER), HeaderValue::from(key));
    }
    request.body(Empty::new()).expect("request")
}

impl Target for Lb {
    fn send(&self, key: Option<u64>) -> impl Future<Output = Option<u16>> + Send + 'static {
        // By reference, as `Direct` calls `Client::request`: no clone of
        // the balancer (and its client) per request.
        let sent = self.lb.request(lb_request(&self.uri, key));
        async move { read(sent.await.ok()?).await }
    }
}

/// [`Lb`] sending with tower's `lb.clone().oneshot(req)` instead of
/// `lb.request(req)`: a clone and drop of the whole balancer per request.
/// Its own type, so [`Lb`]'s future carries nothing for this mode.
#[derive(Clone)]
pub struct LbOneshot(pub Lb);

impl Target for LbOneshot {
    fn send(&self, key: Option<u64>) -> impl Future<Output = Option<u16>> + Send + 'static {
        let request = lb_request(&self.0.uri, key);
        let lb = self.0.lb.clone();
        async move { read(lb.oneshot(request).await.ok()?).await }
    }
}

/// One endpoint of the peer: rewrites the URI to its backend and sends
/// through hyper-util's client (always ready, as the client is).
#[derive(Clone)]
pub struct PeerHop {
    client: HttpClient,
    authority: Authority,
}

impl Service<Request<Empty<Bytes>>> for PeerHop {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Empty<Bytes>>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).expect("valid uri");
        self.client.request(req)
    }
}

type PeerBalance = Balance<ServiceList<Vec<PeakEwma<PeerHop>>>, Request<Empty<Bytes>>>;

/// The peer: tower's p2c over `PeakEwma` endpoints (default RTT 30 ms and
/// decay 10 s, as the crate's `PeakEwmaP2c` and stats). `Balance` is not
/// `Clone`, so clones share it behind a mutex held only for
/// `poll_ready` (its pick) and `call`; tower's `Buffer` would do the same
/// through a channel and a worker task.
#[derive(Clone)]
pub struct Peer {
    balance: Arc<tokio::sync::Mutex<PeerBalance>>,
    /// `http://svc/`, parsed once as [`Lb`]'s URI is.
    uri: Uri,
}

impl Peer {
    /// A p2c balancer over the backends at `addrs`, one shared client.
    pub fn new(client: &HttpClient, addrs: &[std::net::SocketAddr]) -> Self {
        let endpoints = addrs
            .iter()
            .map(|addr| {
                let hop = PeerHop {
                    client: client.clone(),
                    authority: addr.to_string().parse().expect("valid authority"),
                };
                PeakEwma::new(
                    hop,
                    Duration::from_millis(30),
                    Duration::from_secs(10).as_nanos() as f64,
                    CompleteOnResponse::default(),
                )
            })
            .collect::<Vec<_>>();
        Self {
            balance: Arc::new(tokio::sync::Mutex::new(Balance::new(ServiceList::new(
                endpoints,
            )))),
            uri: Uri::from_static("http://svc/"),
        }
    }
}

impl Target for Peer {
    fn send(&self, _key: Option<u64>) -> impl Future<Output = Option<u16>> + Send + 'static {
        let balance = Arc::clone(&self.balance);
        let request = Request::get(self.uri.clone())
            .body(Empty::new())
            .expect("request");
        async move {
            let response = {
                let mut guard = balance.lock().await;
                let ready = ServiceExt::<Request<Empty<Bytes>>>::ready(&mut *guard)
                    .await
                    .ok()?;
                ready.call(request)
            };
            read(response.await.ok()?).await
        }
    }
}

/// The crate's rules, as the scenarios build them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    RoundRobin,
    Random,
    WeightedResponseTime,
    WeightedRoundRobin,
    ConsistentHash,
    BestAvailable,
    PeakEwmaP2c,
    AvailabilityFiltering,
    ZoneAvoidance,
}

impl RuleKind {
    /// Every rule of the crate.
    pub const ALL: [RuleKind; 9] = [
        RuleKind::RoundRobin,
        RuleKind::Random,
        RuleKind::WeightedResponseTime,
        RuleKind::WeightedRoundRobin,
        RuleKind::ConsistentHash,
        RuleKind::BestAvailable,
        RuleKind::PeakEwmaP2c,
        RuleKind::AvailabilityFiltering,
        RuleKind::ZoneAvoidance,
    ];

    /// The name in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::RoundRobin => "round_robin",
            RuleKind::Random => "random",
            RuleKind::WeightedResponseTime => "weighted_response_time",
            RuleKind::WeightedRoundRobin => "weighted_round_robin",
            RuleKind::ConsistentHash => "consistent_hash",
            RuleKind::BestAvailable => "best_available",
            RuleKind::PeakEwmaP2c => "peak_ewma_p2c",
            RuleKind::AvailabilityFiltering => "availability_filtering_rr",
            RuleKind::ZoneAvoidance => "zone_avoidance_rr",
        }
    }

    /// Whether the rule reads latency or load.
    pub fn latency_aware(self) -> bool {
        matches!(
            self,
            RuleKind::WeightedResponseTime | RuleKind::BestAvailable | RuleKind::PeakEwmaP2c
        )
    }
}

/// How the scenarios configure a balancer beyond its rule.
#[derive(Debug, Clone)]
pub struct LbConfig {
    pub retry: RetryPolicy,
    pub outliers: OutlierDetection,
    pub refresh: RefreshConfig,
    /// Recompute interval of `WeightedResponseTime` (Ribbon's default,
    /// 30 s, would never fire within a scenario run).
    pub wrt_interval: Duration,
}

/// The instances of `ports`, in zones a/b/c by position.
pub fn instances(ports: &[(usize, u16)]) -> Vec<Instance> {
    ports
        .iter()
        .map(|&(index, port)| {
            Instance::new(SERVICE, "127.0.0.1", port)
                .expect("valid instance")
                .with_id(format!("b{index}"))
                .with_zone(["zone-a", "zone-b", "zone-c"][index % 3])
        })
        .collect()
}

/// A balancer over `source` with `kind` (seeded where the rule draws) and
/// `config`, around a fresh client; waits for the first list.
pub async fn build_lb(
    kind: RuleKind,
    seed: u64,
    source: StaticSource,
    config: &LbConfig,
) -> Result<Lb, Box<dyn std::error::Error>> {
    let read_timeout = Some(tower_ribbon::service::DEFAULT_READ_TIMEOUT);
    build_lb_with(kind, seed, source, config, read_timeout).await
}

/// [`build_lb`] with the balancer's per-try (read) timeout set
/// (`Builder::read_timeout`; `None` for none).
pub async fn build_lb_with(
    kind: RuleKind,
    seed: u64,
    source: StaticSource,
    config: &LbConfig,
    read_timeout: Option<Duration>,
) -> Result<Lb, Box<dyn std::error::Error>> {
    let builder = LoadBalancer::builder()
        .read_timeout(read_timeout)
        .source(source)
        .service(SERVICE)
        .retry(config.retry.clone())
        .outlier_detection(config.outliers.clone())
        .refresh(config.refresh.clone());
    let wrt_interval = config.wrt_interval;
    let builder = match kind {
        RuleKind::RoundRobin => builder.rule(|| rule::RoundRobin::with_start(0)),
        RuleKind::Random => builder.rule(move || rule::Random::with_seed(seed)),
        RuleKind::WeightedResponseTime => builder.rule(move || {
            rule::WeightedResponseTime::with_seed(seed).with_recompute_interval(wrt_interval)
        }),
        RuleKind::WeightedRoundRobin => builder.rule(rule::WeightedRoundRobin::new),
        RuleKind::ConsistentHash => builder
            .rule(rule::ConsistentHash::new)
            .hash_key(HashKey::header(HeaderName::from_static(KEY_HEADER))),
        RuleKind::BestAvailable => builder.rule(rule::BestAvailable::new),
        RuleKind::PeakEwmaP2c => builder.rule(move || rule::PeakEwmaP2c::with_seed(seed)),
        RuleKind::AvailabilityFiltering => {
            builder.rule(|| rule::AvailabilityFiltering::new(rule::RoundRobin::with_start(0)))
        }
        RuleKind::ZoneAvoidance => {
            builder.rule(|| rule::ZoneAvoidance::new(rule::RoundRobin::with_start(0)))
        }
    };
    let lb = builder.build(http_client())?;
    if !lb.ready_service(SERVICE).await {
        return Err("the first fetch of the instance list did not finish".into());
    }
    Ok(Lb {
        lb,
        uri: Uri::from_static("http://svc/"),
    })
}
