//! The policy wrappers a client's rule gets from its keys: Spring Cloud
//! LoadBalancer's `configurations` (`request-based-sticky-session`,
//! `same-instance-preference`, `subset`, `weighted`), its hint keys, and
//! this crate's slow start keys.
//!
//! Wrapping order, outermost first: [`Subset`] (which instances this client
//! talks to), [`StickySession`] or [`SameInstancePreference`] (the one
//! instance a request should stay on), [`HintBased`] (a group of
//! instances), [`ZoneAvoidance`] (the client's zone), [`SlowStart`], then
//! the rule itself. An outer wrapper's preference wins: a sticky cookie
//! beats a hint, a hint beats the zone.

use std::time::Duration;

use http::HeaderName;

use super::error::ConfigError;
use super::ribbon::RuleKind;
use super::spring_loadbalancer::{LoadBalancerConfiguration, LoadBalancerSettings};
use super::value::DAY_MS;
use crate::rule::{
    HintBased, RoundRobin, Rule, SameInstancePreference, SlowStart, SlowStartConfig,
    StickySession, Subset, WeightedRoundRobin, ZoneAvoidance,
};

/// This crate's slow start keys (`<client>.ribbon.SlowStartWindow`,
/// `SlowStartAggression`, `SlowStartMinWeightPercent`), Envoy's
/// `slow_start_config`. `None` means not set.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct SlowStartSettings {
    /// `SlowStartWindow` (ms, 0 to one day): Envoy's `slow_start_window`;
    /// setting it above 0 turns slow start on. Default: off.
    pub window: Option<Duration>,
    /// `SlowStartAggression` (a number above 0, at most 100): Envoy's
    /// `aggression`. Default 1.0 (linear).
    pub aggression: Option<f64>,
    /// `SlowStartMinWeightPercent` (0 to 100): Envoy's
    /// `min_weight_percent`. Default 10.
    pub min_weight_percent: Option<f64>,
}

impl SlowStartSettings {
    /// The slow start in effect, if the window is set above 0.
    pub fn config(&self) -> Option<SlowStartConfig> {
        let window = self.window.filter(|w| !w.is_zero())?;
        let mut config = SlowStartConfig::new(window);
        if let Some(a) = self.aggression {
            config = config.aggression(a);
        }
        if let Some(p) = self.min_weight_percent {
            config = config.min_weight_percent(p);
        }
        Some(config)
    }
}

impl SlowStartSettings {
    /// Checks the set fields against their keys' ranges (a
    /// [`ClientConfig`](super::ClientConfig) filled in by hand skips the
    /// file readers' checks).
    ///
    /// # Errors
    /// [`InvalidValue`](super::ConfigErrorKind::InvalidValue) naming the
    /// key (`<client>.ribbon.SlowStart…`).
    pub fn validate(&self, client: &str) -> Result<(), ConfigError> {
        let bad = |k: &str, v: String, why: &'static str| {
            Err(ConfigError::invalid(&format!("{client}.ribbon.{k}"), &v, why))
        };
        if let Some(w) = self.window.filter(|w| w.as_millis() > u128::from(DAY_MS)) {
            return bad("SlowStartWindow", format!("{}", w.as_millis()), "at most one day (ms)");
        }
        if let Some(a) = self.aggression.filter(|a| !(*a > 0.0 && *a <= 100.0)) {
            return bad("SlowStartAggression", a.to_string(), "must be within (0, 100]");
        }
        if let Some(p) = self.min_weight_percent.filter(|p| !(0.0..=100.0).contains(p)) {
            return bad("SlowStartMinWeightPercent", p.to_string(), "must be within [0, 100]");
        }
        Ok(())
    }
}

/// The cookie SCLB's `sticky-session.add-service-instance-cookie: true`
/// adds to each request (`instance-id-cookie-name`, default
/// `sc-lb-instance-id`); `None` when the key is unset or `false`.
pub(crate) fn instance_cookie(lb: &LoadBalancerSettings) -> Option<&str> {
    let sticky = &lb.sticky_session;
    (sticky.add_service_instance_cookie == Some(true))
        .then_some(sticky.instance_id_cookie_name.as_deref())
        .map(|name| name.unwrap_or("sc-lb-instance-id"))
}

/// `builder` with the instance cookie of each `(client name, settings)`
/// (their own or inherited `add-service-instance-cookie`), and, when
/// `global` is given, the global setting for services no client names
/// (discovered on demand); without it (`RibbonConfig::apply`), a client
/// not setting the key leaves the builder's cookie as it was.
pub(crate) fn with_instance_cookies<'a>(
    mut builder: crate::service::Builder,
    clients: impl IntoIterator<Item = (&'a str, &'a LoadBalancerSettings)>,
    global: Option<&LoadBalancerSettings>,
) -> crate::service::Builder {
    if let Some(global) = global {
        builder = builder.instance_cookie(instance_cookie(global));
    }
    for (client, lb) in clients {
        let set = lb.sticky_session.add_service_instance_cookie.is_some();
        if set || global.is_some() {
            builder = builder.service_instance_cookie(client, instance_cookie(lb));
        }
    }
    builder
}

/// Hint routing as configured: the header, the default hint and the hints
/// of named services.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct HintSpec {
    pub(crate) header: Option<String>,
    pub(crate) default: Option<String>,
    pub(crate) services: Vec<(String, String)>,
    /// Per-service `hint-header-name` (a balancer serving several clients).
    pub(crate) service_headers: Vec<(String, String)>,
}

/// The wrappers of one rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Policies {
    pub(crate) configuration: Option<LoadBalancerConfiguration>,
    /// Some when a `hint.*` or `hint-header-name` key is set.
    pub(crate) hint: Option<HintSpec>,
    pub(crate) sticky_cookie: Option<String>,
    pub(crate) subset: Option<(String, usize)>,
    pub(crate) slow_start: Option<SlowStartConfig>,
}

impl Policies {
    /// The policies of a client's settings.
    pub(crate) fn new(lb: &LoadBalancerSettings, slow_start: &SlowStartSettings) -> Self {
        use LoadBalancerConfiguration as C;
        let hint = (lb.hint.is_some() || lb.hint_header_name.is_some()).then(|| HintSpec {
            header: lb.hint_header_name.clone(),
            default: lb.hint.clone(),
            services: Vec::new(),
            service_headers: Vec::new(),
        });
        let sticky_cookie = (lb.configuration == Some(C::RequestBasedStickySession)).then(|| {
            (lb.sticky_session.instance_id_cookie_name.clone())
                .unwrap_or_else(|| "sc-lb-instance-id".to_owned())
        });
        let subset = (lb.configuration == Some(C::Subset)).then(|| {
            let id = (lb.subset.instance_id.clone()).unwrap_or_else(|| process_id().to_owned());
            let size = lb.subset.size.map_or(100, |s| s as usize);
            (id, size)
        });
        Self {
            configuration: lb.configuration,
            hint,
            sticky_cookie,
            subset,
            slow_start: slow_start.config(),
        }
    }

    /// What must be equal across the clients of one balancer (everything
    /// but hint routing, which is per service), as text for a conflict
    /// message.
    pub(crate) fn balancer_wide(&self) -> String {
        let shared = Self {
            hint: None,
            ..self.clone()
        };
        format!("{shared:?}")
    }

    /// Wraps `inner` in the slow start wrapper, if configured (the
    /// innermost wrapper).
    pub(crate) fn wrap_inner(&self, inner: Box<dyn Rule>) -> Box<dyn Rule> {
        match self.slow_start {
            Some(config) => Box::new(SlowStart::new(inner, config)),
            None => inner,
        }
    }

    /// Wraps `rule` (zone avoidance included) in the SCLB policies.
    pub(crate) fn wrap_outer(&self, mut rule: Box<dyn Rule>) -> Box<dyn Rule> {
        if let Some(spec) = &self.hint {
            let mut hint = HintBased::new(rule);
            if let Some(header) = spec.header.as_deref().and_then(|h| h.parse::<HeaderName>().ok()) {
                hint = hint.header_name(header);
            }
            if let Some(default) = &spec.default {
                hint = hint.hint(default.clone());
            }
            for (service, h) in &spec.services {
                hint = hint.service_hint(service, h.clone());
            }
            for (service, h) in &spec.service_headers {
                if let Ok(name) = h.parse::<HeaderName>() {
                    hint = hint.service_header_name(service, name);
                }
            }
            rule = Box::new(hint);
        }
        if let Some(cookie) = &self.sticky_cookie {
            rule = Box::new(StickySession::new(rule).cookie_name(cookie.clone()));
        }
        if self.configuration == Some(LoadBalancerConfiguration::SameInstancePreference) {
            rule = Box::new(SameInstancePreference::new(rule));
        }
        if let Some((id, size)) = &self.subset {
            rule = Box::new(Subset::new(rule, id.clone()).size(*size));
        }
        rule
    }
}

/// What rule to make: the kind, the preferred zone, and the policy
/// wrappers (see the `policies` module for their order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleSpec {
    pub(crate) kind: RuleKind,
    pub(crate) preferred_zone: Option<String>,
    /// `configurations: weighted`: SCLB's reading of metadata `weight`.
    pub(crate) spring_weights: bool,
    pub(crate) policies: Policies,
}

impl RuleSpec {
    pub(crate) fn make(&self) -> Box<dyn Rule> {
        let base: Box<dyn Rule> = match self.kind {
            RuleKind::ZoneAvoidance => Box::new(RoundRobin::new()),
            RuleKind::WeightedRoundRobin if self.spring_weights => {
                Box::new(WeightedRoundRobin::new().spring_weights())
            }
            kind => kind.make(),
        };
        self.wrap(base)
    }

    /// `base` in this spec's wrappers (and zone avoidance with the
    /// preferred zone), as [`RuleSpec::make`] wraps the rule it makes.
    pub(crate) fn wrap(&self, base: Box<dyn Rule>) -> Box<dyn Rule> {
        let inner = self.policies.wrap_inner(base);
        let zone = self.preferred_zone.as_deref();
        let rule: Box<dyn Rule> = match (zone, self.kind) {
            (None, RuleKind::ZoneAvoidance) | (Some(_), _) => {
                Box::new(ZoneAvoidance::new(inner).preferred_zone(zone))
            }
            (None, _) => inner,
        };
        self.policies.wrap_outer(rule)
    }
}

/// A random id drawn once per process: the subset client id when neither
/// `subset.instance-id` nor Spring's identity keys give one (SCLB 4.0 drew
/// a random UUID per supplier). One per process, so every client and every
/// rebuilt rule of this process agree.
fn process_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// The machine's host name, what Spring Cloud puts in
/// `spring.cloud.client.hostname` when the configuration does not
/// (`HostInfoEnvironmentPostProcessor`, from `InetUtils`): the kernel's
/// host name (`/proc/sys/kernel/hostname`, read up to 256 bytes), else the
/// `HOSTNAME` or `COMPUTERNAME` variable (see `pick_hostname`).
pub(crate) fn machine_hostname() -> Option<String> {
    use std::io::Read;
    let mut kernel = String::new();
    let read = std::fs::File::open("/proc/sys/kernel/hostname")
        .and_then(|f| f.take(256).read_to_string(&mut kernel));
    pick_hostname([
        read.ok().map(|_| kernel),
        std::env::var("HOSTNAME").ok(),
        std::env::var("COMPUTERNAME").ok(),
    ])
}

/// The first of `candidates` that names this machine: 1 to 253 visible
/// ASCII characters (trimmed), and not a name that every unnamed machine
/// has: the kernel's `(none)` (no host name set) or `localhost`
/// (`localhost.localdomain`, ...), which would give every replica the
/// same subset id; Spring's `InetUtils` does not take them either (it
/// names the machine by a non-loopback address).
fn pick_hostname(candidates: [Option<String>; 3]) -> Option<String> {
    let valid = |h: String| {
        let h = h.trim().to_owned();
        let shared = h == "(none)"
            || (h.get(..9).is_some_and(|p| p.eq_ignore_ascii_case("localhost"))
                && matches!(h.as_bytes().get(9), None | Some(b'.')));
        (!h.is_empty() && !shared && h.len() <= 253 && h.bytes().all(|b| b.is_ascii_graphic()))
            .then_some(h)
    };
    candidates.into_iter().flatten().find_map(valid)
}

/// Spring's default instance id (`IdUtils.getDefaultInstanceId`):
/// `vcap.application.instance_id` if set, else
/// `[spring.cloud.client.hostname:]spring.application.name[:index]` with
/// `index` = `spring.application.instance_id`, else `server.port`; `None`
/// when none of them is set. Spring fills `spring.cloud.client.hostname`
/// with the machine's host name, which a file rarely holds, so
/// [`AppIdentity::fill_hostname`] does the same: without it every replica
/// of a service configured from one file had the id `name:port`, and so
/// the same subset (the fleet's traffic on `size` instances). Set
/// `subset.instance-id` for a Rust and a Java client to agree.
/// The longest identity value read (a host name's 253 bytes): each
/// client gets its own instance id built from these, up to 16 of them
/// through `subset.instance-id` placeholders, so a long one was copied
/// into every client (a 70 KiB name, 16 placeholders and 64 clients held
/// 70 MiB).
pub(crate) const MAX_IDENTITY_BYTES: usize = 253;

#[derive(Debug, Clone, Default)]
pub(crate) struct AppIdentity {
    pub(crate) vcap_instance_id: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) port: Option<String>,
    /// The machine's host name (else this process's random id), which
    /// `${spring.cloud.client.hostname}` reads when the file does not set
    /// the key, whatever else it sets (Spring fills the key always).
    pub(crate) machine: Option<String>,
}

impl AppIdentity {
    /// Records `key` if it is one of the identity keys; a warning for a
    /// value over [`MAX_IDENTITY_BYTES`], which is ignored.
    pub(crate) fn read(&mut self, key: &str, value: &str) -> Option<String> {
        let slot = match key {
            "vcap.application.instance_id" => &mut self.vcap_instance_id,
            "spring.cloud.client.hostname" => &mut self.hostname,
            "spring.application.name" => &mut self.name,
            "spring.application.instance_id" => &mut self.instance_id,
            "server.port" => &mut self.port,
            _ => return None,
        };
        if value.len() > MAX_IDENTITY_BYTES {
            return Some(format!(
                "`{key}` of {} bytes ignored: an instance id part holds at most \
                 {MAX_IDENTITY_BYTES} bytes",
                value.len()
            ));
        }
        *slot = Some(value.to_owned()).filter(|v| !v.trim().is_empty());
        None
    }

    /// The value of an identity key, if set.
    fn get(&self, key: &str) -> Option<&str> {
        match key.trim() {
            "vcap.application.instance_id" => self.vcap_instance_id.as_deref(),
            "spring.cloud.client.hostname" => self.hostname.as_deref().or(self.machine.as_deref()),
            "spring.application.name" => self.name.as_deref(),
            "spring.application.instance_id" => self.instance_id.as_deref(),
            "server.port" => self.port.as_deref(),
            _ => None,
        }
    }

    /// `text` with each `${key}` or `${key:default}` placeholder naming an
    /// identity key replaced (by the default when the key is not set), as
    /// Spring resolves `subset.instance-id`; other placeholders stay as
    /// written. One pass, no nesting; at most 16 placeholders.
    pub(crate) fn resolve(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        for _ in 0..16 {
            let Some(start) = rest.find("${") else { break };
            let Some(len) = rest[start..].find('}') else { break };
            let inner = &rest[start + 2..start + len];
            let (key, default) = match inner.split_once(':') {
                Some((k, d)) => (k, Some(d)),
                None => (inner, None),
            };
            out.push_str(&rest[..start]);
            match self.get(key).or(default) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[start..=start + len]),
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Fills `spring.cloud.client.hostname`, when the configuration sets
    /// an identity key but not it, with `machine` (the machine's host
    /// name, as Spring does), or this process's random id when the host
    /// name is unknown: an id of only `name:port` is the same on every
    /// replica. Its placeholder reads that value also when no other key
    /// is set (before, it stayed the literal placeholder there, the same
    /// id on every replica).
    pub(crate) fn fill_hostname(&mut self, machine: Option<String>) {
        let machine = machine.unwrap_or_else(|| process_id().to_owned());
        let named = self.name.is_some() || self.instance_id.is_some() || self.port.is_some();
        if self.hostname.is_none() && self.vcap_instance_id.is_none() && named {
            self.hostname = Some(machine.clone());
        }
        self.machine = Some(machine);
    }

    /// The default instance id, if any part is set.
    pub(crate) fn default_id(&self) -> Option<String> {
        if let Some(vcap) = &self.vcap_instance_id {
            return Some(vcap.clone());
        }
        let combine = |a: Option<String>, b: Option<String>| match (a, b) {
            (Some(a), Some(b)) => Some(format!("{a}:{b}")),
            (a, b) => a.or(b),
        };
        let name = combine(self.hostname.clone(), self.name.clone());
        combine(name, self.instance_id.clone().or_else(|| self.port.clone()))
    }
}

#[cfg(test)]
#[path = "policies_tests.rs"]
mod tests;
