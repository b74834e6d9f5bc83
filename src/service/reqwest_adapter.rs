//! [`ReqwestService`]: `reqwest::Client` as an inner service (feature
//! `reqwest`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::Service;

/// Makes a [`reqwest::Client`] a `Service<http::Request<B>>` returning
/// `http::Response<reqwest::Body>`, so it can sit inside a
/// [`LoadBalancer`](crate::LoadBalancer).
///
/// Any body that converts into `reqwest::Body` works (`String`, `Vec<u8>`,
/// `bytes::Bytes`, `reqwest::Body`). reqwest parses URLs with the `url`
/// crate, which does not accept IPv6 zone ids; use the hyper-util client
/// for link-local instances.
///
/// ```
/// use tower_ribbon::ReqwestService;
///
/// let svc = ReqwestService::new(reqwest::Client::new());
/// # let _ = svc;
/// ```
#[derive(Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client` (its pool, timeouts and TLS settings are kept).
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The wrapped client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

impl fmt::Debug for ReqwestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestService").finish_non_exhaustive()
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: Into<reqwest::Body>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(req);
        Box::pin(async move {
            let response = client.execute(request?).await?;
            Ok(http::Response::from(response))
        })
    }
}
