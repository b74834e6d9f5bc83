//! [`HashKey`]: where key-routing rules get a request's key.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Uri};

type Extract = dyn Fn(&Uri, &HeaderMap) -> Option<u64> + Send + Sync;

/// Extracts the routing key of a request for rules such as
/// [`ConsistentHash`](crate::rule::ConsistentHash) (sticky routing by user,
/// session, tenant, ...).
///
/// ```
/// use tower_ribbon::service::HashKey;
///
/// let by_user = HashKey::header(http::HeaderName::from_static("x-user-id"));
/// let by_path = HashKey::from_fn(|uri, _headers| Some(uri.path().len() as u64));
/// # let _ = (by_user, by_path);
/// ```
#[derive(Clone)]
pub struct HashKey {
    extract: Arc<Extract>,
    name: String,
}

impl HashKey {
    /// The value of header `name` (first occurrence), hashed with FNV-1a
    /// 64 so every client maps the same value to the same key. Requests
    /// without the header have no key.
    pub fn header(name: HeaderName) -> Self {
        let label = format!("header {name}");
        Self {
            extract: Arc::new(move |_uri: &Uri, headers: &HeaderMap| {
                headers
                    .get(&name)
                    .map(|v| crate::hash::fnv1a64(v.as_bytes().iter().copied()))
            }),
            name: label,
        }
    }

    /// A key computed by `f` from the request URI (before rewriting) and
    /// headers; `None` means "no key" for that request.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&Uri, &HeaderMap) -> Option<u64> + Send + Sync + 'static,
    {
        Self {
            extract: Arc::new(f),
            name: "custom".to_owned(),
        }
    }

    /// The key of a request, if it has one.
    pub fn extract(&self, uri: &Uri, headers: &HeaderMap) -> Option<u64> {
        (self.extract)(uri, headers)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HashKey").field(&self.name).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_are_stable() {
        let key = HashKey::header(HeaderName::from_static("x-user-id"));
        let mut headers = HeaderMap::new();
        let uri = Uri::from_static("http://svc/");
        assert_eq!(key.extract(&uri, &headers), None);
        headers.insert("x-user-id", http::HeaderValue::from_static("foobar"));
        assert_eq!(key.extract(&uri, &headers), Some(0x8594_4171_f739_67e8));
    }
}
