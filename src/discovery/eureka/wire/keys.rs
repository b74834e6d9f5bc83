//! The metadata keys of one payload: shared across its records, and
//! counted against its metadata budget.

use std::sync::Arc;

/// Metadata keys shared across a payload's records (a Spring payload
/// repeats the same few keys on every instance): the first [`Keys::MAX`]
/// distinct ones are kept, later ones are copied. It also counts the
/// payload's metadata entries against
/// [`ParseOptions::max_metadata_entries`](super::ParseOptions::max_metadata_entries).
#[derive(Debug)]
pub(super) struct Keys {
    shared: Vec<Arc<str>>,
    /// Entries kept so far in this payload.
    kept: usize,
    limit: usize,
}

impl Keys {
    const MAX: usize = 64;

    /// For a payload that may keep `limit` metadata entries.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            shared: Vec::new(),
            kept: 0,
            limit,
        }
    }

    /// Whether the payload went over its metadata budget.
    pub(super) fn over_budget(&self) -> bool {
        self.kept > self.limit
    }

    /// Counts `n` entries kept; `false` once the payload is over budget.
    pub(super) fn charge(&mut self, n: usize) -> bool {
        self.kept = self.kept.saturating_add(n);
        !self.over_budget()
    }

    pub(super) fn get(&mut self, key: &str) -> Arc<str> {
        if let Some(shared) = self.shared.iter().find(|k| ***k == *key) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(key);
        if self.shared.len() < Self::MAX {
            self.shared.push(Arc::clone(&shared));
        }
        shared
    }
}
