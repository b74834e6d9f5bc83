//! Hint-based routing (SCLB's `HintBasedServiceInstanceListSupplier`) before any rule.
//!
//! The hint of a request is the first value of the header
//! [`header_name`](HintBased::header_name) (default `X-SC-LB-Hint`) when it
//! has text (a character other than whitespace); otherwise the configured
//! hint of the service ([`service_hint`](HintBased::service_hint), Spring's
//! `spring.cloud.loadbalancer.hint.<serviceId>`), else the default hint
//! ([`hint`](HintBased::hint), Spring's `hint.default`), else the literal
//! `default` (as Spring's `LoadBalancerClient` fills its
//! `HintRequestContext`). A configured hint without text (empty, or only
//! Java's whitespace) is no hint: every instance, as SCLB's `hasText` gives.
//! Instances whose metadata `hint` equals it (byte for byte, as `equals`) are
//! preferred; when none of them is eligible, the wrapped rule picks among
//! all instances, as SCLB returns every instance when none matches; so
//! does a header hint that matches no instance (SCLB does not fall back
//! from the header to the configured hint).
//!
//! Difference from SCLB: the preference is over the *eligible* instances
//! (a retry's exclusions, the health filter), so a hinted instance that is
//! excluded or unhealthy lets the pick go to the others instead of failing.
//!
//! Cost: [`Rule::build`] groups the endpoints by hint (O(n), one hash map);
//! a pick reads one header and does one hash lookup, then costs what the
//! wrapped picker costs with one preferred tier, whose [`Domain`] is the
//! group's endpoints (a round-robin picker steps over them only). A
//! request without the header and with no group for the configured hint
//! goes straight to the wrapped picker.
//!
//! ```
//! use std::sync::Arc;
//! use http::HeaderMap;
//! use tower_ribbon::instance::{Endpoint, Instance};
//! use tower_ribbon::rule::{HintBased, PickContext, RoundRobin, Rule};
//! use tower_ribbon::snapshot::Snapshot;
//!
//! let endpoints = [("stable", 8081), ("canary", 8082)]
//!     .iter()
//!     .map(|(hint, port)| {
//!         let i = Instance::new("svc", "127.0.0.1", *port).unwrap();
//!         Endpoint::new(i.with_metadata("hint", *hint))
//!     })
//!     .collect();
//! let snapshot = Arc::new(Snapshot::new("svc", endpoints, 1));
//! let picker = HintBased::new(RoundRobin::new()).hint("stable").build(&snapshot);
//! // No header: the configured hint.
//! assert_eq!(picker.pick(&PickContext::new()).unwrap().instance().port(), 8081);
//! // The header's hint wins.
//! let mut headers = HeaderMap::new();
//! headers.insert("x-sc-lb-hint", "canary".parse().unwrap());
//! let ctx = PickContext::new().with_headers(&headers);
//! assert_eq!(picker.pick(&ctx).unwrap().instance().port(), 8082);
//! ```
//!
//! [`Domain`]: super::Domain

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderName;

use super::prefer::pick_preferring;
use super::{PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

/// The metadata key holding an instance's hint (SCLB's).
pub const HINT_METADATA_KEY: &str = "hint";

/// Prefers the instances whose metadata `hint` matches the request's hint;
/// the wrapped rule chooses among them. See the [module docs](self).
///
/// Defaults: header `X-SC-LB-Hint`, no configured hint (the literal
/// `default` is used).
pub struct HintBased<R> {
    inner: R,
    header: HeaderName,
    default_hint: Box<str>,
    /// Per-service hints, keyed by the service id in ASCII lowercase.
    services: HashMap<Box<str>, Box<str>>,
    /// Per-service headers, keyed by the service id in ASCII lowercase.
    headers: HashMap<Box<str>, HeaderName>,
}

impl<R: Rule> HintBased<R> {
    /// SCLB's default header (`spring.cloud.loadbalancer.hint-header-name`).
    pub const DEFAULT_HEADER: &'static str = "x-sc-lb-hint";
    /// The hint used when none is configured (SCLB's literal).
    pub const DEFAULT_HINT: &'static str = "default";

    /// Hint-based routing over `inner` with SCLB's defaults.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            header: HeaderName::from_static(Self::DEFAULT_HEADER),
            default_hint: Self::DEFAULT_HINT.into(),
            services: HashMap::new(),
            headers: HashMap::new(),
        }
    }

    /// The header that carries a request's hint (SCLB's
    /// `hint-header-name`). Default `X-SC-LB-Hint`.
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// The hint of services without their own (SCLB's `hint.default`).
    /// Default: the literal `default`.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.default_hint = hint.into().into_boxed_str();
        self
    }

    /// The hint of `service` (SCLB's `hint.<serviceId>`; the id compares
    /// ASCII-case-insensitively).
    pub fn service_hint(mut self, service: &str, hint: impl Into<String>) -> Self {
        self.services.insert(
            service.to_ascii_lowercase().into_boxed_str(),
            hint.into().into_boxed_str(),
        );
        self
    }

    /// The header that carries the hint of requests to `service` (SCLB's
    /// `clients.<serviceId>.hint-header-name`; the id compares
    /// ASCII-case-insensitively). Default: [`header_name`](Self::header_name).
    pub fn service_header_name(mut self, service: &str, name: HeaderName) -> Self {
        self.headers
            .insert(service.to_ascii_lowercase().into_boxed_str(), name);
        self
    }

    /// The header read for `service`: its own, else the default.
    pub fn header_for(&self, service: &str) -> &HeaderName {
        self.headers
            .get(service.to_ascii_lowercase().as_str())
            .unwrap_or(&self.header)
    }

    /// The configured hint for `service`: its own, else the default.
    pub fn configured_hint(&self, service: &str) -> &str {
        self.services
            .get(service.to_ascii_lowercase().as_str())
            .unwrap_or(&self.default_hint)
    }

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: Rule> fmt::Debug for HintBased<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HintBased")
            .field("inner", &self.inner)
            .field("header", &self.header)
            .field("default_hint", &self.default_hint)
            .field("services", &self.services.len())
            .field("service_headers", &self.headers.len())
            .finish()
    }
}

/// No hint group.
const NONE: u32 = u32::MAX;

impl<R: Rule> Rule for HintBased<R> {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let endpoints = snapshot.endpoints();
        let mut groups: HashMap<Box<[u8]>, u32> = HashMap::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut ids = Vec::with_capacity(endpoints.len());
        for (i, e) in endpoints.iter().enumerate() {
            let group = match (
                e.instance().metadata().get(HINT_METADATA_KEY),
                u32::try_from(i),
            ) {
                (Some(hint), Ok(i)) => {
                    let next = u32::try_from(members.len()).unwrap_or(NONE);
                    let g = *groups.entry(hint.as_bytes().into()).or_insert(next);
                    if g == next && next != NONE {
                        members.push(Vec::new());
                    }
                    if let Some(m) = members.get_mut(g as usize) {
                        m.push(i);
                    }
                    g
                }
                _ => NONE,
            };
            ids.push(group);
        }
        // A blank configured hint is no hint (SCLB's `StringUtils.hasText`
        // check): every instance, even one whose metadata hint is blank.
        let hint = self.configured_hint(snapshot.service_id());
        let configured = java_has_text(hint)
            .then(|| groups.get(hint.as_bytes()).copied())
            .flatten();
        Arc::new(HintPicker {
            inner: self.inner.build(snapshot),
            header: self.header_for(snapshot.service_id()).clone(),
            groups,
            members: members.into_iter().map(Vec::into_boxed_slice).collect(),
            ids: ids.into_boxed_slice(),
            configured,
        })
    }

    fn name(&self) -> &'static str {
        "hint_based"
    }
}

/// The picker of [`HintBased`]: hint groups of one list.
struct HintPicker {
    inner: Arc<dyn Picker>,
    header: HeaderName,
    /// Hint value to group id.
    groups: HashMap<Box<[u8]>, u32>,
    /// Per group, its endpoints' indices, ascending.
    members: Box<[Box<[u32]>]>,
    /// Per endpoint, its group id ([`NONE`] without a hint).
    ids: Box<[u32]>,
    /// The group of the configured hint, if any instance has it.
    configured: Option<u32>,
}

impl fmt::Debug for HintPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HintPicker")
            .field("inner", &self.inner)
            .field("groups", &self.members.len())
            .field("configured", &self.configured)
            .finish()
    }
}

/// Whether `value` has a byte other than ASCII whitespace (Spring's
/// `StringUtils.hasText`).
fn has_text(value: &[u8]) -> bool {
    value.iter().any(|b| !b.is_ascii_whitespace())
}

/// Whether `value` has a character other than Java's whitespace
/// (`Character.isWhitespace`: ASCII whitespace, `\u{b}`, `\u{1c}` to
/// `\u{1f}`, and the Unicode space, line and paragraph separators other
/// than the non-breaking ones), as Spring's `StringUtils.hasText` tests a
/// configured hint.
fn java_has_text(value: &str) -> bool {
    value.chars().any(|c| {
        let space = matches!(c, '\u{9}'..='\u{d}' | '\u{1c}'..='\u{1f}' | ' ')
            || (c.is_whitespace() && !matches!(c, '\u{85}' | '\u{a0}' | '\u{2007}' | '\u{202f}'));
        !space
    })
}

impl Picker for HintPicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let header = ctx
            .headers()
            .and_then(|h| h.get(&self.header))
            .map(http::HeaderValue::as_bytes)
            .filter(|v| has_text(v));
        let group = match header {
            Some(hint) => self.groups.get(hint).copied(),
            None => self.configured,
        };
        let Some(g) = group else {
            return self.inner.pick(ctx);
        };
        let ids = &*self.ids;
        let domain = self.members.get(g as usize).map(|m| &**m);
        pick_preferring(&*self.inner, ctx, &|i, _| ids.get(i) == Some(&g), domain)
    }

    /// The wrapped picker's: slow start passes over within this wrapper's
    /// tiers. Not `keyed_choice`: a tier of `k` offers an instance `1/k`
    /// of keys, not the `1/n` slow start's keyed rate assumes.
    fn repeats_choice(&self, ctx: &PickContext<'_>) -> bool {
        self.inner.repeats_choice(ctx)
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        self.inner.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::super::RoundRobin;
    use super::super::test_support::{index, instance};
    use super::*;

    fn hinted(hints: &[Option<&str>]) -> Arc<Snapshot> {
        let endpoints = hints
            .iter()
            .zip(1000..)
            .map(|(h, p)| {
                let i = instance("127.0.0.1", p);
                Endpoint::new(match h {
                    Some(h) => i.with_metadata("hint", *h),
                    None => i,
                })
            })
            .collect();
        Arc::new(Snapshot::new("s", endpoints, 1))
    }

    fn picks(p: &dyn Picker, ctx: &PickContext<'_>, n: usize) -> Vec<usize> {
        (0..n).map(|_| index(p.pick(ctx).unwrap())).collect()
    }

    #[test]
    fn header_hint_wins_and_falls_back_to_all() {
        let s = hinted(&[Some("a"), Some("b"), None, Some("b")]);
        let rule = HintBased::new(RoundRobin::with_start(0)).hint("a");
        let p = rule.build(&s);
        let mut h = HeaderMap::new();
        h.insert("x-sc-lb-hint", "b".parse().unwrap());
        let ctx = PickContext::new().with_headers(&h);
        assert_eq!(picks(&*p, &ctx, 4), [3, 1, 3, 1]);
        // Configured hint without a header.
        assert_eq!(picks(&*p, &PickContext::new(), 2), [0, 0]);
        // A header hint nobody has: every instance (not the configured hint).
        h.insert("x-sc-lb-hint", "zzz".parse().unwrap());
        let ctx = PickContext::new().with_headers(&h);
        let mut all = picks(&*p, &ctx, 4);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3]);
        // A blank header is no hint: the configured one applies.
        h.insert("x-sc-lb-hint", "  ".parse().unwrap());
        let ctx = PickContext::new().with_headers(&h);
        assert_eq!(picks(&*p, &ctx, 2), [0, 0]);
    }

    #[test]
    fn literal_default_service_hints_and_exclusions() {
        let s = hinted(&[Some("default"), Some("x"), Some("x")]);
        let p = HintBased::new(RoundRobin::with_start(0)).build(&s);
        assert_eq!(picks(&*p, &PickContext::new(), 2), [0, 0]);
        let rule = HintBased::new(RoundRobin::with_start(0)).service_hint("S", "x");
        assert_eq!(rule.configured_hint("s"), "x");
        let p = rule.build(&s);
        assert_eq!(picks(&*p, &PickContext::new(), 4), [1, 2, 1, 2]);
        // Both hinted instances excluded: the others take the pick.
        let excluded = [s.endpoints()[1].clone(), s.endpoints()[2].clone()];
        let ctx = PickContext::new().with_excluded(&excluded);
        assert_eq!(picks(&*p, &ctx, 2), [0, 0]);
        assert!(format!("{rule:?}").contains("HintBased"));
        assert_eq!(rule.name(), "hint_based");
    }

    #[test]
    fn each_service_reads_its_own_header() {
        let s = hinted(&[Some("a"), Some("b")]);
        let rule = HintBased::new(RoundRobin::with_start(0))
            .service_header_name("S", HeaderName::from_static("x-own"));
        assert_eq!(rule.header_for("s").as_str(), "x-own");
        assert_eq!(rule.header_for("other").as_str(), "x-sc-lb-hint");
        let p = rule.build(&s);
        let mut h = HeaderMap::new();
        h.insert("x-sc-lb-hint", "a".parse().unwrap());
        h.insert("x-own", "b".parse().unwrap());
        assert_eq!(picks(&*p, &PickContext::new().with_headers(&h), 2), [1, 1]);
    }

    #[test]
    fn a_blank_configured_hint_is_no_hint() {
        // SCLB returns every instance for a hint without text, even when an
        // instance's metadata hint is blank too.
        let s = hinted(&[Some(""), None, Some("\u{2003}"), Some("\u{b}")]);
        for blank in ["", "  ", "\u{2003}", "\u{b}\t"] {
            let p = HintBased::new(RoundRobin::with_start(0))
                .hint(blank)
                .build(&s);
            assert_eq!(
                picks(&*p, &PickContext::new(), 4),
                [0, 1, 2, 3],
                "{blank:?}"
            );
        }
        // A non-breaking space is text for Java.
        let s = hinted(&[None, Some("\u{a0}")]);
        let p = HintBased::new(RoundRobin::with_start(0))
            .hint("\u{a0}")
            .build(&s);
        assert_eq!(picks(&*p, &PickContext::new(), 2), [1, 1]);
    }

    /// Retries without a hint step a lane reserved for them, so they never
    /// move a hint group's rotation. As one more hashed lane key they
    /// shared a lane with about 1 in 63 groups: for a group of three of
    /// six (indices 2 to 4), each hinted request followed by two retries
    /// elsewhere went to the same member, 300 of 300. Every contiguous
    /// group of 2 to 4 in lists of 4 to 16 is tried, so the test does not
    /// depend on which group's key collides with which lane.
    #[test]
    fn retries_without_a_hint_do_not_move_a_hint_groups_rotation() {
        let mut layouts = 0;
        for n in 4..=16usize {
            for len in 2..=4usize.min(n - 1) {
                for start in 0..=n - len {
                    let hints: Vec<Option<&str>> = (0..n)
                        .map(|i| (start..start + len).contains(&i).then_some("h"))
                        .collect();
                    let s = hinted(&hints);
                    let p = HintBased::new(RoundRobin::with_start(0)).build(&s);
                    let mut h = HeaderMap::new();
                    h.insert("x-sc-lb-hint", "h".parse().unwrap());
                    let hinted_ctx = PickContext::new().with_headers(&h);
                    // A retry without a hint, after a first try outside the group.
                    let outside = [s.endpoints()[if start == 0 { n - 1 } else { 0 }].clone()];
                    let retry = PickContext::new().with_excluded(&outside);
                    let mut counts = vec![0usize; n];
                    for _ in 0..100 * len {
                        counts[index(p.pick(&hinted_ctx).unwrap())] += 1;
                        for _ in 1..len {
                            p.pick(&retry).unwrap();
                        }
                    }
                    let expected: Vec<usize> = (0..n)
                        .map(|i| {
                            if (start..start + len).contains(&i) {
                                100
                            } else {
                                0
                            }
                        })
                        .collect();
                    assert_eq!(counts, expected, "n {n}, group {start}..{}", start + len);
                    layouts += 1;
                }
            }
        }
        assert_eq!(layouts, 311);
    }

    /// Two hint groups in turn each rotate on their own, whatever their
    /// layout: with lanes chosen by a hash of the group, about 1 in 63
    /// pairs of groups shared one, and then each request to the first
    /// group, followed by `len - 1` requests to the second, went to the
    /// same member. Every pair of disjoint contiguous groups of 2 or 3 in
    /// lists of 4 to 12 is tried.
    #[test]
    fn two_hint_groups_in_turn_never_share_a_rotation() {
        let mut layouts = 0;
        for n in 4..=12usize {
            for la in 2..=3usize {
                for lb in 2..=3usize {
                    for a0 in 0..=n.saturating_sub(la) {
                        for b0 in 0..=n.saturating_sub(lb) {
                            let (a, b) = (a0..a0 + la, b0..b0 + lb);
                            if a.end > n || b.end > n || (a.start < b.end && b.start < a.end) {
                                continue;
                            }
                            let hints: Vec<Option<&str>> = (0..n)
                                .map(|i| {
                                    if a.contains(&i) {
                                        Some("a")
                                    } else if b.contains(&i) {
                                        Some("b")
                                    } else {
                                        None
                                    }
                                })
                                .collect();
                            let s = hinted(&hints);
                            let p = HintBased::new(RoundRobin::with_start(0)).build(&s);
                            let (mut ha, mut hb) = (HeaderMap::new(), HeaderMap::new());
                            ha.insert("x-sc-lb-hint", "a".parse().unwrap());
                            hb.insert("x-sc-lb-hint", "b".parse().unwrap());
                            let (ca, cb) = (
                                PickContext::new().with_headers(&ha),
                                PickContext::new().with_headers(&hb),
                            );
                            let mut counts = vec![0usize; n];
                            for _ in 0..100 * la {
                                counts[index(p.pick(&ca).unwrap())] += 1;
                                for _ in 1..la {
                                    assert!(b.contains(&index(p.pick(&cb).unwrap())));
                                }
                            }
                            let expected: Vec<usize> = (0..n)
                                .map(|i| if a.contains(&i) { 100 } else { 0 })
                                .collect();
                            assert_eq!(counts, expected, "n {n}, groups {a:?} and {b:?}");
                            layouts += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(layouts, 978);
    }
}
