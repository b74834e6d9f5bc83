//! Which server gave a fetch's answer, asking one given server, and a
//! client whose fetches start at a server of their own: what the registry
//! needs to tell a failover answer from its preferred server's (see
//! `registry::failover`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{EurekaHttp, Fetched, WireError};
use crate::error::DiscoveryError;

/// The server whose answer a fetch took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answered {
    /// Its index in the configured list.
    pub(crate) server: usize,
    /// Whether a server asked before it in the same fetch failed (a
    /// transport error, a timeout, a status other than 200, a body that
    /// did not decode, or a 404 where an answer was required) or answered
    /// listing nothing where the fetch's `lists_nothing` says so (for the
    /// full registry, an empty one: a peer restarted and not refilled yet,
    /// which says nothing about the apps the copy holds; attack 64a,
    /// finding 3). Deltas never list nothing in that sense.
    pub(crate) after_failure: bool,
    /// Whether an earlier server listed nothing (restarted empty; only
    /// for `GET /apps`): its later answers, refilling, prove no absence.
    pub(crate) after_empty: bool,
}

impl EurekaHttp {
    /// [`get_answered`](Self::get_answered) without saying which server
    /// answered.
    pub(crate) async fn get<T, F>(
        &self,
        path: &str,
        accept_not_found: bool,
        lists_nothing: fn(&T) -> bool,
        decode: F,
    ) -> Result<Fetched<T>, DiscoveryError>
    where
        T: Send + 'static,
        F: Fn(&[u8], std::time::Instant) -> Result<T, WireError> + Clone + Send + 'static,
    {
        let answer = self.get_answered(path, accept_not_found, lists_nothing, decode);
        answer.await.map(|(fetched, _)| fetched)
    }

    /// `GET {base}/{path}` at the configured server of index `server`
    /// only (no failover, no retry), within one request timeout;
    /// [`DiscoveryError::AllServersFailed`] (empty) for an index past the
    /// list.
    pub(crate) async fn get_from<T, F>(
        &self,
        server: usize,
        path: &str,
        decode: F,
    ) -> Result<Fetched<T>, DiscoveryError>
    where
        T: Send + 'static,
        F: Fn(&[u8], std::time::Instant) -> Result<T, WireError> + Send + 'static,
    {
        match self.servers.get(server) {
            Some(at) => self.get_one(at, path, self.deadline(), decode).await,
            None => Err(DiscoveryError::AllServersFailed(Vec::new())),
        }
    }

    /// A clone whose fetches start at a server of their own, the one this
    /// client's fetches start at now, and move it themselves (clones of the
    /// clone share it). A registry's VIP source is one: the registry tells
    /// a failover from a failure inside its own fetch, so another
    /// consumer's fetch must not move where the registry's start (a VIP
    /// fetch failing over first made the registry's next fetch start at a
    /// partly refilled peer with no failure of its own, whose answer was
    /// then the truth; attack 64a, finding 1). Cost: when a server
    /// fails, each consumer's next fetch asks it once (up to one request
    /// timeout) before moving on.
    pub(crate) fn own_cursor(&self) -> Self {
        let at = self.preferred.load(Ordering::Relaxed);
        Self {
            preferred: Arc::new(AtomicUsize::new(at)),
            ..self.clone()
        }
    }

    /// How long an absence beside a failed server is held (the builders'
    /// `absence_hold`).
    pub(crate) fn absence_hold(&self) -> std::time::Duration {
        self.settings.absence_hold
    }
}
