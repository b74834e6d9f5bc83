//! # tower-ribbon
//!
//! Client-side load balancing for [tower]: Netflix Ribbon for Rust.
//!
//! A caller writes `http://user-service/api/x`; the crate resolves
//! `user-service` through an [`InstanceSource`](discovery::InstanceSource)
//! (Eureka, a static list, your own), keeps the instance list fresh in the
//! background, picks an instance with a [`Rule`](rule::Rule), rewrites the
//! request to it and hands it to any HTTP client that is a tower `Service`
//! (hyper-util's client, or `reqwest` through `ReqwestService`).
//!
//! ```no_run
//! use tower_ribbon::discovery::eureka::EurekaSource;
//! use tower_ribbon::{LoadBalancer, ReqwestService};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let eureka = EurekaSource::builder().server_url("http://127.0.0.1:8761/eureka").build()?;
//! let lb = LoadBalancer::builder()
//!     .source(eureka)
//!     .service("user-service")
//!     .build(ReqwestService::default())?; // reqwest, redirects off
//! let request = http::Request::get("http://user-service/api/x").body(String::new())?;
//! let response = lb.request(request).await?;
//! assert!(response.status().is_success());
//! # Ok(()) }
//! ```
//!
//! The balancer is also a tower `Service` (and [`LoadBalancerLayer`] a
//! `Layer`): `ServiceExt::oneshot`, `ServiceBuilder` and tower's middleware
//! work with it. [`LoadBalancer::request`] sends the same way through a
//! shared reference, with clearer compiler messages when the inner service
//! or the body does not fit.
//!
//! ## The request path
//!
//! In the background, one refresh task per service asks the source every
//! 30 s ([`RefreshConfig`](discovery::RefreshConfig)) and swaps in a new
//! immutable [`Snapshot`](discovery::Snapshot) of the `UP` instances. Each
//! request then takes these steps ([`service`] has the details):
//!
//! ```text
//! GET http://user-service/api/x
//!  1. URI host -> service       "user-service", case-insensitive (unknown: Error)
//!  2. service  -> snapshot      one atomic load, no lock
//!  3. snapshot -> picker        the Rule picks one healthy Endpoint, no allocation
//!  4. rewrite                   http://10.0.0.7:8081/api/x (path and query kept)
//!  5. inner service             hyper-util's client, ReqwestService, any tower Service
//!  6. stats and health          latency, in flight, circuit breaker, outlier ejection
//!  7. retry                     RetryPolicy: same or next instance, budget, backoff -> 3
//! ```
//!
//! The crate's pieces follow that path: [`instance`] (instances and their
//! live stats), [`discovery`] (sources, refresh, snapshots), [`rule`]
//! (pickers), [`service`] (the tower [`LoadBalancer`] and its [`Builder`]),
//! [`stats`] and [`health`] (outcomes, breaker, ejection), [`retry`]
//! ([`RetryPolicy`](retry::RetryPolicy)), [`error`] ([`Error`]), [`metrics`].
//!
//! Ribbon's names map to this crate's as follows: `Server` → [`Instance`],
//! `ServerList` → [`InstanceSource`](discovery::InstanceSource),
//! `ServerListUpdater` → the refresh ([`RefreshConfig`](discovery::RefreshConfig)),
//! `IRule` → [`Rule`](rule::Rule), `ServerStats` → [`EndpointStats`](stats::EndpointStats),
//! `ILoadBalancer` → [`LoadBalancer`].
//!
//! ## Features
//!
//! Each feature is one optional module (or adapter) and builds alone.
//! Without any, the crate still has instances, [`StaticSource`](discovery::StaticSource),
//! every rule, stats, passive health, retries and the [`LoadBalancer`] over
//! any tower HTTP `Service`.
//!
//! | feature | default | turns on | compiles in |
//! |---|---|---|---|
//! | `eureka` | yes | `discovery::eureka`: `EurekaSource`, `EurekaRegistry`, `EurekaRegistration`; turns on `hyper-util` | serde, serde_json, flate2, url, base64 |
//! | `reqwest` | yes | `ReqwestService` (a `reqwest::Client` 0.13 as inner service) and the `reqwest` re-export; reqwest's errors read as hyper-util's (connect failures, a request handed back unsent) and h2's | reqwest 0.13 (no default features), h2 (no features); names hyper and hyper-util, already reqwest's |
//! | `hyper-util` | yes | `health::ActiveHealthCheck` and `Builder::active_health_check`; hyper-util's connect errors classified as connect failures (stats, safe retries), and HTTP/2 streams the server did not process (`REFUSED_STREAM`, above an abrupt `GOAWAY`) for any hyper-util or reqwest client speaking HTTP/2; `service::upgrade` (also with `reqwest`): HTTP/1.1 upgrades counted in flight until the upgraded connection drops: turn it on when your inner client is hyper-util's | hyper, hyper-util, h2 (no features) |
//! | `config` | no | `config`: a balancer from Ribbon / Spring Cloud keys in `.properties` or YAML; turns on `hyper-util` (`HealthCheckPath`) | java-properties, yaml-rust2, encoding_rs |
//! | `dns` | no | `discovery::dns::DnsSource`: A/AAAA (Kubernetes headless services) and SRV with priority and weight, TTL-bounded refresh | hickory-resolver |
//! | `tls` | no | `tls::HttpsClient`: hyper-util's client over rustls (ring), http1 and h2 by ALPN, custom roots, client certificates; `https` Eureka server URLs (registry fetch and registration, basic auth, mutual TLS); turns on `hyper-util` | hyper-rustls, rustls, webpki-roots, rustls-native-certs |
//! | `grpc` | no | `grpc::balance` and `grpc::h2c_client`: tonic calls through the balancer with opt-in retries (`grpc::effective_status` and the classification are always compiled); turns on `hyper-util` | tonic |
//!
//! Items that need a feature say so in their docs (built with
//! `--all-features` and `--cfg docsrs`, as `[package.metadata.docs.rs]`
//! asks).
//!
//! [tower]: https://docs.rs/tower

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub)]
// One concept per function: clippy.toml sets the threshold to 80 lines.
#![warn(clippy::too_many_lines)]

/// Gates items on a feature at the module boundary and shows the feature on
/// docs.rs: every item gets `#[cfg(..)]` and `#[cfg_attr(docsrs,
/// doc(cfg(..)))]` together (hyper's `cfg_feature!`). Defined first so every
/// module below can use it.
///
/// ```text
/// cfg_feature! {
///     #![feature = "eureka"]
///     pub mod eureka;
/// }
/// ```
macro_rules! cfg_feature {
    (
        #![$meta:meta]
        $($item:item)*
    ) => {
        $(
            #[cfg($meta)]
            #[cfg_attr(docsrs, doc(cfg($meta)))]
            $item
        )*
    };
}

cfg_feature! {
    #![feature = "config"]
    pub mod config;
}
pub mod discovery;
pub mod error;
pub mod grpc;
mod hash;
pub mod health;
pub mod instance;
pub mod metrics;
pub mod retry;
mod rng;
pub mod rule;
pub mod service;
pub mod snapshot;
pub mod stats;
cfg_feature! {
    #![feature = "tls"]
    pub mod tls;
}

pub use error::{BoxError, DiscoveryError, Error};
pub use instance::{Endpoint, Instance, InstanceStatus};
pub use service::{Builder, InnerService, LoadBalancer, LoadBalancerLayer, ResponseFuture};

cfg_feature! {
    #![feature = "reqwest"]
    pub use service::ReqwestService;
    /// The reqwest crate this crate's [`ReqwestService`] is built against
    /// (0.13), so `tower_ribbon::reqwest::Client` always matches it, whatever
    /// other reqwest versions the application's tree holds.
    pub use reqwest;
}

/// The README's examples, compiled as doc tests so they stay correct.
#[cfg(all(
    doctest,
    feature = "eureka",
    feature = "reqwest",
    feature = "hyper-util",
    feature = "config"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
