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
/// **Redirects.** [`ReqwestService::default`] follows none, as Ribbon
/// (`FollowRedirects` false) and the hyper-util and tonic clients: a 3xx
/// reaches the caller as it came, counted against the instance that sent
/// it. A client passed to [`ReqwestService::new`] keeps its own policy,
/// and `reqwest::Client::new()` follows up to 10: a `307` or `308` then
/// sends the request (a POST with its body) again to wherever `Location`
/// points, another instance or another host, outside the balancer's
/// accounting (that server's answer, latency and errors are charged to
/// the instance picked, and no rule, breaker or retry budget sees the
/// second server). A `Location` reqwest cannot follow (another scheme:
/// an app link, `ftp:`) fails the request as the caller's error (the
/// instance had answered: not retried, counted against no instance); a
/// redirect target refusing the connection fails with an error naming
/// the instance's URL, read as the instance's connect failure, so the
/// request, a POST included, is sent again to another instance. Build the
/// client with `.redirect(reqwest::redirect::Policy::none())` to keep
/// every request to the instance the balancer picked.
///
/// **HTTP/2.** A `Host` the caller set is kept on a request that says
/// HTTP/1.1 (see the service module docs, step 4); over HTTP/2 a `Host`
/// that differs from `:authority` makes a request malformed (RFC 9113
/// §8.3.1), and servers such as Go's `net/http` answer it with 400. The
/// balancer drops it on requests whose version is HTTP/2, but a client
/// built with `http2_prior_knowledge()` sends every request over HTTP/2
/// whatever its version says: tell the adapter so with
/// [`http2_only`](ReqwestService::http2_only), and it drops such a `Host`
/// from every request. A client that negotiates HTTP/2 by ALPN is not
/// covered (the protocol is known only once connected); set the request's
/// version to HTTP/2, or set no `Host`, when its instances speak HTTP/2.
///
/// **reqwest's own retries.** reqwest re-sends on a new connection, to the
/// same instance, a request whose HTTP/2 stream failed with a graceful
/// `GOAWAY` (`NO_ERROR`) or `REFUSED_STREAM` (its retry of protocol NACKs,
/// on by default). hyper's client gives a graceful `GOAWAY`'s error to a
/// stream it had just sent, which a draining server runs (see
/// [`Outcome::ConnectionLost`](crate::stats::Outcome::ConnectionLost)):
/// the re-send runs such a POST twice at that instance, or, its listener
/// closed, fails to connect and reads as never sent, so the balancer sends
/// it to another. [`ReqwestService::default`] turns reqwest's retries off
/// (`reqwest::retry::never()`), as it does redirects, and leaves retries
/// to the balancer's policy; build a client given to
/// [`ReqwestService::new`] the same way.
///
/// **Proxies.** reqwest sends through the proxy its environment names
/// (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and their lowercase forms)
/// unless told otherwise. Every attempt then goes to that forward proxy,
/// not to the instance the balancer picked: the proxy's answers, latency
/// and errors are charged to the instance, and an instance refusing
/// connections answers with the proxy's `502`, so a POST that never
/// reached it reads as answered by it and is not sent to another one (a
/// proxy that is down fails every instance's connects, opening every
/// breaker). [`ReqwestService::default`] builds its client with
/// `no_proxy()`; build a client given to [`ReqwestService::new`] the same
/// way.
///
/// **Upgrades.** A WebSocket or other upgraded connection counts in flight
/// on its instance only when taken with
/// [`service::upgrade::on`](crate::service::upgrade::on) from the
/// `http::Response` the balancer returns; reqwest's own
/// `Response::upgrade` drops the hold with the response, so an open
/// connection taken that way is not load for the least-loaded rules.
///
/// Its errors name the request's URL with the query and fragment shown as
/// `***` (`for url (http://10.0.0.7:8080/api?***)`), as the balancer's
/// own errors do: a query may carry a token.
///
/// ```
/// use tower_ribbon::ReqwestService;
///
/// // Redirects, reqwest's own retries and proxies off (see above).
/// let client = reqwest::Client::builder()
///     .redirect(reqwest::redirect::Policy::none())
///     .retry(reqwest::retry::never())
///     .no_proxy()
///     .build()
///     .expect("a client");
/// let svc = ReqwestService::new(client);
/// # let _ = svc;
/// ```
#[derive(Clone)]
pub struct ReqwestService {
    client: reqwest::Client,
    http2_only: bool,
}

impl ReqwestService {
    /// Wraps `client` (its pool, timeouts and TLS settings are kept).
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            http2_only: false,
        }
    }

    /// Says whether the wrapped client speaks only HTTP/2 (built with
    /// reqwest's `http2_prior_knowledge()`, feature `http2` of reqwest).
    /// When `true`, a `Host` field that differs from the request URI's
    /// authority (the picked instance's) is removed before the request is
    /// sent, as the balancer does for requests whose version is HTTP/2 and
    /// `tls::HttpsClient` does when it speaks only HTTP/2; a `Host` naming
    /// the instance itself stays. Default `false`: the caller's `Host` is
    /// kept, as HTTP/1.1 wants.
    ///
    /// ```
    /// use tower_ribbon::ReqwestService;
    ///
    /// // With reqwest's `http2` feature: `reqwest::Client::builder()
    /// //     .http2_prior_knowledge()`; any client works for the flag.
    /// let svc = ReqwestService::new(reqwest::Client::new()).http2_only(true);
    /// assert!(svc.is_http2_only());
    /// ```
    #[must_use]
    pub fn http2_only(mut self, on: bool) -> Self {
        self.http2_only = on;
        self
    }

    /// What [`http2_only`](ReqwestService::http2_only) said (default
    /// `false`).
    pub fn is_http2_only(&self) -> bool {
        self.http2_only
    }

    /// The wrapped client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Default for ReqwestService {
    /// A `reqwest::Client` with reqwest's defaults but redirects,
    /// reqwest's own retries and proxies off (`redirect::Policy::none()`,
    /// `retry::never()`, `no_proxy()`; see the type's docs).
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self::new(client)
    }
}

impl fmt::Debug for ReqwestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestService")
            .field("http2_only", &self.http2_only)
            .finish_non_exhaustive()
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if self.http2_only {
            if let Some(authority) = req.uri().authority().cloned() {
                crate::instance::drop_host_differing_from(req.headers_mut(), authority.as_str());
            }
        }
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
