//! [`InnerService`]: what a [`LoadBalancer`](super::LoadBalancer) needs of
//! the service it sends attempts through, as one trait, so that a wrong
//! inner service is reported with what to pass instead.

use http::Request;
use tower::Service;

use super::{LoadBalancer, ResponseFuture, TrackCompletion};
use crate::error::BoxError;
use crate::retry::TryCloneBody;

/// A service the balancer can send `http::Request<B>` attempts through.
///
/// Implemented for every `S` that is a `tower::Service<http::Request<B>>`,
/// `Clone + Send + 'static`, with a `Send + 'static` future, an error
/// convertible to [`BoxError`], and an `http::Response<_>` answer (anything
/// [`TrackCompletion`]). Never implement it yourself: it exists so that the
/// compiler names it, with the remedy, when the inner service does not fit
/// (rustc shows a trait's own message only when that trait is the bound
/// that failed):
///
/// - a plain `reqwest::Client` is not a `Service<http::Request<_>>`: pass
///   `ReqwestService::new(client)` (feature `reqwest`);
/// - a hyper-util `Client<C, B1>` sends only `Request<B1>`: build it for the
///   body type of your requests (`build_http::<B>()`), or convert the bodies.
///
/// The balancer clones the inner service once per request (the request's
/// future owns its clone, to wait for readiness and send retries). A clone
/// of hyper-util's `Client` takes several reference counts, about 90 ns
/// per clone and drop on one thread and 500 ns when two threads clone one
/// client at once; `tls::HttpsClient` and `ReqwestService` share theirs
/// behind one count (15 ns; 55 to 70 ns with two threads). Next to a whole
/// exchange this is small: in `scenarios overhead` (32 requests in flight
/// on two cores) a balancer over hyper-util's client in an `Arc` measured
/// no cheaper than one over the client itself (+2.34 and +1.99 µs against
/// +2.07 and +1.56 µs of CPU per request over the direct client, two runs
/// side by side: within the runs' noise).
///
/// Where the message appears: at [`LoadBalancer::send`] (an inherent
/// method whose bounds are this trait and [`TryCloneBody`]). Through
/// tower's `ServiceExt` (`lb.ready()`, `ServiceExt::oneshot`) rustc checks
/// `LoadBalancer<S>: Service<_>` during method lookup and reports only
/// "method exists but its trait bounds were not satisfied" (E0599), naming
/// the failed `S: Service<http::Request<_>>`. `build()` cannot check it: the
/// body type is not known until a request is sent. A hyper-util client
/// built for one body and handed a request with another is reported by
/// rustc as a type mismatch (E0308) naming both bodies, because the
/// client's single `Service` impl fixes `B` before the request is seen
/// (`tests/ui/` shows each case).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot send the balancer's requests (`http::Request<{B}>`)",
    label = "this request goes through the inner service given to `build()`",
    note = "the inner service must be a `tower::Service<http::Request<{B}>>` that is `Clone + Send + 'static`, with a `Send + 'static` future, an error `Into<BoxError>` and an `http::Response<_>` answer",
    note = "a plain `reqwest::Client`? pass `tower_ribbon::ReqwestService::new(client)` to `build()` instead",
    note = "a hyper-util `Client<_, Body>`? it sends only `Request<Body>`: build it with `.build_http::<{B}>()`, or give the request that body type"
)]
pub trait InnerService<B>:
    Service<
        Request<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
        Response: TrackCompletion<Tracked: Send + 'static> + Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// What the balancer hands back for a response of this service (the
    /// response with its body wrapped in a [`TrackedBody`](super::TrackedBody)).
    ///
    /// For a concrete inner service this is a concrete type
    /// (`http::Response<TrackedBody<hyper::body::Incoming>>` for
    /// hyper-util's client). Generic code over `S: InnerService<B>` sees it
    /// as an opaque associated type: to read the answer of
    /// [`LoadBalancer::request`](super::LoadBalancer::request), name it in
    /// the bound, e.g.
    /// `S: InnerService<String, Output = http::Response<TrackedBody<String>>>`
    /// (or `S::Output: Into<http::Response<..>>`).
    type Output: Send + 'static;

    /// The identity: the tracked response as [`InnerService::Output`]
    /// (the blanket impl sets them equal; this lets generic code see it).
    #[doc(hidden)]
    fn output(tracked: <Self::Response as TrackCompletion>::Tracked) -> Self::Output;
}

impl<S, B> InnerService<B> for S
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: TrackCompletion + Send + 'static,
    <S::Response as TrackCompletion>::Tracked: Send + 'static,
{
    type Output = <S::Response as TrackCompletion>::Tracked;

    fn output(tracked: Self::Output) -> Self::Output {
        tracked
    }
}

impl<S> LoadBalancer<S> {
    /// Sends one request, consuming this handle (clone the balancer to
    /// keep one): what [`tower::ServiceExt::oneshot`] does, since a
    /// `LoadBalancer` is always ready. Its bounds are [`InnerService`] and
    /// [`TryCloneBody`] themselves, so when the inner service or the body
    /// does not fit, the compiler says so here with what to pass instead;
    /// through `ServiceExt` it can only say that `LoadBalancer<S>` is not a
    /// `Service`.
    ///
    /// ```no_run
    /// use tower_ribbon::{Error, InnerService, LoadBalancer};
    ///
    /// async fn whoami<S: InnerService<String>>(lb: &LoadBalancer<S>) -> Result<(), Error> {
    ///     let request = http::Request::get("http://user-service/whoami")
    ///         .body(String::new())
    ///         .expect("a valid request");
    ///     let _response = lb.clone().send(request).await?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Service::call`]: an [`Error`](crate::Error) naming the service
    /// and the cause.
    pub fn send<B, R>(mut self, req: Request<B>) -> ResponseFuture<R>
    where
        S: InnerService<B, Output = R>,
        B: TryCloneBody + Send + 'static,
    {
        let sent = Service::call(&mut self, req);
        ResponseFuture::new(async move { sent.await.map(S::output) })
    }
}
