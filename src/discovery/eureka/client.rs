//! The HTTP side of talking to Eureka: server URLs with failover, basic
//! auth, timeouts, gzip.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{BoxError, BuildError, DiscoveryError};

/// One configured Eureka server: its base URL without credentials, and the
/// `Authorization` header made from the URL's userinfo.
#[derive(Clone)]
pub(crate) struct Server {
    base: String,
    auth: Option<HeaderValue>,
}

impl Server {
    /// Parses `http://user:pass@host:port/eureka` (trailing `/` optional).
    pub(crate) fn parse(raw: &str) -> Result<Self, BuildError> {
        let invalid = |reason: &str| {
            BuildError::invalid("eureka server URL", format!("{}: {reason}", redact(raw)))
        };
        let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid(
                    "https registry URLs are not supported yet (no TLS connector); use http",
                ));
            }
            other => return Err(invalid(&format!("unsupported scheme `{other}`"))),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a server URL holds no query or fragment"));
        }
        if url.path().contains('@') {
            return Err(invalid(
                "`@` in the path: percent-encode `/`, `@` and `:` inside credentials",
            ));
        }
        let auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = decode(url.username());
            let pass = decode(url.password().unwrap_or(""));
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut value = HeaderValue::try_from(format!("Basic {token}"))
                .map_err(|_| invalid("credentials cannot form a header"))?;
            value.set_sensitive(true);
            Some(value)
        };
        let mut clean = url.clone();
        // Both setters only fail for URLs that cannot have credentials, which
        // an http URL with a host always can.
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        let base = clean.as_str().trim_end_matches('/').to_owned();
        Ok(Self { base, auth })
    }

    /// The base URL without credentials, as shown in logs and errors.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("base", &self.base)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A URL string with any userinfo replaced by `***`, for error messages
/// about URLs that did not parse.
pub(crate) use crate::error::redact;

/// Settings shared by every request to the registry.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(8),
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The connection settings every Eureka builder shares: server URLs in
/// order, timeouts and the body limit.
#[derive(Default)]
pub(crate) struct Connection {
    pub(crate) urls: Vec<String>,
    pub(crate) settings: HttpSettings,
}

impl Connection {
    pub(crate) fn add_urls(&mut self, urls: &str) {
        self.urls.extend(
            urls.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
        );
    }

    /// The URLs with credentials hidden, for `Debug`.
    pub(crate) fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact(u)).collect()
    }

    /// Parses the URLs and makes the client.
    pub(crate) fn build(self) -> Result<EurekaHttp, BuildError> {
        if self.urls.is_empty() {
            return Err(BuildError::invalid(
                "eureka server URL",
                "no server URL given",
            ));
        }
        let servers = self
            .urls
            .iter()
            .map(|u| Server::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EurekaHttp::new(servers, self.settings))
    }
}

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
    client: Client<HttpConnector, Full<Bytes>>,
    settings: HttpSettings,
}

impl fmt::Debug for EurekaHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EurekaHttp")
            .field("servers", &self.servers)
            .field("settings", &self.settings)
            .finish()
    }
}

impl EurekaHttp {
    pub(crate) fn new(servers: Vec<Server>, settings: HttpSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            servers,
            client,
            settings,
        }
    }

    /// `GET {base}/{path}` on each server in order until one answers 200
    /// with a body that `parse` accepts, or 404 when `accept_not_found`
    /// (an app or VIP the registry does not know). Every failure
    /// (transport, timeout, status, gzip, parse; 404 otherwise) moves on to
    /// the next server.
    pub(crate) async fn get<T>(
        &self,
        path: &str,
        accept_not_found: bool,
        parse: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Fetched<T>, DiscoveryError> {
        let mut errors = Vec::new();
        for server in &self.servers {
            match self.get_one(server, path, &parse).await {
                Ok(Fetched::NotFound) if !accept_not_found => errors.push(DiscoveryError::Status {
                    server: server.base.clone(),
                    status: 404,
                }),
                Ok(found) => return Ok(found),
                Err(e) => {
                    tracing::debug!(server = %server.base, error = %e, "Eureka server failed; trying the next");
                    errors.push(e);
                }
            }
        }
        match errors.len() {
            0 => Err(DiscoveryError::AllServersFailed(errors)),
            1 => Err(errors.remove(0)),
            _ => Err(DiscoveryError::AllServersFailed(errors)),
        }
    }

    async fn get_one<T>(
        &self,
        server: &Server,
        path: &str,
        parse: &impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Fetched<T>, DiscoveryError> {
        let timeout = self.settings.request_timeout;
        match tokio::time::timeout(timeout, self.exchange(server, path, parse)).await {
            Ok(result) => result,
            Err(_) => Err(DiscoveryError::Timeout {
                server: server.base.clone(),
                after: timeout,
            }),
        }
    }

    async fn exchange<T>(
        &self,
        server: &Server,
        path: &str,
        parse: &impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Fetched<T>, DiscoveryError> {
        let uri = format!("{}/{}", server.base, path.trim_start_matches('/'));
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(&uri)
            .header(ACCEPT, "application/json")
            .header(ACCEPT_ENCODING, "gzip");
        if let Some(auth) = &server.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let request =
            builder
                .body(Full::new(Bytes::new()))
                .map_err(|e| DiscoveryError::Transport {
                    server: server.base.clone(),
                    source: Box::new(e),
                })?;
        let response =
            self.client
                .request(request)
                .await
                .map_err(|e| DiscoveryError::Transport {
                    server: server.base.clone(),
                    source: Box::new(e),
                })?;
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
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| DiscoveryError::Decode {
                server: server.base.clone(),
                content_type: content_type.clone(),
                reason: format!("reading the body failed (limit {limit} bytes): {e}"),
            })?
            .to_bytes();
        let decode_error = |reason: String| DiscoveryError::Decode {
            server: server.base.clone(),
            content_type: content_type.clone(),
            reason,
        };
        // Servers gzip even when not asked; trust the magic bytes too.
        let body = if gzip_header || body.starts_with(&[0x1f, 0x8b]) {
            gunzip(&body, limit).map_err(decode_error)?
        } else {
            body
        };
        parse(&body).map(Fetched::Found).map_err(decode_error)
    }

    /// Sends `method {base}/{path}` (with a JSON `body`, if any) to each
    /// server in order until one answers with a status that is not 5xx;
    /// returns that status. Transport errors, timeouts and 5xx move on to
    /// the next server. Used by registration (register, renew, status,
    /// cancel), whose callers interpret 2xx / 404. Returns the status and
    /// the base URL of the server that answered.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, String), DiscoveryError> {
        let mut errors = Vec::new();
        for server in &self.servers {
            let timeout = self.settings.request_timeout;
            let once = self.send_one(server, method.clone(), path, body.clone());
            let result = match tokio::time::timeout(timeout, once).await {
                Ok(result) => result,
                Err(_) => Err(DiscoveryError::Timeout {
                    server: server.base.clone(),
                    after: timeout,
                }),
            };
            match result {
                Ok(status) if !status.is_server_error() => {
                    return Ok((status, server.base.clone()));
                }
                Ok(status) => errors.push(DiscoveryError::Status {
                    server: server.base.clone(),
                    status: status.as_u16(),
                }),
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
            .map_err(|e| transport(Box::new(e)))?;
        let status = response.status();
        // Drain the body so the connection can be reused.
        let _ = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        Ok(status)
    }

    /// The configured servers, in order.
    pub(crate) fn servers(&self) -> &[Server] {
        &self.servers
    }
}

fn header_text(v: Option<&HeaderValue>) -> String {
    v.and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| "none".to_owned())
}

/// Decompresses a gzip body, refusing output beyond `limit` bytes.
pub(crate) fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, String> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(body).take((limit as u64).saturating_add(1));
    decoder
        .read_to_end(&mut out)
        .map_err(|e| format!("bad gzip body: {e}"))?;
    if out.len() > limit {
        return Err(format!("gzip body inflates beyond {limit} bytes"));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_lose_their_credentials() {
        let s = Server::parse("http://us%40er:p%3Ass@127.0.0.1:8761/eureka/").unwrap();
        assert_eq!(s.base(), "http://127.0.0.1:8761/eureka");
        let auth = s.auth.clone().unwrap();
        assert!(auth.is_sensitive());
        // base64("us@er:p:ss")
        assert_eq!(auth.to_str().unwrap(), "Basic dXNAZXI6cDpzcw==");
        assert!(!format!("{s:?}").contains("dXN"));
        assert!(
            Server::parse("http://127.0.0.1:8761/eureka")
                .unwrap()
                .auth
                .is_none()
        );
    }

    #[test]
    fn bad_server_urls_are_typed_and_redacted() {
        for bad in [
            "",
            "127.0.0.1:8761",
            "ftp://h/",
            "https://h/eureka",
            "http://h/?a=1",
        ] {
            assert!(
                matches!(Server::parse(bad), Err(BuildError::Invalid(_))),
                "{bad}"
            );
        }
        let err = Server::parse("ftp://user:secret@h/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn gunzip_limits() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[b'a'; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000).unwrap().len(), 1000);
        assert!(gunzip(&gz, 999).unwrap_err().contains("beyond"));
        assert!(gunzip(&gz[..gz.len() / 2], 1000).is_err());
        assert!(gunzip(&[0x1f, 0x8b, 0, 0], 1000).is_err());
    }
}
