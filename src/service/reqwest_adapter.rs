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
/// Its errors name the request's URL with the query and fragment shown as
/// `***` (`for url (http://10.0.0.7:8080/api?***)`), as the balancer's
/// own errors do: a query may carry a token.
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
            let response = client
                .execute(request.map_err(hide_secrets)?)
                .await
                .map_err(hide_secrets)?;
            Ok(http::Response::from(response))
        })
    }
}

/// `e` with the query and fragment of its URL shown as `***` and its
/// userinfo removed: reqwest's error text and `Debug` name the whole URL
/// (`error sending request for url (http://h/api?access_token=S3cret)`),
/// and the balancer's error shows it as its source, where its own text
/// hides a query (`/api?***`) since it may carry a token.
fn hide_secrets(mut e: reqwest::Error) -> reqwest::Error {
    if let Some(url) = e.url_mut() {
        let _ = url.set_password(None);
        let _ = url.set_username("");
        if url.query().is_some() {
            url.set_query(Some("***"));
        }
        if url.fragment().is_some() {
            url.set_fragment(Some("***"));
        }
    }
    e
}
