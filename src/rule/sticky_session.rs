//! Request-based sticky sessions (Spring Cloud LoadBalancer's
//! `RequestBasedStickySessionServiceInstanceListSupplier`) in front of any
//! other rule.
//!
//! The request's `Cookie` header is read for the cookie
//! [`cookie_name`](StickySession::cookie_name) (default
//! `sc-lb-instance-id`, SCLB's `sticky-session.instance-id-cookie-name`);
//! the instance whose [instance id](crate::instance::Instance::id) equals
//! its value is preferred. When no instance has that id, or it is not
//! eligible (excluded by a retry, unhealthy), the wrapped rule picks as
//! usual, as SCLB returns all instances when none matches.
//!
//! The cookie is read with bounds, from bytes, without allocating: at most
//! [`MAX_COOKIE_PAIRS`] pairs over all `Cookie` header fields, however
//! they are split (an HTTP/2 client sends one field per cookie, RFC 9113
//! §8.2.3, and hyper does not join them; RFC 6265 §4.2.1 `name=value`
//! pairs separated by `;`,
//! whitespace around them ignored, a value in double quotes unquoted); the
//! first pair with the name counts, as Spring's `cookies.getFirst`. A pair
//! without `=` or a value that is not an instance id is ignored; no header
//! makes a pick fail.
//!
//! SCLB's `sticky-session.add-service-instance-cookie` makes its load
//! balancing filters add the chosen instance's id as that cookie to the
//! request *sent to the instance* (so an instance that proxies on can keep
//! the affinity). That is a change to the outgoing request, made by the
//! request path, not by a rule: [`instance_cookie`] builds the pair, and
//! [`Builder::instance_cookie`](crate::service::Builder::instance_cookie)
//! turns it on.
//!
//! Cost: [`Rule::build`] indexes the instance ids (O(n), one hash map); a
//! pick scans the cookie header once and does one hash lookup, then costs
//! what the wrapped picker costs with a preferred tier of one endpoint.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use super::prefer::pick_preferring;
use super::{PickContext, Picker, Rule};
use crate::instance::{Endpoint, Instance};
use crate::snapshot::Snapshot;

/// At most this many `name=value` pairs are read, over all `Cookie` header
/// fields: one field of 8 192 pairs or 8 192 fields of one pair (HTTP/2
/// "cookie crumbs") read alike.
pub const MAX_COOKIE_PAIRS: usize = 8192;

/// Prefers the instance a request's cookie names. See the
/// [module docs](self).
pub struct StickySession<R> {
    inner: R,
    cookie: Box<str>,
}

impl<R: Rule> StickySession<R> {
    /// SCLB's default cookie name.
    pub const DEFAULT_COOKIE: &'static str = "sc-lb-instance-id";

    /// Sticky sessions over `inner`, cookie `sc-lb-instance-id`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            cookie: Self::DEFAULT_COOKIE.into(),
        }
    }

    /// The cookie that names the instance (case-sensitive, as cookie names
    /// are). Default `sc-lb-instance-id`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie = name.into().into_boxed_str();
        self
    }

    /// The cookie's name.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: Rule> fmt::Debug for StickySession<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickySession")
            .field("inner", &self.inner)
            .field("cookie", &self.cookie)
            .finish()
    }
}

impl<R: Rule> Rule for StickySession<R> {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let mut ids: HashMap<Box<[u8]>, u32> = HashMap::with_capacity(snapshot.len());
        for (e, i) in snapshot.endpoints().iter().zip(0u32..) {
            ids.entry(e.instance().id().as_bytes().into()).or_insert(i);
        }
        Arc::new(StickyPicker {
            inner: self.inner.build(snapshot),
            cookie: self.cookie.clone(),
            ids,
        })
    }

    fn name(&self) -> &'static str {
        "sticky_session"
    }
}

/// The picker of [`StickySession`]: instance ids of one list.
struct StickyPicker {
    inner: Arc<dyn Picker>,
    cookie: Box<str>,
    /// Instance id to the index of its first endpoint.
    ids: HashMap<Box<[u8]>, u32>,
}

impl fmt::Debug for StickyPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyPicker")
            .field("inner", &self.inner)
            .field("cookie", &self.cookie)
            .finish()
    }
}

impl Picker for StickyPicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let target = ctx
            .headers()
            .and_then(|h| cookie_value(h, &self.cookie))
            .and_then(|id| self.ids.get(id).copied());
        let Some(t) = target else {
            return self.inner.pick(ctx);
        };
        let domain = [t];
        let t = t as usize;
        pick_preferring(&*self.inner, ctx, &|i, _| i == t, Some(&domain))
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

/// The value of the first cookie `name` in `headers`' `Cookie` fields,
/// unquoted; `None` if there is none within the bounds
/// ([`MAX_COOKIE_PAIRS`] over all fields). Never panics, allocates
/// nothing.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let name = name.as_bytes();
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|field| field.as_bytes().split(|b| *b == b';'))
        .take(MAX_COOKIE_PAIRS)
        .find_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (n, v) = pair.split_at(eq);
            let v = v.get(1..)?.trim_ascii();
            (n.trim_ascii() == name).then(|| unquote(v))
        })
}

/// `v` without one pair of surrounding double quotes.
fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// The `Cookie` pair SCLB's `add-service-instance-cookie` adds to the
/// request sent to `instance`: `name=<instance id>`. `None` when either is
/// empty (SCLB then adds nothing), when the name is not an RFC 6265 token,
/// or when the id holds a byte outside RFC 6265's `cookie-octet` (a
/// control character, whitespace, `"`, `,`, `;`, `\`, non-ASCII): an id
/// such as `a; admin=1` must not add a second cookie to the request.
pub fn instance_cookie(name: &str, instance: &Instance) -> Option<HeaderValue> {
    let id = instance.id();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let octet = |b: u8| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
    if name.is_empty() || id.is_empty() || !name.bytes().all(token) || !id.bytes().all(octet) {
        return None;
    }
    HeaderValue::from_str(&format!("{name}={id}")).ok()
}

#[cfg(test)]
mod tests {
    use super::super::RoundRobin;
    use super::super::test_support::{index, instance, snapshot};
    use super::*;

    fn headers(cookies: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(http::header::COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        h
    }

    #[test]
    fn cookie_values_are_found_with_bounds() {
        let h = headers(&[
            b"a=1; sc-lb-instance-id=\"x:2\" ;b",
            b"sc-lb-instance-id=late",
        ]);
        assert_eq!(cookie_value(&h, "sc-lb-instance-id"), Some(&b"x:2"[..]));
        assert_eq!(cookie_value(&h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(&h, "b"), None);
        assert_eq!(cookie_value(&h, "A"), None);
        for hostile in [&b";;;==;="[..], b"=", b"\"", b"x=\"", b"\xff\xfe=\x80"] {
            let h = headers(&[hostile]);
            let _ = cookie_value(&h, "x");
            let _ = cookie_value(&h, "");
        }
        assert_eq!(cookie_value(&headers(&[b"x=\""]), "x"), Some(&b"\""[..]));
        // Past the pair bound: not read.
        let many = format!("{}k=v", "a=1;".repeat(MAX_COOKIE_PAIRS));
        assert_eq!(cookie_value(&headers(&[many.as_bytes()]), "k"), None);
        let within = format!("{}k=v", "a=1;".repeat(MAX_COOKIE_PAIRS - 1));
        assert_eq!(
            cookie_value(&headers(&[within.as_bytes()]), "k"),
            Some(&b"v"[..])
        );
        // HTTP/2 cookie crumbs, one field per cookie, read as one field:
        // the 33rd was not read before (a bound of 32 fields).
        let crumbs: Vec<String> = (0..40).map(|i| format!("c{i}=v{i}")).collect();
        let crumbs: Vec<&[u8]> = crumbs.iter().map(|c| c.as_bytes()).collect();
        assert_eq!(cookie_value(&headers(&crumbs), "c39"), Some(&b"v39"[..]));
        let many: Vec<&[u8]> = (0..MAX_COOKIE_PAIRS)
            .map(|_| &b"a=1"[..])
            .chain([&b"k=v"[..]])
            .collect();
        assert_eq!(cookie_value(&headers(&many), "k"), None);
    }

    #[test]
    fn the_cookie_instance_is_preferred_while_eligible() {
        let s = snapshot(3);
        let rule = StickySession::new(RoundRobin::with_start(0));
        let p = rule.build(&s);
        let h = headers(&[b"sc-lb-instance-id=127.0.0.1:1002"]);
        let ctx = PickContext::new().with_headers(&h);
        for _ in 0..3 {
            assert_eq!(index(p.pick(&ctx).unwrap()), 2);
        }
        // Excluded (a retry): the others, in turn.
        let excluded = [s.endpoints()[2].clone()];
        let retry = ctx.with_excluded(&excluded);
        assert_ne!(index(p.pick(&retry).unwrap()), 2);
        // Unknown id: the normal rotation.
        let h = headers(&[b"sc-lb-instance-id=gone"]);
        let ctx = PickContext::new().with_headers(&h);
        let mut seen: Vec<usize> = (0..3).map(|_| index(p.pick(&ctx).unwrap())).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        let custom = StickySession::new(RoundRobin::with_start(0)).cookie_name("sid");
        assert_eq!(custom.cookie(), "sid");
        assert_eq!(rule.name(), "sticky_session");
    }

    #[test]
    fn instance_cookie_pairs() {
        let i = instance("127.0.0.1", 1000).with_id("a-1");
        assert_eq!(
            instance_cookie("sc-lb-instance-id", &i).unwrap(),
            "sc-lb-instance-id=a-1"
        );
        assert!(instance_cookie("", &i).is_none());
        assert!(instance_cookie("x", &i.clone().with_id("bad\nid")).is_none());
        // No second pair, no split value, no bad name.
        for id in ["a; admin=1", "a,b", "a b", "\"a\"", "a\\b", "é"] {
            assert!(
                instance_cookie("x", &i.clone().with_id(id)).is_none(),
                "{id}"
            );
        }
        for name in ["a;b", "a=b", "a b"] {
            assert!(instance_cookie(name, &i).is_none(), "{name}");
        }
        let id = "host-1:user-api:8080";
        let v = instance_cookie("sc-lb-instance-id", &i.clone().with_id(id)).unwrap();
        assert_eq!(v, "sc-lb-instance-id=host-1:user-api:8080");
    }
}
