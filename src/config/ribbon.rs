//! Ribbon's names: [`RuleKind`] (`NFLoadBalancerRuleClassName`) and
//! [`ServerListKind`] (`NIWSServerListClassName`).

use std::fmt;

use crate::rule::{
    AvailabilityFiltering, BestAvailable, ConsistentHash, PeakEwmaP2c, Random, RoundRobin, Rule,
    WeightedResponseTime, WeightedRoundRobin, ZoneAvoidance,
};
#[cfg(doc)]
use crate::service::Builder;

/// Ribbon's default ping interval when read from configuration
/// (`BaseLoadBalancer.initWithConfig`), in seconds.
pub(crate) const DEFAULT_PING_INTERVAL_SECS: u64 = 30;

/// A rule this crate offers, as named by `NFLoadBalancerRuleClassName`.
///
/// [`RuleKind::from_class_name`] reads Ribbon's class names
/// (`com.netflix.loadbalancer.RoundRobinRule`), their short forms
/// (`RoundRobinRule`, `RoundRobin`), and this crate's rule names
/// (`PeakEwmaP2c`, `peak_ewma_p2c`), ignoring case and `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleKind {
    /// [`RoundRobin`]: `RoundRobinRule`, also `RetryRule` and
    /// `ClientConfigEnabledRoundRobinRule`.
    RoundRobin,
    /// [`Random`]: `RandomRule`.
    Random,
    /// [`WeightedResponseTime`]: `WeightedResponseTimeRule` (and the older
    /// `ResponseTimeWeightedRule`).
    WeightedResponseTime,
    /// [`AvailabilityFiltering`] over round robin: `AvailabilityFilteringRule`.
    AvailabilityFiltering,
    /// [`BestAvailable`]: `BestAvailableRule`.
    BestAvailable,
    /// [`ZoneAvoidance`] over round robin: `ZoneAvoidanceRule`.
    ZoneAvoidance,
    /// [`PeakEwmaP2c`] (this crate's): `PeakEwmaP2c`.
    PeakEwmaP2c,
    /// [`WeightedRoundRobin`] (this crate's): `WeightedRoundRobin`.
    WeightedRoundRobin,
    /// [`ConsistentHash`] (this crate's): `ConsistentHash`. Set
    /// [`Builder::hash_key`] yourself, else it falls back to round robin.
    ConsistentHash,
}

impl RuleKind {
    /// Reads a rule class name; `None` if it names no rule of this crate.
    /// A qualified Ribbon name must be in `com.netflix.loadbalancer` (or
    /// `com.netflix.niws.loadbalancer`); other packages are custom rules,
    /// which cannot be loaded.
    ///
    /// ```
    /// use tower_ribbon::config::RuleKind;
    ///
    /// assert_eq!(
    ///     RuleKind::from_class_name("com.netflix.loadbalancer.RandomRule"),
    ///     Some(RuleKind::Random)
    /// );
    /// assert_eq!(RuleKind::from_class_name("RetryRule"), Some(RuleKind::RoundRobin));
    /// assert_eq!(RuleKind::from_class_name("peak_ewma_p2c"), Some(RuleKind::PeakEwmaP2c));
    /// assert_eq!(RuleKind::from_class_name("com.example.MyRule"), None);
    /// ```
    pub fn from_class_name(name: &str) -> Option<RuleKind> {
        let name = name.trim();
        let simple = if let Some((package, simple)) = name.rsplit_once("::") {
            if !matches!(package, "tower_ribbon::rule" | "rule") {
                return None;
            }
            simple
        } else if let Some((package, simple)) = name.rsplit_once('.') {
            if !matches!(
                package,
                "com.netflix.loadbalancer" | "com.netflix.niws.loadbalancer"
            ) {
                return None;
            }
            simple
        } else {
            name
        };
        let norm: String = simple
            .chars()
            .filter(|c| *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        let norm = norm.strip_suffix("rule").unwrap_or(&norm);
        Some(match norm {
            "roundrobin" | "retry" | "clientconfigenabledroundrobin" => RuleKind::RoundRobin,
            "random" => RuleKind::Random,
            "weightedresponsetime" | "responsetimeweighted" => RuleKind::WeightedResponseTime,
            "availabilityfiltering" => RuleKind::AvailabilityFiltering,
            "bestavailable" => RuleKind::BestAvailable,
            "zoneavoidance" => RuleKind::ZoneAvoidance,
            "peakewmap2c" => RuleKind::PeakEwmaP2c,
            "weightedroundrobin" => RuleKind::WeightedRoundRobin,
            "consistenthash" => RuleKind::ConsistentHash,
            _ => return None,
        })
    }

    /// The [`Rule::name`] of the rule this kind makes (`round_robin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::RoundRobin => "round_robin",
            RuleKind::Random => "random",
            RuleKind::WeightedResponseTime => "weighted_response_time",
            RuleKind::AvailabilityFiltering => "availability_filtering",
            RuleKind::BestAvailable => "best_available",
            RuleKind::ZoneAvoidance => "zone_avoidance",
            RuleKind::PeakEwmaP2c => "peak_ewma_p2c",
            RuleKind::WeightedRoundRobin => "weighted_round_robin",
            RuleKind::ConsistentHash => "consistent_hash",
        }
    }

    /// A new rule of this kind with its defaults (wrappers over round
    /// robin).
    pub fn make(self) -> Box<dyn Rule> {
        match self {
            RuleKind::RoundRobin => Box::new(RoundRobin::new()),
            RuleKind::Random => Box::new(Random::new()),
            RuleKind::WeightedResponseTime => Box::new(WeightedResponseTime::new()),
            RuleKind::AvailabilityFiltering => Box::new(AvailabilityFiltering::default()),
            RuleKind::BestAvailable => Box::new(BestAvailable::new()),
            RuleKind::ZoneAvoidance => Box::new(ZoneAvoidance::default()),
            RuleKind::PeakEwmaP2c => Box::new(PeakEwmaP2c::new()),
            RuleKind::WeightedRoundRobin => Box::new(WeightedRoundRobin::new()),
            RuleKind::ConsistentHash => Box::new(ConsistentHash::new()),
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a client's instances come from (`NIWSServerListClassName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerListKind {
    /// `listOfServers` ([`StaticSource`](crate::discovery::StaticSource)):
    /// Ribbon's `ConfigurationBasedServerList`.
    Static,
    /// The Eureka servers of `eureka.client.service-url.defaultZone`:
    /// Ribbon's `DiscoveryEnabledNIWSServerList` (and Spring's
    /// `DomainExtractingServerList`). The client name is the Eureka app
    /// name.
    Eureka,
}

impl ServerListKind {
    /// Reads a server list class name (qualified or not); `None` if it is
    /// neither kind.
    pub fn from_class_name(name: &str) -> Option<ServerListKind> {
        let simple = name.trim().rsplit('.').next().unwrap_or_default();
        match simple {
            "ConfigurationBasedServerList" => Some(ServerListKind::Static),
            "DiscoveryEnabledNIWSServerList" | "DomainExtractingServerList" => {
                Some(ServerListKind::Eureka)
            }
            _ => None,
        }
    }
}
