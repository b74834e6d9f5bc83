//! Probing `https` instances (feature `tls`): the rustls client the probes
//! go through, set with [`ActiveHealthCheck::https_client`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;

use super::ActiveHealthCheck;
use crate::tls::HttpsClient;

/// The client of `https` probes.
pub(crate) type HttpsProbeClient = HttpsClient<Empty<Bytes>>;

/// The `https` probe client a check was given. Two are equal when they are
/// the same client (clones of one [`ActiveHealthCheck`]).
#[derive(Clone)]
pub(crate) struct TlsProbe(pub(super) Arc<HttpsProbeClient>);

impl PartialEq for TlsProbe {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TlsProbe {}

impl fmt::Debug for TlsProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsProbe(HttpsClient)")
    }
}

impl ActiveHealthCheck {
    /// Probes `https` instances through `client`: build it with the roots
    /// (and client certificate) the instances' certificates need, e.g.
    /// `HttpsClient::builder().webpki_roots(false).add_root_pem(ca)?.build()?`.
    /// Without it, `https` instances are probed through
    /// `HttpsClient::builder()` (webpki roots) with [`timeout`](Self::timeout)
    /// as its connect timeout and no idle connection kept. A client given
    /// here keeps its own pool: build it with
    /// [`pool_max_idle_per_host(0)`](crate::tls::HttpsClientBuilder::pool_max_idle_per_host)
    /// so a round over many instances does not leave one idle socket per
    /// instance open (see [`max_concurrent_probes`](Self::max_concurrent_probes)).
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn https_client(mut self, client: HttpsClient<Empty<Bytes>>) -> Self {
        self.https = Some(TlsProbe(Arc::new(client)));
        self
    }

    /// The client of `https` probes: the one given, else the default one.
    pub(super) fn probe_client_https(&self) -> Option<HttpsProbeClient> {
        if let Some(TlsProbe(client)) = &self.https {
            return Some(HttpsProbeClient::clone(client));
        }
        match HttpsClient::builder()
            .connect_timeout(Some(self.timeout))
            .pool_max_idle_per_host(0)
            .build()
        {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e, "no TLS client for https health checks; https instances are not probed");
                None
            }
        }
    }
}
