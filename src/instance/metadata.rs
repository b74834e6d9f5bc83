//! An instance's metadata: a small map from key to value, sorted by key.

use std::fmt;
use std::ops::Index;
use std::sync::Arc;

/// An instance's metadata (Eureka's `metadata`, DNS facts such as
/// `dns.priority`): keys to values, sorted by key, each key once.
///
/// Read like a `BTreeMap` of strings ([`get`](Metadata::get),
/// [`contains_key`](Metadata::contains_key), `metadata["key"]`,
/// [`iter`](Metadata::iter), [`keys`](Metadata::keys)), but held as one
/// sorted list: a registry payload carries a handful of entries per
/// instance, and a list costs one allocation where a B-tree node costs a
/// half-kilobyte one plus rebalancing (the decode of 10 000 Eureka
/// instances spent a tenth of its time in `BTreeMap` inserts). Lookups are
/// a binary search. Keys are shared `Arc<str>`s, so the instances of one
/// registry payload, which repeat the same keys, hold each key once.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// Sorted by key, keys unique.
    entries: Vec<(Arc<str>, String)>,
}

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// From entries in any order; of repeated keys the last one wins (as
    /// inserting them one by one into a map would).
    pub(crate) fn from_unsorted(mut entries: Vec<(Arc<str>, String)>) -> Self {
        // Reversed, a stable sort puts the last of each key first, and
        // `dedup_by` keeps the first of a run.
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, first| later.0 == first.0);
        // No slack: a record that repeated one key 256 times keeps one
        // entry, not room for 256 (10 KB per instance).
        entries.shrink_to_fit();
        Self { entries }
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// Sets `key` to `value`, replacing an earlier value; returns it.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) -> Option<String> {
        let key = key.as_ref();
        let value = value.into();
        match self.position(key) {
            Ok(i) => self
                .entries
                .get_mut(i)
                .map(|(_, v)| std::mem::replace(v, value)),
            Err(i) => {
                self.entries.insert(i, (Arc::from(key), value));
                None
            }
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&String> {
        let i = self.position(key).ok()?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &String)> + DoubleEndedIterator {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator {
        self.entries.iter().map(|(k, _)| &**k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &String> + DoubleEndedIterator {
        self.entries.iter().map(|(_, v)| v)
    }
}

/// `metadata["key"]`, as on a `BTreeMap`.
///
/// # Panics
/// If `key` is absent (use [`Metadata::get`] to check).
impl Index<&str> for Metadata {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no metadata entry {key:?}"),
        }
    }
}

impl<K: Into<Arc<str>>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_unsorted(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Keys (each cut to 128 bytes) with values hidden as `<redacted>`:
/// registries carry secrets in metadata in some setups (tokens, passwords
/// of management endpoints), and a `Debug` line ends up in logs. Read a
/// value with [`Metadata::get`].
impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.keys()
                    .map(|k| (crate::error::DebugCut(k), format_args!("<redacted>"))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Metadata;

    #[test]
    fn sorted_unique_last_wins() {
        let m = Metadata::from_unsorted(vec![
            ("zone".into(), "a".into()),
            ("b".into(), "1".into()),
            ("zone".into(), "c".into()),
        ]);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "zone"]);
        assert_eq!(m["zone"], "c");
        assert_eq!(m.get("x"), None);
        let mut m2 = Metadata::new();
        assert_eq!(m2.insert("zone", "a"), None);
        assert_eq!(m2.insert("b", "1"), None);
        assert_eq!(m2.insert("zone", "c"), Some("a".into()));
        assert_eq!(m, m2);
        assert!(m2.contains_key("b") && !m2.contains_key("c"));
        assert_eq!(format!("{m:?}"), r#"{"b": <redacted>, "zone": <redacted>}"#);
    }

    /// `Debug` of a registry's metadata and of an instance shows no
    /// metadata value and stays short whatever the registry sent. Before,
    /// `format!("{:?}", instance.metadata())` showed every value (a
    /// `management.password`) and was 1 048 618 bytes with a 1 MiB key;
    /// an instance with a 1 MiB metadata key, zone (escaped to 3.5 MiB)
    /// and service id and an 8 KiB id gave 5 777 572 bytes of `Debug`.
    /// Now 182 and 1 093.
    #[test]
    fn debug_hides_values_and_cuts_registry_text() {
        let long = "k".repeat(1 << 20);
        let m: Metadata = [("management.password", "S3cret"), (long.as_str(), "v")]
            .into_iter()
            .collect();
        let text = format!("{m:?}");
        assert!(!text.contains("S3cret"), "{text}");
        assert_eq!(text.len(), 182, "{}", &text[..200.min(text.len())]);
        let instance = crate::Instance::new("s".repeat(1 << 20), "10.0.0.1", 80)
            .unwrap()
            .with_id("i\r\n".repeat(2048))
            .with_zone("z\u{1b}".repeat(1 << 19))
            .with_metadata(long.as_str(), "S3cret")
            .with_metadata("token", "S3cret");
        let debug = format!("{instance:?}");
        assert!(!debug.contains("S3cret") && !debug.chars().any(char::is_control));
        assert_eq!(debug.len(), 1093, "{}", &debug[..300]);
    }
}
