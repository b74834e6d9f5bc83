//! The 14 rules and wrappers the composition tests run the request path
//! through: every rule, and each wrapper over a different inner rule.
//! Include it with `#[path = "common/rules.rs"] mod rules;`.

use std::time::Duration;

use tower_ribbon::rule::*;

/// How many kinds [`build_rule`] knows.
#[allow(dead_code)]
pub const KINDS: u8 = 14;

/// A rule factory for `kind` (0 to 13; larger values give the last).
pub fn build_rule(kind: u8) -> Box<dyn Fn() -> Box<dyn Rule> + Send + Sync> {
    match kind {
        0 => Box::new(|| Box::new(RoundRobin::new()) as Box<dyn Rule>),
        1 => Box::new(|| Box::new(Random::with_seed(7)) as Box<dyn Rule>),
        2 => Box::new(|| Box::new(WeightedRoundRobin::new()) as Box<dyn Rule>),
        3 => Box::new(|| Box::new(WeightedResponseTime::with_seed(7)) as Box<dyn Rule>),
        4 => Box::new(|| Box::new(BestAvailable::new()) as Box<dyn Rule>),
        5 => Box::new(|| Box::new(PeakEwmaP2c::with_seed(7)) as Box<dyn Rule>),
        6 => Box::new(|| Box::new(ConsistentHash::new()) as Box<dyn Rule>),
        7 => Box::new(|| Box::new(ZoneAvoidance::new(RoundRobin::new())) as Box<dyn Rule>),
        8 => {
            Box::new(|| Box::new(AvailabilityFiltering::new(BestAvailable::new())) as Box<dyn Rule>)
        }
        9 => Box::new(|| {
            Box::new(SlowStart::new(
                PeakEwmaP2c::with_seed(3),
                SlowStartConfig::new(Duration::from_secs(10)),
            )) as Box<dyn Rule>
        }),
        10 => Box::new(|| Box::new(StickySession::new(RoundRobin::new())) as Box<dyn Rule>),
        11 => Box::new(|| {
            Box::new(SameInstancePreference::new(WeightedRoundRobin::new())) as Box<dyn Rule>
        }),
        12 => Box::new(|| Box::new(Subset::new(RoundRobin::new(), "me")) as Box<dyn Rule>),
        _ => Box::new(|| {
            Box::new(HintBased::new(ZoneAvoidance::new(Random::with_seed(1)))) as Box<dyn Rule>
        }),
    }
}
