//! Spring's Eureka client keys (`eureka.client.*`, `eureka.instance.*`)
//! and the Eureka source built from them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::error::ConfigError;
use super::value::{self, DAY_S, Kv};
use crate::discovery::{FetchFuture, InstanceSource};
use crate::error::DiscoveryError;

/// The Spring keys of the Eureka client.
#[derive(Clone, Default)]
pub(crate) struct EurekaSettings {
    /// `(key as written, URLs)`.
    pub(crate) urls: Option<(String, Vec<String>)>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) read_timeout: Option<Duration>,
    /// `eureka.client.registry-fetch-interval-seconds`.
    pub(crate) fetch_interval: Option<Duration>,
    /// `eureka.instance.metadata-map.zone`.
    pub(crate) zone: Option<String>,
    /// `spring.cloud.discovery.enabled=false` (set when the config is read
    /// whole): no discovery client at all, Eureka's included.
    pub(crate) discovery_disabled: bool,
    /// `eureka.client.enabled`: `false` means Spring creates no Eureka
    /// client (`EurekaClientAutoConfiguration` is
    /// `@ConditionalOnProperty("eureka.client.enabled", matchIfMissing = true)`).
    pub(crate) enabled: Option<bool>,
    /// `eureka.client.fetch-registry`: `false` means Eureka's client never
    /// fetches the registry, so a Eureka-backed list stays empty.
    pub(crate) fetch_registry: Option<bool>,
}

/// Why the `defaultZone` URLs give no instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EurekaOff {
    /// `eureka.client.enabled=false`.
    Disabled,
    /// `eureka.client.fetch-registry=false`.
    NoFetch,
    /// `spring.cloud.discovery.enabled=false`: Spring's Eureka client
    /// auto-configuration is `@ConditionalOnDiscoveryEnabled`.
    DiscoveryDisabled,
}

impl EurekaOff {
    /// The key as Spring's docs write it.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Disabled => "eureka.client.enabled",
            Self::NoFetch => "eureka.client.fetch-registry",
            Self::DiscoveryDisabled => "spring.cloud.discovery.enabled",
        }
    }
}

impl EurekaSettings {
    /// Reads a key under `eureka.`; other keys there are Spring's and are
    /// ignored. Returns a warning for a value read but not used.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<Option<String>, ConfigError> {
        let kv = Kv {
            key,
            value,
            arg: "",
        };
        match value::relaxed(key).as_str() {
            "eureka.client.serviceurl.defaultzone" => {
                let urls = split_urls(value, &kv)?;
                #[cfg(feature = "eureka")]
                if !urls.is_empty() {
                    crate::discovery::eureka::EurekaSource::builder()
                        .server_urls(value)
                        .build()
                        .map_err(|e| {
                            ConfigError::invalid(key, &redact_urls(value), e.to_string())
                        })?;
                }
                self.urls = Some((key.to_owned(), urls));
            }
            "eureka.client.eurekaserverconnecttimeoutseconds" => {
                self.connect_timeout = Some(value::secs(&kv, 1..=DAY_S)?);
            }
            "eureka.client.eurekaserverreadtimeoutseconds" => {
                self.read_timeout = Some(value::secs(&kv, 1..=DAY_S)?);
            }
            "eureka.client.registryfetchintervalseconds" => {
                self.fetch_interval = Some(value::secs(&kv, 1..=DAY_S)?);
            }
            "eureka.instance.metadatamap.zone" => {
                self.zone = (!value.is_empty()).then(|| value.to_owned());
            }
            name @ ("eureka.client.enabled" | "eureka.client.fetchregistry") => {
                // A file read whole may hold `${EUREKA_ENABLED:true}`, which
                // only Spring resolves: warn and keep Eureka on, no error.
                let Ok(on) = value::spring_boolean(&kv) else {
                    let (key, value) = (crate::error::quote(key), crate::error::quote(value));
                    return Ok(Some(format!(
                        "`{key}` = `{value}` is not true or false: ignored"
                    )));
                };
                match name {
                    "eureka.client.enabled" => self.enabled = Some(on),
                    _ => self.fetch_registry = Some(on),
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// The `defaultZone` URLs as written (also when [`Self::off`]).
    pub(crate) fn urls(&self) -> &[String] {
        self.urls.as_ref().map_or(&[], |(_, urls)| urls.as_slice())
    }

    /// Whether Spring's Eureka client would give no instances although
    /// URLs may be set: `spring.cloud.discovery.enabled=false`, else
    /// `eureka.client.enabled=false`, else `eureka.client.fetch-registry=false`.
    pub(crate) fn off(&self) -> Option<EurekaOff> {
        if self.discovery_disabled {
            Some(EurekaOff::DiscoveryDisabled)
        } else if self.enabled == Some(false) {
            Some(EurekaOff::Disabled)
        } else if self.fetch_registry == Some(false) {
            Some(EurekaOff::NoFetch)
        } else {
            None
        }
    }

    /// The URLs Eureka clients read from: none when [`Self::off`].
    pub(crate) fn active_urls(&self) -> &[String] {
        if self.off().is_some() { &[] } else { self.urls() }
    }

    /// The Eureka source, shared by every Eureka client: an
    /// [`EurekaRegistry`](crate::discovery::eureka::EurekaRegistry) (one
    /// cached registry, deltas reconciled by hash) when called inside a
    /// Tokio runtime, else a per-app
    /// [`EurekaSource`](crate::discovery::eureka::EurekaSource).
    #[cfg(feature = "eureka")]
    pub(crate) fn source(&self, _client: &str) -> Result<Arc<dyn InstanceSource>, ConfigError> {
        use crate::discovery::eureka::{EurekaRegistry, EurekaSource};
        let (key, urls) = self.urls.as_ref().map_or(
            ("eureka.client.service-url.defaultZone", &[][..]),
            |(k, u)| (k.as_str(), u.as_slice()),
        );
        let joined = urls.join(",");
        let bad = |e: crate::error::BuildError| {
            ConfigError::invalid(key, &redact_urls(&joined), e.to_string())
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let mut builder = EurekaRegistry::builder().server_urls(&joined);
            if let Some(timeout) = self.connect_timeout {
                builder = builder.connect_timeout(timeout);
            }
            if let Some(timeout) = self.read_timeout {
                builder = builder.request_timeout(timeout);
            }
            if let Some(interval) = self.fetch_interval {
                builder = builder.fetch_interval(interval);
            }
            return Ok(Arc::new(builder.build().map_err(bad)?));
        }
        let mut builder = EurekaSource::builder().server_urls(&joined);
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = self.read_timeout {
            builder = builder.request_timeout(timeout);
        }
        Ok(Arc::new(builder.build().map_err(bad)?))
    }

    /// Without the `eureka` feature there is no Eureka source.
    #[cfg(not(feature = "eureka"))]
    pub(crate) fn source(&self, client: &str) -> Result<Arc<dyn InstanceSource>, ConfigError> {
        Err(ConfigError::no_source(
            client,
            "Eureka discovery needs the crate's `eureka` feature",
        ))
    }
}

/// Routes each service id to the source of its client (used when static
/// and Eureka clients share one balancer).
pub(crate) struct PerServiceSource {
    pub(crate) routes: HashMap<String, Arc<dyn InstanceSource>>,
}

impl InstanceSource for PerServiceSource {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        match self.routes.get(&crate::discovery::service_key(service_id)) {
            Some(source) => source.fetch(service_id),
            None => Box::pin(std::future::ready(Err(DiscoveryError::UnknownService {
                service: service_id.to_owned(),
            }))),
        }
    }
}

/// `http://user:pass@host/x` as `http://***@host/x` (see
/// [`crate::error::redact`]: every form that may hold credentials).
pub(crate) fn redact_url(url: &str) -> String {
    crate::error::redact(url)
}

/// [`redact_url`] over a comma-separated list, split outside credentials
/// (a `,` inside a password does not end a URL).
#[cfg_attr(not(feature = "eureka"), allow(dead_code))]
pub(crate) fn redact_urls(urls: &str) -> String {
    #[cfg(feature = "eureka")]
    let list = crate::discovery::eureka::split_server_urls(urls);
    #[cfg(not(feature = "eureka"))]
    let list: Vec<String> = urls.split(',').map(str::to_owned).collect();
    list.iter()
        .map(|u| redact_url(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `defaultZone` list, split outside credentials when the `eureka`
/// feature is on (Spring's own split cuts a password at its commas).
/// At most [`value::MAX_LIST_ELEMENTS`] comma-separated parts (commas
/// inside credentials count too), counted before any is copied.
fn split_urls(value: &str, kv: &Kv<'_>) -> Result<Vec<String>, ConfigError> {
    #[cfg(feature = "eureka")]
    {
        value::check_list_len(kv)?;
        Ok(crate::discovery::eureka::split_server_urls(value))
    }
    #[cfg(not(feature = "eureka"))]
    {
        let _ = value;
        value::list(kv)
    }
}
