//! The probe itself: one GET through the plain or the TLS client, passed
//! by a 2xx answer within the timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ActiveHealthCheck;
#[cfg(feature = "tls")]
use super::https;
use crate::error::BoxError;

/// The clients probes go through: plain `http`, and `https` (feature
/// `tls`; `None` when no TLS client could be built).
#[derive(Clone)]
pub(super) struct ProbeClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    #[cfg(feature = "tls")]
    https: Option<https::HttpsProbeClient>,
}

impl ProbeClient {
    pub(super) fn new(config: &ActiveHealthCheck) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        Self {
            // No idle connection is kept: a probe's socket closes with its
            // answer, so a round over n instances holds at most
            // `max_concurrent_probes` sockets, not one per instance for
            // hyper-util's 90 s idle timeout (probes every 10 s would keep
            // them all for good).
            http: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            #[cfg(feature = "tls")]
            https: config.probe_client_https(),
        }
    }

    /// Whether `url` can be probed (an `https` one needs a TLS client).
    pub(super) fn can_probe(&self, url: &str) -> bool {
        #[cfg(feature = "tls")]
        if url.starts_with("https://") {
            return self.https.is_some();
        }
        url.starts_with("http://")
    }

    async fn get(&self, uri: http::Uri) -> Result<http::StatusCode, BoxError> {
        #[cfg(feature = "tls")]
        if uri.scheme_str() == Some("https") {
            let Some(client) = &self.https else {
                return Err("no TLS client".into());
            };
            return Ok(client.inner().get(uri).await?.status());
        }
        // HTTP/1 only: `Connection: close` lets the instance close its end
        // as it answers (as Kubernetes' HTTP prober does, by turning
        // keep-alive off), so a probe's socket is gone on both ends with
        // its answer. (Over HTTP/2 the header is illegal; `https` probes
        // keep no idle connection either.)
        let mut request = http::Request::new(Empty::new());
        *request.uri_mut() = uri;
        request.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        Ok(self.http.request(request).await?.status())
    }
}

/// Whether `url` answers a 2xx within `timeout`.
pub(super) async fn probe(client: &ProbeClient, url: &str, timeout: Duration) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(status)) => status.is_success(),
        _ => false,
    }
}
