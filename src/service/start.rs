//! [`LoadBalancer::request`] and the start every request shares with
//! [`Service::call`](tower::Service::call): host to service, framing
//! checks, then the request's future.

use std::sync::Arc;

use http::Request;

use super::body::TrackCompletion;
use super::state::LiveRequest;
use super::{
    Error, InnerService, LoadBalancer, ResponseFuture, Shared, framing, send, trace, uri_host,
};
use crate::retry::TryCloneBody;

impl<S> LoadBalancer<S> {
    /// Sends one request through a shared reference, as hyper-util's
    /// `Client::request` does: no clone of the balancer per request (the
    /// call clones only the inner service, which the request's future must
    /// own; what that clone costs depends on the inner service, see
    /// [`InnerService`]).
    /// `lb.clone().oneshot(req)` does the same plus a clone and drop of
    /// the whole balancer (its inner client and shared state), which on
    /// two cores costs about 0.1-0.2 µs of reference-count traffic per
    /// request.
    ///
    /// ```no_run
    /// use tower_ribbon::{Error, InnerService, LoadBalancer};
    ///
    /// async fn whoami<S: InnerService<String>>(lb: &LoadBalancer<S>) -> Result<(), Error> {
    ///     let request = http::Request::get("http://user-service/whoami")
    ///         .body(String::new())
    ///         .expect("a valid request");
    ///     let _response = lb.request(request).await?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// In a future that must be `Send` (a task given to `tokio::spawn`,
    /// an axum handler) over an inner service whose error type is
    /// [`BoxError`](crate::BoxError) (tower's `Timeout`, `Buffer` or
    /// `BoxService`, a `service_fn` returning `BoxError`), await
    /// `lb.request(req)` or `lb.clone().send(req)` rather than
    /// `lb.clone().oneshot(req)`: tower's `Oneshot` carries its `Service`
    /// bound into rustc's `Send` check of the enclosing `async` block,
    /// where rustc cannot prove `BoxError: From<Box<dyn Error + '_>>` for
    /// every lifetime and reports "implementation of `From` is not general
    /// enough" (rust-lang/rust#64552; tower's own services over such an
    /// inner meet it too). This method's future carries no such bound.
    ///
    /// # Errors
    /// As [`Service::call`](tower::Service::call): an [`Error`] naming the service
    /// and the cause.
    pub fn request<B, R: 'static>(&self, req: Request<B>) -> ResponseFuture<R>
    where
        S: InnerService<B, Output = R>,
        B: TryCloneBody + Send + 'static,
    {
        // The answer as `InnerService::Output` (the same type: the blanket
        // impl sets them equal), so that the signature names only
        // `InnerService` and rustc reports a misfit inner service with its
        // message here (E0277), not "method exists but its trait bounds
        // were not satisfied" (E0599) as a return type naming
        // `S::Response` made it (new user, stop 59).
        self.start(req, S::output)
    }

    /// The shared start of [`Service::call`](tower::Service::call) and [`LoadBalancer::request`]:
    /// `output` turns the tracked response into what the caller gets (the
    /// identity, typed as [`Service::Response`] or
    /// [`InnerService::Output`]).
    pub(super) fn start<B, R: 'static, F>(
        &self,
        mut req: Request<B>,
        output: F,
    ) -> ResponseFuture<R>
    where
        S: InnerService<B>,
        B: TryCloneBody + Send + 'static,
        // A function item: zero-sized, so the request's future is no
        // larger for it.
        F: FnOnce(<S::Response as TrackCompletion>::Tracked) -> R + Send + 'static,
    {
        // An authority without a host (`http://:8080/`), or the DNS root
        // alone, names no service.
        let Some(host) = uri_host(req.uri()).filter(|h| !matches!(*h, "" | ".")) else {
            return ResponseFuture::failed(Error::no_service_in_uri(req.uri()));
        };
        let Some((state, live)) = self.routed(host) else {
            return ResponseFuture::failed(self.shared.unknown_service(host));
        };
        match framing::check(req.headers(), || req.body().exact_len()) {
            Err(e) => {
                return ResponseFuture::failed(Error::malformed_request(state.service_id(), e));
            }
            // A stream: it checks the length as it is sent.
            Ok(Some(declared)) => req.body_mut().check_len(declared),
            Ok(None) => {}
        }
        let inner = self.inner.clone();
        let span = trace::request(req.method(), state.service_id());
        // The request span is not entered around the whole future (that
        // would move the future once more): its attempt spans and events
        // name it as their parent.
        // Until the service's first list has arrived, the request keeps
        // the balancer, and so the refresh task bringing that list, alive:
        // `lb.oneshot(req)` drops the balancer right after the call. Later
        // requests need only their service's state.
        let keep_alive = (!state.first_fetch_seen()).then(|| Arc::clone(&self.shared));
        ResponseFuture::new(send::send(
            state,
            inner,
            req,
            span,
            send::Hold {
                shared: keep_alive,
                _live: live,
            },
            output,
        ))
    }

    /// The service `host` names and, for an on-demand one, the request's
    /// hold on it, taken before any code of the caller's runs (a body's
    /// `exact_len`, the inner service's `Clone`): between a route and a
    /// later hold the sweeper evicted the service under the request
    /// (helper 214). When the sweeper claimed the entry found, the insert
    /// lock (held by the sweeper until its swap) gives the service's next
    /// entry.
    fn routed(&self, host: &str) -> Option<(Arc<super::ServiceState>, Option<LiveRequest>)> {
        let mut found = self.shared.route(host);
        for _ in 0..3 {
            let state = match found.take() {
                Some(state) => state,
                // A host longer than a DNS name (253 bytes, or 254 with the
                // trailing dot of a fully qualified one) never starts
                // discovery.
                None if self.shared.discover_on_demand && Shared::name(host).len() <= 253 => {
                    self.shared.add_service(host, true)?
                }
                None => return None,
            };
            if let Ok(live) = state.live_request() {
                return Some((state, live));
            }
        }
        None
    }
}
