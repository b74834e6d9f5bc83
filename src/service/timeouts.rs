//! Default timeouts: Ribbon's, so that a request to a hung instance never
//! waits without bound.
//!
//! | setting | default | Ribbon key | applied by |
//! |---|---|---|---|
//! | connect timeout | [`DEFAULT_CONNECT_TIMEOUT`] (2 s) | `ConnectTimeout` | the HTTP client's connector ([`http_client`], [`Builder::build_http`], `tls::HttpsClient` (TCP connect and TLS handshake together), `grpc::h2c_client_with`; `grpc::h2c_client` has Ribbon's 2 s whatever the key says) |
//! | per-try (read) timeout | [`DEFAULT_READ_TIMEOUT`] (5 s) | `ReadTimeout` | the balancer, around each attempt |
//! | overall deadline | none | — | the balancer ([`RetryPolicy::deadline`]) |
//!
//! **Whose defaults.** Ribbon's `DefaultClientConfigImpl`
//! (`DEFAULT_CONNECT_TIMEOUT` = 2000 ms, `DEFAULT_READ_TIMEOUT` = 5000 ms),
//! because this crate reads Ribbon's keys and a Ribbon user who sets none of
//! them gets these. Spring Cloud Netflix's `RibbonClientConfiguration` set
//! 1000/1000 ms, tuned to sit under a Hystrix timeout that this crate does
//! not have; 1 s per try fails ordinary slow endpoints (reports, uploads),
//! and Spring Cloud LoadBalancer (its successor) sets no timeout of its own
//! and leaves it to the HTTP client. Envoy's route timeout is 15 s with no
//! per-try timeout. 2 s connect / 5 s per try keeps Ribbon's behaviour.
//!
//! **Worst case.** Every attempt's send is bounded by the per-try timeout,
//! so a request to hung instances gets its response headers or its error
//! within `RetryPolicy::max_attempts` × 5 s plus backoff (10 s plus at most
//! 10 ms with the default policy, whose second attempt goes to another
//! instance). An inner service that is not ready (a concurrency limit or a
//! buffer inside it) is waited for before the pick under a per-try timeout
//! of its own, so an attempt that waited can take up to twice the per-try
//! timeout; [`RetryPolicy::deadline`] bounds both waits together.
//!
//! A POST is not retried after a read timeout (it may have reached the
//! server), so it fails after 5 s. Set [`RetryPolicy::deadline`] to bound
//! the wait for the headers of the whole request.
//!
//! **Uploads.** For a streamed request body that reports its upload
//! ([`ReplayBody::streaming`](crate::retry::ReplayBody::streaming), the
//! gRPC bodies, any body with [`Upload`](crate::retry::Upload)) the
//! per-try timer starts when the upload ends, so an upload longer than 5 s
//! is not cut off; while the upload lasts it bounds the time since the
//! body's last frame, so an upload that stalls still is; the deadline
//! bounds it all. For a body in memory it
//! starts at the send, and so it does for a stream that reports no
//! upload (a [`BoxBody`](http_body_util::combinators::BoxBody) a gateway
//! received, a body type of your own without `Upload`): the balancer
//! hands the body to the client as it is and cannot see it being sent, so
//! such an upload longer than the per-try timeout is cut off as a read
//! timeout and counted against the instance. Wrap such a stream in
//! `ReplayBody::streaming` (its upload is then seen; it is replayed only
//! until it starts).
//!
//! **The response body is not bounded.** Both timers stop at the response
//! headers: a backend that sends its headers and then stalls the body keeps
//! the caller's body read waiting (Ribbon's `ReadTimeout`, a socket read
//! timeout, would also cut a stalled body). Bound the body where you read
//! it, e.g. `tokio::time::timeout` around `collect()`, or tower-http's
//! `TimeoutBody`.
//!
//! **Connect inside the per-try timeout.** The per-try timer starts before
//! the connection is made, so a connect timeout above the per-try timeout
//! never fires: a connect that hangs is cut by the per-try timer and
//! reported (and refused a POST retry) as a read timeout, because the
//! balancer cannot see that no connection was made. Keep the connect
//! timeout at or below the per-try timeout (the defaults are 2 s and 5 s;
//! at equal values the client's connect timer fires first).
//!
//! **Queued at an HTTP/2 stream limit.** A request that hyper's HTTP/2
//! client holds back because the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! is reached waits inside the per-try timeout, counts in flight on its
//! instance (least-loaded rules see the queue) and has that wait in its
//! latency. One the timer cuts off while it waits is a read timeout, and a
//! POST is not retried: hyper still opens its stream, and sends it, once
//! the server allows one (`tests/h2_stream_limit.rs`).
//!
//! **Your own client.** The balancer cannot reach into a client it is
//! given: set the connect timeout on it yourself
//! (`HttpConnector::set_connect_timeout`, `reqwest::ClientBuilder::connect_timeout`),
//! e.g. from [`Builder::get_connect_timeout`]. A client without one waits
//! for the operating system (minutes), cut to the per-try timeout.
//!
//! **TLS.** For an `https` instance the connect is the TCP connect and the
//! TLS handshake: `tls::HttpsClient`'s connect timeout bounds both
//! together, as reqwest's does, so a server that accepts the connection
//! and never answers the handshake fails the attempt as a connect timeout
//! (never sent: even a POST goes to another instance, and the instance's
//! breaker counts it). `HttpConnector::set_connect_timeout` under a
//! hyper-rustls `HttpsConnector` of your own bounds the TCP connect only:
//! the handshake then waits for the per-try timeout (a read timeout, a
//! POST not retried) or, without one, for ever.
//!
//! **Cost.** The per-try timer is one tokio timer per attempt, armed only
//! if the attempt's first poll finds it waiting (an inner service that
//! answers at once arms none). Registering a tokio timer and cancelling it
//! each take the runtime's timer lock, which tokio 1.x shares across all
//! worker threads; on saturated cores that lock was the largest single
//! part of the balancer's cost (round robin with `RetryPolicy::none()` in
//! `scenarios overhead`, 2 cores, 32 in flight: +2.36 and +1.26 µs of CPU
//! per request with a timer registered per attempt, +0.75 and +0.27 µs with
//! none). So on a multi-thread runtime a finished attempt hands its timer,
//! still registered, to the next attempt on its thread, which keeps it if
//! it is due no later than its own deadline, and lets it go for one at its
//! own deadline only if it fires while the attempt still waits (see
//! `try_timer`): most attempts neither register nor move a timer. An
//! attempt is never cut before its deadline. A thread keeps at most 256
//! idle timers; a current-thread runtime (where time can be paused) pools
//! none. Counted (`scripts/path-instructions`), the timer of a waiting
//! attempt is 288 instructions of round robin's +4 238 with `none()` over
//! the inner service (447 when the pooled timer was moved to each
//! attempt's deadline, which in tokio 1.54 also takes and gives back a
//! count on the runtime's shared handle: tokio-rs/tokio#7473). In
//! `scenarios overhead` the host's noise, about 1 µs between runs, is as
//! large as what is left: `none()` +1.47 and +0.94 µs with a timer moved
//! per attempt against +0.79 and +0.23 µs with none in one sitting, and
//! no order at all in another; runs alternated before and after the
//! change gave `none()` +1.46 and +1.95 µs before, +1.05 and +1.23 µs
//! after.
//!
//! A client that already times each request (reqwest with
//! `ClientBuilder::timeout`, which also bounds the response body) arms a
//! timer of its own, so the balancer's is a second one:
//! `read_timeout(None)` (with no [`RetryPolicy::per_try_timeout`]) drops
//! it, and the client's timeout reaches the balancer as a read timeout
//! (reqwest's `is_timeout`, tower's and tokio's `Elapsed` are read as one),
//! counted and retried as its own.
//!
//! [`Builder::build_http`]: super::Builder::build_http
//! [`Builder::get_connect_timeout`]: super::Builder::get_connect_timeout
//! [`RetryPolicy::deadline`]: crate::retry::RetryPolicy::deadline
//! [`RetryPolicy::per_try_timeout`]: crate::retry::RetryPolicy::per_try_timeout

use std::time::Duration;

/// The default connect timeout: 2 s (Ribbon's `DefaultClientConfigImpl`
/// `DEFAULT_CONNECT_TIMEOUT`, key `ConnectTimeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(2000);

/// The default per-try (read) timeout: 5 s (Ribbon's
/// `DefaultClientConfigImpl` `DEFAULT_READ_TIMEOUT`, key `ReadTimeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(5000);

cfg_feature! {
    #![feature = "hyper-util"]

    /// hyper-util's legacy client (http1, plain TCP) with `connect_timeout`
    /// on its connector and `TCP_NODELAY`, for request bodies of type `B`.
    /// `None` waits for the operating system's connect timeout.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tower_ribbon::service::{http_client, DEFAULT_CONNECT_TIMEOUT};
    /// let client = http_client::<http_body_util::Empty<bytes::Bytes>>(Some(DEFAULT_CONNECT_TIMEOUT));
    /// # drop(client); }
    /// ```
    pub fn http_client<B>(
        connect_timeout: Option<Duration>,
    ) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
    where
        B: http_body::Body + Send,
        B::Data: Send,
    {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(connect_timeout);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(http)
    }
}
