//! The instance cookie: Spring Cloud LoadBalancer's
//! `sticky-session.add-service-instance-cookie`, which adds
//! `<instance-id-cookie-name>=<chosen instance id>` to the request sent to
//! the chosen instance (SCLB's `LoadBalancerServiceInstanceCookieTransformer`
//! for `RestTemplate`/`RestClient`, `buildClientRequest` in
//! `ExchangeFilterFunctionUtils` for `WebClient`).
//!
//! Where this differs from SCLB: SCLB adds the pair next to whatever the
//! request carries, so a request that already has a pair of that name (a
//! caller's sticky cookie naming an instance that was not chosen) reaches
//! the instance with two; here the pair is replaced, so the instance sees
//! exactly one, naming itself. SCLB also sends an empty id as `name=`;
//! here an empty id, or one that is not a valid cookie value, adds
//! nothing, and a pair of that name the request carried is dropped (it
//! would name another instance).

use std::collections::HashMap;
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use crate::error::BuildError;
use crate::instance::Instance;
use crate::rule::sticky_session::instance_cookie;

/// The builder's instance cookie settings: the balancer-wide cookie name
/// and per-service overrides (keys in ASCII lower case).
#[derive(Debug, Clone, Default)]
pub(super) struct InstanceCookies {
    pub(super) default: Option<Arc<str>>,
    services: HashMap<String, Option<Arc<str>>>,
}

impl InstanceCookies {
    /// Overrides the cookie of `service_id` (`None`: off).
    pub(super) fn set(&mut self, service_id: String, name: Option<Arc<str>>) {
        self.services.insert(service_id.to_ascii_lowercase(), name);
    }

    /// The cookie name `service_id` adds, if any.
    pub(super) fn for_service(&self, service_id: &str) -> Option<Arc<str>> {
        let name = match self.services.get(&service_id.to_ascii_lowercase()) {
            Some(name) => name,
            None => &self.default,
        };
        name.clone()
    }

    /// Every name is an RFC 6265 cookie name (an HTTP token).
    pub(super) fn validate(&self) -> Result<(), BuildError> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let names = self.services.values().chain(std::iter::once(&self.default));
        match names
            .flatten()
            .find(|n| n.is_empty() || !n.bytes().all(token))
        {
            Some(bad) => Err(BuildError::invalid(
                "Builder::instance_cookie",
                format!("{bad:?} is not a cookie name (an RFC 6265 token)"),
            )),
            None => Ok(()),
        }
    }
}

/// Sets the pair `name=<instance id>` in `headers`: every `Cookie` field
/// is merged into one, any pair named `name` is dropped, the others are
/// kept in order, and the new pair goes last. `false` when
/// [`instance_cookie`] refuses the id or the name: then no pair is added,
/// and a pair named `name` the request carried is dropped all the same (it
/// names another instance than the one the request goes to; the rest of
/// the header is left as it was).
pub(super) fn set(headers: &mut HeaderMap, name: &str, instance: &Instance) -> bool {
    let pair = instance_cookie(name, instance);
    let added = pair.is_some();
    let mut fields = headers.get_all(COOKIE).iter().peekable();
    if fields.peek().is_none() {
        if let Some(pair) = pair {
            headers.insert(COOKIE, pair);
        }
        return added;
    }
    let named = |p: &[u8]| pair_name(p) == name.as_bytes();
    if pair.is_none()
        && !headers
            .get_all(COOKIE)
            .iter()
            .any(|f| f.as_bytes().split(|b| *b == b';').any(&named))
    {
        return false;
    }
    let mut sensitive = false;
    let mut out = Vec::new();
    for field in fields {
        sensitive |= field.is_sensitive();
        for kept in field
            .as_bytes()
            .split(|b| *b == b';')
            .map(<[u8]>::trim_ascii)
            .filter(|p| !p.is_empty() && !named(p))
        {
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(kept);
        }
    }
    if let Some(pair) = &pair {
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair.as_bytes());
    }
    if out.is_empty() {
        headers.remove(COOKIE);
        return added;
    }
    // The bytes of valid field values joined by "; ": always valid.
    let Ok(mut merged) = HeaderValue::from_bytes(&out) else {
        return false;
    };
    merged.set_sensitive(sensitive);
    headers.insert(COOKIE, merged);
    added
}

/// The name of one `name=value` pair (the whole pair if it has no `=`).
fn pair_name(pair: &[u8]) -> &[u8] {
    let name = match pair.iter().position(|b| *b == b'=') {
        Some(eq) => pair.get(..eq).unwrap_or(pair),
        None => pair,
    };
    name.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance::new("svc", "127.0.0.1", 1).unwrap().with_id(id)
    }

    fn cookies(h: &HeaderMap) -> Vec<&str> {
        h.get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn sets_replaces_and_keeps() {
        let mut h = HeaderMap::new();
        assert!(set(&mut h, "sc-lb-instance-id", &instance("a-1")));
        assert_eq!(cookies(&h), ["sc-lb-instance-id=a-1"]);
        // A retry to another instance: replaced, not appended.
        assert!(set(&mut h, "sc-lb-instance-id", &instance("b-2")));
        assert_eq!(cookies(&h), ["sc-lb-instance-id=b-2"]);
        // Other cookies kept in order, fields merged, duplicates dropped.
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("x=1; sc-lb-instance-id=old"),
        );
        h.append(
            COOKIE,
            HeaderValue::from_static(" y=2 ;;sc-lb-instance-id ; z"),
        );
        assert!(set(&mut h, "sc-lb-instance-id", &instance("a-1")));
        assert_eq!(cookies(&h), ["x=1; y=2; z; sc-lb-instance-id=a-1"]);
        // Case matters in cookie names.
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("SC-LB-INSTANCE-ID=u"));
        assert!(set(&mut h, "sc-lb-instance-id", &instance("a")));
        assert_eq!(cookies(&h), ["SC-LB-INSTANCE-ID=u; sc-lb-instance-id=a"]);
    }

    #[test]
    fn hostile_ids_leave_the_headers_alone() {
        for id in ["", "a; admin=1", "a,b", "a b", "\"a\"", "é", "a\r\nx: y"] {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, HeaderValue::from_static("x=1"));
            assert!(!set(&mut h, "sc-lb-instance-id", &instance(id)), "{id:?}");
            assert_eq!(cookies(&h), ["x=1"]);
            // A pair of that name naming another instance is dropped: the
            // request does not go there (found by an attack: a retry to an
            // instance whose id is not a cookie value kept the caller's
            // pair naming the first instance).
            let mut h = HeaderMap::new();
            h.insert(
                COOKIE,
                HeaderValue::from_static("x=1; sc-lb-instance-id=a-1"),
            );
            assert!(!set(&mut h, "sc-lb-instance-id", &instance(id)), "{id:?}");
            assert_eq!(cookies(&h), ["x=1"]);
            let mut h = HeaderMap::new();
            h.insert(COOKIE, HeaderValue::from_static("sc-lb-instance-id=a-1"));
            assert!(!set(&mut h, "sc-lb-instance-id", &instance(id)), "{id:?}");
            assert!(cookies(&h).is_empty());
        }
        let mut sensitive = HeaderValue::from_static("x=1");
        sensitive.set_sensitive(true);
        let mut h = HeaderMap::new();
        h.insert(COOKIE, sensitive);
        assert!(set(&mut h, "n", &instance("a")));
        assert!(h.get(COOKIE).unwrap().is_sensitive());
    }

    #[test]
    fn names_are_validated_and_looked_up_per_service() {
        let mut c = InstanceCookies::default();
        assert!(c.validate().is_ok());
        c.default = Some(Arc::from("sc-lb-instance-id"));
        c.set("Orders".to_owned(), None);
        c.set("users".to_owned(), Some(Arc::from("uid")));
        assert!(c.validate().is_ok());
        assert_eq!(c.for_service("ORDERS"), None);
        assert_eq!(c.for_service("users").as_deref(), Some("uid"));
        assert_eq!(c.for_service("other").as_deref(), Some("sc-lb-instance-id"));
        for bad in ["", "a;b", "a=b", "a b", "é"] {
            c.set("bad".to_owned(), Some(Arc::from(bad)));
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }
}
