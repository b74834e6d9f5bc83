//! The tonic transport: an h2c client, [`balance`] and the opt-in retry
//! layer (feature `grpc`).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};

use super::GrpcStatus;
use crate::error::{BoxError, BuildError};
use crate::retry::{BufferError, ReplayBody, RetryNonIdempotent};
use crate::stats::Outcome;
use crate::{Builder, LoadBalancer};

/// The request body the balancer and the inner client carry for tonic: a
/// buffered body for calls opted into retries, tonic's stream otherwise.
pub type GrpcBody = ReplayBody<tonic::body::Body>;

/// An h2c client (HTTP/2 with prior knowledge over plain TCP), the inner
/// client for gRPC servers without TLS. Made by [`h2c_client`].
pub type H2cClient = Client<HttpConnector, GrpcBody>;

/// The transport service [`balance`] builds: pass it to
/// `tonic::client::Grpc::with_origin` or a generated client's
/// `with_origin`.
pub type GrpcBalancer<S> = GrpcRetry<LoadBalancer<GrpcStatus<S>>>;

/// hyper-util's client speaking HTTP/2 only, with prior knowledge (as
/// tonic's own `Channel` does for `http` endpoints), `TCP_NODELAY` and a
/// 2 s connect timeout (Ribbon's default). One connection per instance
/// carries every call. A builder's own connect timeout (`ConnectTimeout`
/// key, [`Builder::connect_timeout`]) is not read here: pass it through
/// [`h2c_client_with`].
pub fn h2c_client() -> H2cClient {
    h2c_client_with(Some(crate::service::DEFAULT_CONNECT_TIMEOUT))
}

/// [`h2c_client`] with this connect timeout (`None`: the operating
/// system's), e.g. `h2c_client_with(builder.get_connect_timeout())` so that
/// the `ConnectTimeout` key applies and connect-timeout errors name the
/// timeout that fired.
pub fn h2c_client_with(connect_timeout: Option<Duration>) -> H2cClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(http)
}

/// A balanced gRPC transport: `client` (an HTTP/2 client such as
/// [`h2c_client`] or `tls::HttpsClient` (feature `tls`) with `http2_only`)
/// wrapped in [`GrpcStatus`], balanced by the [`LoadBalancer`] that
/// `builder` describes, under the opt-in retries of `retry`.
///
/// # Errors
/// As [`Builder::build`].
///
/// ```no_run
/// // tonic-health brings the generated Health client (no protoc needed).
/// use tonic_health::pb::HealthCheckRequest;
/// use tonic_health::pb::health_client::HealthClient;
/// use tower_ribbon::LoadBalancer;
/// use tower_ribbon::discovery::StaticSource;
/// use tower_ribbon::grpc::{self, GrpcRetryLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let source = StaticSource::new().with_list("my-grpc-service", "127.0.0.1:50051,127.0.0.1:50052")?;
/// let channel = grpc::balance(
///     LoadBalancer::builder().source(source).service("my-grpc-service"),
///     grpc::h2c_client(),
///     GrpcRetryLayer::new().service("grpc.health.v1.Health"),
/// )?;
/// let origin = http::Uri::from_static("http://my-grpc-service");
/// let mut client = HealthClient::with_origin(channel, origin);
/// let reply = client.check(HealthCheckRequest { service: String::new() }).await?;
/// # let _ = reply; Ok(()) }
/// ```
pub fn balance<S>(
    builder: Builder,
    client: S,
    retry: GrpcRetryLayer,
) -> Result<GrpcBalancer<S>, BuildError> {
    let lb = builder.build(GrpcStatus::new(client))?;
    Ok(retry.layer(lb))
}

/// Which gRPC methods may be retried after they may have reached a server,
/// and the outer layer that marks them. Default: none (only connect
/// failures are retried), bodies of opted-in calls buffered up to 4 MiB
/// (tonic's default message limit).
///
/// Opt in only methods that are safe to run twice, and only unary or
/// server-streaming ones: a client-streaming request is buffered whole
/// before it is sent.
#[derive(Clone)]
pub struct GrpcRetryLayer {
    methods: Arc<HashSet<String>>,
    services: Arc<HashSet<String>>,
    max_buffer: usize,
}

impl Default for GrpcRetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GrpcRetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcRetryLayer")
            .field("methods", &self.methods)
            .field("services", &self.services)
            .field("max_buffer", &self.max_buffer)
            .finish()
    }
}

impl GrpcRetryLayer {
    /// No method opted in.
    pub fn new() -> Self {
        Self {
            methods: Arc::new(HashSet::new()),
            services: Arc::new(HashSet::new()),
            max_buffer: 4 * 1024 * 1024,
        }
    }

    /// Opts one method in, by its full path `/package.Service/Method`
    /// (a leading `/` is added if missing), e.g.
    /// `/grpc.health.v1.Health/Check`.
    pub fn method(mut self, path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Arc::make_mut(&mut self.methods).insert(path);
        self
    }

    /// Opts every method of a service in, by its full name
    /// `package.Service`, e.g. `grpc.health.v1.Health`.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        Arc::make_mut(&mut self.services).insert(name.trim_matches('/').to_owned());
        self
    }

    /// Largest request body buffered for an opted-in call; a larger one
    /// is sent once, unbuffered, and retried only as a call not opted in
    /// (when it never left: a refused connection, before its body
    /// started). Default 4 MiB.
    pub fn max_buffer(mut self, bytes: usize) -> Self {
        self.max_buffer = bytes;
        self
    }

    /// Whether the call to `path` (`/package.Service/Method`) is opted in.
    pub fn is_retryable(&self, path: &str) -> bool {
        if self.methods.contains(path) {
            return true;
        }
        let service = path
            .trim_start_matches('/')
            .rsplit_once('/')
            .map(|(service, _)| service);
        service.is_some_and(|s| self.services.contains(s))
    }
}

impl<S> Layer<S> for GrpcRetryLayer {
    type Service = GrpcRetry<S>;

    fn layer(&self, inner: S) -> GrpcRetry<S> {
        GrpcRetry {
            inner,
            config: self.clone(),
        }
    }
}

/// Takes tonic's requests (`http::Request<tonic::body::Body>`) and sends
/// them to the balancer as [`GrpcBody`]: opted-in calls buffered and
/// marked [`RetryNonIdempotent`], others streamed (retried only when the
/// call never reached a server: a failed connection, or a stream refused
/// unprocessed, sent again from what the refused attempt read, up to
/// [`UNSENT_REPLAY_MAX`](crate::retry::UNSENT_REPLAY_MAX)). A call's `grpc-timeout` bounds it, retries
/// included: past it the call ends with DEADLINE_EXCEEDED. Made by
/// [`GrpcRetryLayer`].
#[derive(Clone, Debug)]
pub struct GrpcRetry<S> {
    inner: S,
    config: GrpcRetryLayer,
}

impl<S> GrpcRetry<S> {
    /// The wrapped service (the balancer).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<Request<tonic::body::Body>> for GrpcRetry<S>
where
    S: Service<Request<GrpcBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        // The ready service handles this call; a fresh clone waits for the
        // next one (tower's usual pattern for services that are Clone).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let retryable = self.config.is_retryable(req.uri().path());
        let max_buffer = self.config.max_buffer;
        // The caller's deadline (`grpc-timeout`, `tonic::Request::set_timeout`)
        // bounds the whole call, every retry included, as tonic's
        // `Channel` bounds its one attempt.
        let timeout = super::deadline::parse_grpc_timeout(req.headers());
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let call = async move {
            let (mut parts, body) = req.into_parts();
            if let Some(at) = deadline {
                parts.extensions.insert(super::deadline::CallDeadline(at));
            }
            let body = if retryable {
                // A body past `max_buffer` is sent once, as a call not
                // opted in (gRPC's and Envoy's retry buffers commit the
                // call then): opting in never fails a call.
                let body = ReplayBody::buffer_or_stream(body, max_buffer)
                    .await
                    .map_err(buffer_status)?;
                if body.is_buffered() {
                    parts.extensions.insert(RetryNonIdempotent);
                }
                body
            } else {
                ReplayBody::streaming(body)
            };
            inner
                .oneshot(Request::from_parts(parts, body))
                .await
                .map_err(|e| to_status(e.into()))
        };
        Box::pin(async move {
            match (deadline, timeout) {
                (Some(at), Some(timeout)) => tokio::time::timeout_at(at, call)
                    .await
                    .unwrap_or_else(|_| Err(deadline_exceeded(timeout))),
                _ => call.await,
            }
        })
    }
}

/// The status of a call cut off at the deadline its `grpc-timeout` set
/// (DEADLINE_EXCEEDED, as gRPC's protocol names it; tonic's `Channel` says
/// CANCELLED "Timeout expired").
fn deadline_exceeded(timeout: Duration) -> BoxError {
    Box::new(tonic::Status::deadline_exceeded(format!(
        "the call's deadline (grpc-timeout {timeout:?}) passed before its response, retries included"
    )))
}

/// The `tonic::Status` of a request body that failed while it was read
/// to be buffered for retries: the body's own `Status` if it failed with
/// one, else INTERNAL. Nothing was sent. (A plain error here reached the
/// caller as UNKNOWN.)
fn buffer_status(error: BufferError) -> BoxError {
    let error: BoxError = match error {
        BufferError::Read(source) => source,
        other => Box::new(other),
    };
    match error.downcast::<tonic::Status>() {
        Ok(status) => status,
        Err(error) => Box::new(tonic::Status::internal(format!(
            "gRPC request body to buffer for retries failed: {error}"
        ))),
    }
}

/// The `tonic::Status` a failed balanced call reports, with the
/// balancer's error (instance, attempts) as message and source, after
/// tonic's own `Status::from_error`:
/// - a `Status` anywhere in the error's sources is kept (code, message,
///   details, metadata), as tonic finds it;
/// - the caller's own request body failing ([`Outcome::RequestError`]) is
///   INTERNAL, as tonic reports the INTERNAL_ERROR reset hyper sends
///   then: it fails the same on every server, so it must not read as
///   retryable (it was UNAVAILABLE);
/// - a read or per-try timeout is DEADLINE_EXCEEDED;
/// - anything else (no instance, connection refused or reset) is
///   UNAVAILABLE, as gRPC clients report transport failures.
fn to_status(error: BoxError) -> BoxError {
    let error = match error.downcast::<tonic::Status>() {
        Ok(status) => return status,
        Err(error) => error,
    };
    let found = (crate::error::chain(error.as_ref()).skip(1))
        .find_map(|s| s.downcast_ref::<tonic::Status>())
        .map(|found| {
            tonic::Status::with_details_and_metadata(
                found.code(),
                found.message().to_owned(),
                found.details().to_vec().into(),
                found.metadata().clone(),
            )
        });
    if let Some(mut status) = found {
        status.set_source(Arc::from(error));
        return Box::new(status);
    }
    let mut message = error.to_string();
    for s in crate::error::chain(error.as_ref()).skip(1) {
        message.push_str(": ");
        message.push_str(&s.to_string());
    }
    // The sources' text is other libraries' (rustls lists a server
    // certificate's names as written): escaped and cut, as a message
    // callers log.
    let message = crate::error::quote_within(&message, 2 * crate::error::MAX_QUOTED_MESSAGE);
    let mut status = match crate::service::classify_error(&error) {
        Outcome::ReadTimeout => tonic::Status::deadline_exceeded(message),
        Outcome::RequestError => tonic::Status::internal(message),
        // Never processed (refused, above an abrupt `GOAWAY`, not connected).
        // A graceful `GOAWAY`'s stream may have been (`ConnectionLost`):
        // INTERNAL, as NO_ERROR maps, so no caller's policy sends it again.
        Outcome::ConnectFailure | Outcome::ConnectTimeout | Outcome::Declined => {
            tonic::Status::unavailable(message)
        }
        _ => match super::reset::h2_reset_code(&error) {
            Some(code) => tonic::Status::new(code, message),
            None => tonic::Status::unavailable(message),
        },
    };
    status.set_source(Arc::from(error));
    Box::new(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_statuses() {
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let status = to_status(refused).downcast::<tonic::Status>();
        assert!(
            matches!(&status, Ok(s) if s.code() == tonic::Code::Unavailable),
            "{status:?}"
        );
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        let status = to_status(elapsed).downcast::<tonic::Status>();
        assert!(
            matches!(&status, Ok(s) if s.code() == tonic::Code::DeadlineExceeded),
            "{status:?}"
        );
        let kept: BoxError = Box::new(tonic::Status::aborted("x"));
        let status = to_status(kept).downcast::<tonic::Status>();
        assert!(
            matches!(&status, Ok(s) if s.code() == tonic::Code::Aborted),
            "{status:?}"
        );
    }

    /// A status below the top of the chain is kept, as tonic's
    /// `Status::from_error` finds it (it became UNAVAILABLE).
    #[test]
    fn a_status_in_the_sources_is_kept() {
        #[derive(Debug)]
        struct Wrapper(tonic::Status);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let mut inner = tonic::Status::data_loss("caller gave up");
        inner
            .metadata_mut()
            .insert("x-why", "gone".parse().expect("ascii"));
        let wrapped: BoxError = Box::new(Wrapper(inner));
        let status = to_status(wrapped)
            .downcast::<tonic::Status>()
            .expect("a status");
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::DataLoss, "caller gave up")
        );
        assert_eq!(
            status.metadata().get("x-why").map(|v| v.as_bytes()),
            Some(&b"gone"[..])
        );
        let source = std::error::Error::source(&*status).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("wrapped"));
    }

    /// The message joins the error's chain of sources, whose text comes
    /// from other libraries (rustls quotes a certificate's names as
    /// written): it is escaped and cut. Before: the CR/LF raw and a
    /// message of 100 062 bytes with 2 raw controls; now none raw, cut at 1 024 bytes (1 029 with the escapes and `…`).
    #[test]
    fn a_foreign_message_in_the_sources_is_escaped_and_cut() {
        #[derive(Debug)]
        struct Hostile;
        impl fmt::Display for Hostile {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "only valid for DnsName(\"evil\r\nforged\"){}",
                    "a".repeat(100_000)
                )
            }
        }
        impl std::error::Error for Hostile {}
        #[derive(Debug)]
        struct Top(Hostile);
        impl fmt::Display for Top {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Top {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let status = to_status(Box::new(Top(Hostile)))
            .downcast::<tonic::Status>()
            .expect("a status");
        let message = status.message();
        assert_eq!(message.chars().filter(|c| c.is_control()).count(), 0);
        assert!(
            message
                .starts_with(r#"client error (Connect): only valid for DnsName("evil\r\nforged")"#)
        );
        assert_eq!(message.len(), 1_024 + 2 + "…".len());
    }

    #[test]
    fn opt_in() {
        let layer = GrpcRetryLayer::new().method("pkg.A/Get").service("pkg.B");
        assert!(layer.is_retryable("/pkg.A/Get"));
        assert!(!layer.is_retryable("/pkg.A/Put"));
        assert!(layer.is_retryable("/pkg.B/Anything"));
        assert!(!layer.is_retryable("/pkg.Bx/Anything"));
        assert!(!layer.is_retryable("/"));
        assert!(!GrpcRetryLayer::new().is_retryable("/pkg.A/Get"));
    }
}
