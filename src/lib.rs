//! # tower-ribbon
//!
//! Client-side load balancing for [tower]: Netflix Ribbon for Rust.
//!
//! A caller writes `http://user-service/api/x`; the crate resolves
//! `user-service` through an [`InstanceSource`](discovery::InstanceSource)
//! (Eureka, a static list, your own), keeps the instance list fresh in the
//! background, picks an instance with a [`Rule`](rule::Rule), rewrites the
//! request to it and hands it to any HTTP client that is a tower `Service`
//! (hyper-util's client, or `reqwest` through [`ReqwestService`]).
//!
//! ```no_run
//! use tower::ServiceExt;
//! use tower_ribbon::discovery::eureka::EurekaSource;
//! use tower_ribbon::{LoadBalancer, ReqwestService};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let eureka = EurekaSource::builder().server_url("http://127.0.0.1:8761/eureka").build()?;
//! let lb = LoadBalancer::builder()
//!     .source(eureka)
//!     .service("user-service")
//!     .build(ReqwestService::new(reqwest::Client::new()))?;
//! let request = http::Request::get("http://user-service/api/x").body(String::new())?;
//! let response = lb.oneshot(request).await?;
//! assert!(response.status().is_success());
//! # Ok(()) }
//! ```
//!
//! Ribbon's names map to this crate's as follows: `Server` → [`Instance`],
//! `ServerList` → [`InstanceSource`](discovery::InstanceSource),
//! `ServerListUpdater` → the refresh ([`RefreshConfig`](discovery::RefreshConfig)),
//! `IRule` → [`Rule`](rule::Rule), `ServerStats` → [`EndpointStats`](stats::EndpointStats),
//! `ILoadBalancer` → [`LoadBalancer`].
//!
//! ## Features
//! - `eureka` (default): [`discovery::eureka`].
//! - `reqwest` (default): [`ReqwestService`].
//!
//! [tower]: https://docs.rs/tower

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub)]

pub mod config;
pub mod discovery;
pub mod error;
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

pub use error::{BoxError, DiscoveryError, Error};
pub use instance::{Endpoint, Instance, InstanceStatus};
#[cfg(feature = "reqwest")]
pub use service::ReqwestService;
pub use service::{Builder, LoadBalancer, LoadBalancerLayer, ResponseFuture};

/// The README's examples, compiled as doc tests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
