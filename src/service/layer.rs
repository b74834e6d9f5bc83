//! [`LoadBalancerLayer`]: the balancer as a tower [`Layer`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::{LoadBalancer, Shared};

/// Wraps an inner service (an HTTP client) in a [`LoadBalancer`].
///
/// Built by [`Builder::layer`](super::Builder::layer). Every service the
/// layer wraps shares the same services, rules, stats and refresh tasks.
///
/// ```no_run
/// use tower::ServiceBuilder;
/// use tower_ribbon::discovery::StaticSource;
/// use tower_ribbon::LoadBalancer;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let source = StaticSource::new().with_list("user-service", "127.0.0.1:8081")?;
/// let layer = LoadBalancer::builder().source(source).service("user-service").layer()?;
/// // Redirects, reqwest's own retries and proxies off: see `ReqwestService`.
/// let client = reqwest::Client::builder()
///     .redirect(reqwest::redirect::Policy::none())
///     .retry(reqwest::retry::never())
///     .no_proxy()
///     .build()?;
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(tower_ribbon::ReqwestService::new(client));
/// # let _ = svc; Ok(()) }
/// ```
#[derive(Clone)]
pub struct LoadBalancerLayer {
    shared: Arc<Shared>,
}

impl LoadBalancerLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl<S> Layer<S> for LoadBalancerLayer {
    type Service = LoadBalancer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadBalancer::from_shared(inner, Arc::clone(&self.shared))
    }
}

impl fmt::Debug for LoadBalancerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancerLayer").finish_non_exhaustive()
    }
}
