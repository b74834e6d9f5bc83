//! The HTTP side of talking to Eureka: failover over the configured
//! servers, basic auth, `https` through rustls (feature `tls`), one
//! timeout over each whole exchange, gzip, and decoding on the blocking
//! pool.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

use super::wire::WireError;
use crate::error::{BoxError, DiscoveryError};

mod absence;
mod answered;
mod gzip;
mod lease;
mod read;
mod server;
mod transport;

pub(crate) use server::{Connection, HttpSettings, Server};
#[cfg(feature = "tls")]
pub use transport::EurekaTlsError;
use absence::Absences;
pub(crate) use answered::Answered;
pub(crate) use lease::{LeaseAnswer, LeaseCall, maybe_delivered};
use gzip::gunzip;
use read::{ReadError, drain_beside, read_within};
use transport::{Transport, classify};
#[cfg(feature = "config")]
pub(crate) use server::split_urls;

/// What a GET found.
#[derive(Debug)]
pub(crate) enum Fetched<T> {
    /// 200 with a body that parsed.
    Found(T),
    /// 404: the registry does not know the path's app or VIP.
    NotFound,
}

/// A hyper-util client bound to an ordered list of Eureka servers.
#[derive(Clone)]
pub(crate) struct EurekaHttp {
    servers: Vec<Server>,
    client: Transport,
    settings: HttpSettings,
    /// The index of the server whose answer the last fetch took; fetches
    /// start there (shared by clones; a registry's VIP source has its own,
    /// see [`own_cursor`](Self::own_cursor)).
    preferred: Arc<AtomicUsize>,
    /// The index of the server that answered the last lease call; lease
    /// calls start there (shared by clones). Apart from `preferred`, as
    /// Java's registration client is its own `RetryableEurekaHttpClient`.
    lease_preferred: Arc<AtomicUsize>,
    /// What each path's last fetch found, for holding an answer that
    /// lists nothing beside a failed server (shared by clones).
    absences: Absences,
}

impl fmt::Debug for EurekaHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EurekaHttp")
            .field("servers", &self.servers)
            .field("settings", &self.settings)
            .field("tls", &self.client.is_tls())
            .finish()
    }
}

impl EurekaHttp {
    /// The bound on a response body, in bytes (after decompression).
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.settings.max_body_bytes
    }

    pub(crate) fn new(servers: Vec<Server>, settings: HttpSettings, client: Transport) -> Self {
        Self {
            servers,
            client,
            settings,
            preferred: Arc::new(AtomicUsize::new(0)),
            lease_preferred: Arc::new(AtomicUsize::new(0)),
            absences: Absences::default(),
        }
    }

    /// `GET {base}/{path}` on each server in order, starting at the one
    /// whose answer the last fetch took (the first at first), until one
    /// answers 200 with a body that `decode` accepts. Starting there, as
    /// Java's `RetryableEurekaHttpClient` keeps the endpoint that worked,
    /// a server that hangs or drops packets costs one timeout, not one per
    /// fetch. Every failure (transport,
    /// timeout, status, gzip, decode) and every 404 moves on to the next
    /// server: a peer that does not know the app (restarted with an empty
    /// registry, or not yet replicated to) must not hide the peers that
    /// list it, as Java's `RetryableEurekaHttpClient` moves on from a 404
    /// to an application or VIP query. When no server answers 200,
    /// `NotFound` if every server answered 404 and `accept_not_found` (an
    /// app or VIP the registry does not know), else the errors: a server
    /// that could not be asked may list what a restarted peer does not
    /// know, so one 404 beside a failure is a failed fetch (the refresh
    /// keeps its last list), not an app without instances. Java's client
    /// never takes a 404 to an application query as an answer at all.
    /// An answer for which `lists_nothing` holds (a VIP query's 200 with
    /// no application, which is how a server that does not know the VIP
    /// answers) counts as that server's 404: the next server is asked, and
    /// it is the answer only when no server lists anything and none failed.
    ///
    /// The request timeout bounds each server's whole exchange: connect,
    /// headers, body, gzip inflation and decoding, and the one retry of a
    /// connection the server closed before answering. Inflation and decoding
    /// run on Tokio's blocking pool, never on an async worker, and
    /// `decode` is handed the deadline so it stops when the timeout fires.
    ///
    /// Also says which server gave a `Found` answer (see [`Answered`]);
    /// `None` for an absent answer taken as every server's.
    pub(crate) async fn get_answered<T, F>(
        &self,
        path: &str,
        accept_not_found: bool,
        lists_nothing: fn(&T) -> bool,
        decode: F,
    ) -> Result<(Fetched<T>, Option<Answered>), DiscoveryError>
    where
        T: Send + 'static,
        F: Fn(&[u8], std::time::Instant) -> Result<T, WireError> + Clone + Send + 'static,
    {
        let mut errors = Vec::new();
        // The first answer that lists nothing (a 404 where accepted), and
        // the server that gave it.
        let mut absent: Option<(Fetched<T>, &str)> = None;
        // The index in `errors` of the last server that failed (a 404
        // where not accepted counts).
        let mut failed: Option<usize> = None;
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed).checked_rem(n);
        let order = self.servers.iter().enumerate().cycle();
        for (index, server) in order.skip(first.unwrap_or(0)).take(n) {
            // One deadline over the server's tries: the retry of a closed
            // connection gets what is left of the timeout, not a new one.
            let deadline = self.deadline();
            let mut result = self.get_one(server, path, deadline, decode.clone()).await;
            if result.as_ref().is_err_and(stale_connection) {
                result = self.get_one(server, path, deadline, decode.clone()).await;
            }
            match result {
                Ok(Fetched::NotFound) => {
                    tracing::debug!(server = %server.base, "Eureka server does not know the path; trying the next");
                    if accept_not_found {
                        absent.get_or_insert((Fetched::NotFound, &server.base));
                    } else {
                        failed = Some(errors.len());
                    }
                    errors.push(DiscoveryError::Status {
                        server: server.base.clone(),
                        status: 404,
                    });
                }
                Ok(Fetched::Found(found)) if lists_nothing(&found) => {
                    tracing::debug!(server = %server.base, "Eureka server lists nothing there; trying the next");
                    if !matches!(absent, Some((Fetched::Found(_), _))) {
                        absent = Some((Fetched::Found(found), &server.base));
                    }
                }
                Ok(found) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    self.absences.listed(path, tokio::time::Instant::now());
                    // An earlier server's empty answer counts: a home
                    // restarted empty is no answer about the copy's apps.
                    let after_failure = failed.is_some() || absent.is_some();
                    let after_empty = absent.is_some();
                    let answered = Answered { server: index, after_failure, after_empty };
                    return Ok((found, Some(answered)));
                }
                Err(e) => {
                    tracing::debug!(server = %server.base, error = %e, "Eureka server failed; trying the next");
                    failed = Some(errors.len());
                    errors.push(e);
                }
            }
        }
        if let Some((answer, server)) = absent {
            let hold = self.settings.absence_hold;
            let Some(at) = failed else {
                self.absences.settled(path);
                return Ok((answer, None));
            };
            if self.absences.held_past(path, tokio::time::Instant::now(), hold) {
                tracing::debug!(path, ?hold, "Eureka servers that answer list nothing there and listed nothing before, or have for the absence hold; taking their answer");
                self.absences.settled(path);
                return Ok((answer, None));
            }
            let failed = errors.swap_remove(at);
            return Err(DiscoveryError::AbsenceUnconfirmed {
                server: server.to_owned(),
                path: path.to_owned(),
                failed: Box::new(failed),
                hold,
            });
        }
        match errors.len() {
            1 => Err(errors.remove(0)),
            _ => Err(DiscoveryError::AllServersFailed(errors)),
        }
    }

    /// What a copy the caller keeps of `path` holds (the registry's copy,
    /// which deltas change between its full fetches): with instances, an
    /// answer listing nothing there beside a failed server is held for
    /// `absence_hold`; without, it is taken at once.
    pub(crate) fn note_copy(&self, path: &str, holds_instances: bool) {
        if holds_instances {
            self.absences.copy_listed(path, tokio::time::Instant::now());
        } else {
            self.absences.settled(path);
        }
    }

    /// `GET {base}/{path}` at the configured server whose base URL is
    /// `base` only (no failover), as [`get`](Self::get) does at one server.
    pub(crate) async fn get_at<T, F>(
        &self,
        base: &str,
        path: &str,
        decode: F,
    ) -> Result<Fetched<T>, DiscoveryError>
    where
        T: Send + 'static,
        F: Fn(&[u8], std::time::Instant) -> Result<T, WireError> + Send + 'static,
    {
        match self.servers.iter().find(|s| s.base == base) {
            Some(server) => self.get_one(server, path, self.deadline(), decode).await,
            None => Err(DiscoveryError::AllServersFailed(Vec::new())),
        }
    }

    /// The end of one server's `request_timeout` from now. A timeout too
    /// long to add to now (`Duration::MAX`) means no deadline in practice:
    /// a year.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        now.checked_add(self.settings.request_timeout)
            .or_else(|| now.checked_add(std::time::Duration::from_secs(365 * 86_400)))
            .unwrap_or(now)
    }

    /// One `GET` at `server`, ended at `deadline` (see [`Self::deadline`]).
    async fn get_one<T, F>(
        &self,
        server: &Server,
        path: &str,
        deadline: tokio::time::Instant,
        decode: F,
    ) -> Result<Fetched<T>, DiscoveryError>
    where
        T: Send + 'static,
        F: Fn(&[u8], std::time::Instant) -> Result<T, WireError> + Send + 'static,
    {
        // The decoder's clock is the standard one: the time left, from now.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let now = std::time::Instant::now();
        let decode_by = now.checked_add(left).unwrap_or(now);
        let exchange = self.exchange(server, path, decode_by, decode);
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(DiscoveryError::Timeout {
                server: server.base.clone(),
                after: self.settings.request_timeout,
            }),
        }
    }

    async fn exchange<T, F>(
        &self,
        server: &Server,
        path: &str,
        deadline: std::time::Instant,
        decode: F,
    ) -> Result<Fetched<T>, DiscoveryError>
    where
        T: Send + 'static,
        F: Fn(&[u8], std::time::Instant) -> Result<T, WireError> + Send + 'static,
    {
        let transport = |e: BoxError| DiscoveryError::Transport {
            server: server.base.clone(),
            source: e,
        };
        let uri = format!("{}/{}", server.base, path.trim_start_matches('/'));
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(&uri)
            .header(ACCEPT, "application/json")
            .header(ACCEPT_ENCODING, "gzip");
        if let Some(auth) = &server.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport(Box::new(e)))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| transport(classify(Box::new(e))))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Fetched::NotFound);
        }
        if !status.is_success() {
            return Err(DiscoveryError::Status {
                server: server.base.clone(),
                status: status.as_u16(),
            });
        }
        let content_type = header_text(response.headers().get(CONTENT_TYPE));
        let gzip_header = response
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let limit = self.settings.max_body_bytes;
        let decode_error = |source: WireError| DiscoveryError::Decode {
            server: server.base.clone(),
            content_type: content_type.clone(),
            source,
        };
        let body = match read_within(response.into_body(), limit).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => return Err(decode_error(WireError::TooLarge { limit })),
            Err(ReadError::Read(e)) => return Err(transport(classify(e))),
        };
        // Servers gzip even when not asked; trust the magic bytes too.
        let gzip = gzip_header || body.starts_with(&[0x1f, 0x8b]);
        let work = move || {
            let body = if gzip {
                let inflated = gunzip(&body, limit, deadline)?;
                drop(body);
                inflated
            } else {
                body
            };
            decode(&body, deadline)
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(decoded) => decoded.map(Fetched::Found).map_err(decode_error),
            Err(e) => Err(DiscoveryError::Other(Box::new(e))),
        }
    }

    /// The server a lease call tries first (the last that answered one).
    pub(crate) fn lease_server(&self) -> Option<&str> {
        let first = self.lease_preferred.load(Ordering::Relaxed);
        let server = self.servers.get(first.checked_rem(self.servers.len())?)?;
        Some(&server.base)
    }

    /// Sends `call`'s request to `{base}/{path}` (with a JSON `body`, if
    /// any) on each server in order, starting at the one that answered the
    /// last lease call (the first at first), until one answers with a
    /// status that [`LeaseCall::accepts`]; returns that status, the
    /// base URL of the server that gave it, and whether a server before it
    /// may have taken the request without answering. Starting there, as Java's
    /// registration `RetryableEurekaHttpClient` keeps its delegate, a hung
    /// server costs one timeout, not one per heartbeat or status change
    /// (a drain to DOWN is not late by a timeout). Every other answer (transport error, timeout,
    /// 3xx, 4xx, 5xx) moves on to the next server, as the Java client's
    /// `RetryableEurekaHttpClient` does with its legacy
    /// `ServerStatusEvaluator`: a peer that rate-limits (429), refuses
    /// (401, 403) or is misrouted must not cost the lease while another
    /// server is healthy. Used by registration (register, renew, status,
    /// cancel), whose callers interpret 2xx / 404.
    pub(crate) async fn send(
        &self,
        call: LeaseCall,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<LeaseAnswer, DiscoveryError> {
        let mut errors = Vec::new();
        let n = self.servers.len();
        let first = self.lease_preferred.load(Ordering::Relaxed).checked_rem(n);
        let order = self.servers.iter().enumerate().cycle();
        for (index, server) in order.skip(first.unwrap_or(0)).take(n) {
            let timeout = self.settings.request_timeout;
            // One deadline over both tries, as in `get`.
            let deadline = self.deadline();
            let mut result = Err(DiscoveryError::AllServersFailed(Vec::new()));
            for _ in 0..2 {
                let once = self.send_one(server, call.method(), path, body.clone());
                result = match tokio::time::timeout_at(deadline, once).await {
                    Ok(result) => result,
                    Err(_) => Err(DiscoveryError::Timeout {
                        server: server.base.clone(),
                        after: timeout,
                    }),
                };
                if !result.as_ref().is_err_and(stale_connection) {
                    break;
                }
            }
            match result {
                Ok(status) if call.accepts(status) => {
                    self.lease_preferred.store(index, Ordering::Relaxed);
                    return Ok(LeaseAnswer {
                        status,
                        server: server.base.clone(),
                        unanswered: errors.iter().any(maybe_delivered),
                    });
                }
                Ok(status) => {
                    tracing::debug!(server = %server.base, status = status.as_u16(), ?call, "Eureka server refused a lease call; trying the next");
                    errors.push(DiscoveryError::Status {
                        server: server.base.clone(),
                        status: status.as_u16(),
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            1 => Err(errors.remove(0)),
            _ => Err(DiscoveryError::AllServersFailed(errors)),
        }
    }

    async fn send_one(
        &self,
        server: &Server,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<StatusCode, DiscoveryError> {
        let transport = |e: BoxError| DiscoveryError::Transport {
            server: server.base.clone(),
            source: e,
        };
        let uri = format!("{}/{}", server.base, path.trim_start_matches('/'));
        let mut builder = Request::builder()
            .method(method)
            .uri(&uri)
            .header(ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &server.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| transport(Box::new(e)))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| transport(classify(Box::new(e))))?;
        let status = response.status();
        drain_beside(response.into_body(), self.deadline());
        Ok(status)
    }

    /// The configured servers, in order.
    pub(crate) fn servers(&self) -> &[Server] {
        &self.servers
    }
}

/// A pooled connection the server closed before answering (it restarted,
/// or dropped an idle keep-alive): worth one more try on the same server
/// over a fresh connection, as every lease call is idempotent.
fn stale_connection(e: &DiscoveryError) -> bool {
    let DiscoveryError::Transport { source, .. } = e else {
        return false;
    };
    for err in crate::error::chain(source.as_ref()) {
        if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
            return hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed();
        }
    }
    false
}

/// A header's text for an error: quoted (cut to 128 bytes), since the
/// registry chooses it.
fn header_text(v: Option<&HeaderValue>) -> String {
    v.and_then(|v| v.to_str().ok())
        .map(crate::error::quote)
        .unwrap_or_else(|| "none".to_owned())
}

#[cfg(test)]
mod tests;
