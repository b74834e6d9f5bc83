//! Lost HTTP/2 streams counted once per connection's end.
//!
//! One closed connection fails every stream open on it, so its end counts
//! once against the instance however many streams it cut (a server's
//! `GOAWAY(ENHANCE_YOUR_CALM)` for one caller's oversized header cut ten
//! streams and ejected a healthy instance before). A stream's failure is
//! seen only when its caller reads it, which may be long after the
//! connection ended, so the connection is told by two rules:
//!
//! - **By identity**, when the response said which connection it came on
//!   (hyper-util's `HttpInfo`, the local and remote addresses, which its
//!   legacy client and reqwest put in every response's extensions): a
//!   lost stream counts unless a stream of the same connection counted
//!   already. The last [`REMEMBERED`] counted connections are kept per
//!   instance; an entry matches only a stream sent no later than it was
//!   counted, so a new connection reusing an old one's local port counts.
//! - **By time**, when it did not (an inner service giving no identity,
//!   tonic's channel; a stream cut before its response's headers): a
//!   stream sent no later than the last counted lost stream ended is taken
//!   for that connection's. A stream read late stands for its connection
//!   ending late: read after other connections ended, it is refused.
//!
//! The two meet once per end: a count by identity also stamps the time
//! rule (the same connection's streams cut before their headers are not
//! counted again), and a stream by identity sent before an end counted by
//! time, the first such, is taken for that end's connection and not
//! counted (the same `GOAWAY` cutting streams before and after their
//! headers counts once).
//!
//! Everything sits behind one lock, allocated at an instance's first lost
//! stream (a connection's end is rare; the request path never takes it),
//! so racing streams of one connection count exactly once.

use std::sync::{Mutex, OnceLock, PoisonError};

/// How many counted connections an instance remembers: a stream read
/// after this many other connections of its instance ended and counted
/// counts again (each of those is a real connection's end).
pub(crate) const REMEMBERED: usize = 8;

/// The lost-stream memory of one instance (16 bytes until its first lost
/// stream, then 8 + 16 × [`REMEMBERED`] + a few on the heap).
pub(crate) struct LostStreams(OnceLock<Box<Mutex<Memory>>>);

#[derive(Default)]
struct Memory {
    /// When the last counted lost stream ended (µs + 1; 0: never).
    last_us: u64,
    /// When the last end counted by time was counted, while no stream
    /// with an identity has been taken for its connection (µs + 1; 0:
    /// none).
    unclaimed_us: u64,
    /// `(connection, counted at µs + 1)`; 0: empty.
    recent: [(u64, u64); REMEMBERED],
    /// The slot the next counted connection takes.
    next: usize,
}

impl LostStreams {
    pub(crate) const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// Whether a lost stream sent at `sent_us`, read failed at `now_us`
    /// (µs + 1), on `connection` (its identity, if known) counts: see the
    /// module doc.
    pub(crate) fn count(&self, connection: Option<u64>, sent_us: u64, now_us: u64) -> bool {
        let memory = self.0.get_or_init(Box::default);
        let mut m = memory.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(id) = connection else {
            if sent_us <= m.last_us {
                return false;
            }
            m.last_us = m.last_us.max(now_us);
            m.unclaimed_us = now_us;
            return true;
        };
        let seen = |&(c, at): &(u64, u64)| c == id && sent_us <= at;
        if m.recent.iter().any(seen) {
            return false;
        }
        let next = m.next;
        m.recent[next] = (id, now_us);
        m.next = (next + 1) % REMEMBERED;
        // The first stream by identity of a connection whose end counted
        // by time: that end.
        let claims = m.unclaimed_us != 0 && sent_us <= m.unclaimed_us;
        if claims {
            m.unclaimed_us = 0;
        }
        m.last_us = m.last_us.max(now_us);
        !claims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_counts_once_however_late_it_is_read() {
        let lost = LostStreams::new();
        // Five connections (1..=5), one stream each sent 100 ms apart, all
        // read after the last ended (at 1 s): each its own end. By time
        // alone only the first counted (helper 248).
        let counted: Vec<bool> = (1..=5u64)
            .map(|c| lost.count(Some(c), c * 100_000, 1_000_000 + c))
            .collect();
        assert_eq!(counted, [true; 5]);
        // Another stream of connection 3, read later still: counted.
        assert!(!lost.count(Some(3), 250_000, 2_000_000));
        // A stream cut before its headers (no identity) sent before the
        // last count: one of those ends.
        assert!(!lost.count(None, 450_000, 2_000_100));
        // Port 3 reused by a connection opened after its end counted.
        assert!(lost.count(Some(3), 1_500_000, 2_000_200));
    }

    #[test]
    fn an_end_counted_by_time_is_claimed_once_by_identity() {
        let lost = LostStreams::new();
        // One GOAWAY cuts a stream before its headers (counted by time at
        // 10 ms) and one after (read at 50 ms): one end.
        assert!(lost.count(None, 5_000, 10_000));
        assert!(!lost.count(Some(7), 4_000, 50_000));
        // Another connection's stream sent before it: that end is claimed.
        assert!(lost.count(Some(8), 6_000, 60_000));
        // A stream by time sent after the last end counts.
        assert!(lost.count(None, 70_000, 80_000));
        // A later connection's stream, sent after that end: counts.
        assert!(lost.count(Some(9), 90_000, 95_000));
    }

    #[test]
    fn the_last_remembered_connections_are_kept() {
        let lost = LostStreams::new();
        let ids = 1..=REMEMBERED as u64 + 1;
        assert!(ids.clone().all(|c| lost.count(Some(c), c, 1_000 + c)));
        // Connection 1 was forgotten (nine ends later): its stream counts
        // again; 2..=9 are still known.
        assert!((2..=REMEMBERED as u64 + 1).all(|c| !lost.count(Some(c), 0, 5_000)));
        assert!(lost.count(Some(1), 0, 5_000));
    }

    #[test]
    fn of_racing_streams_of_one_connection_exactly_one_counts() {
        for round in 0..50u64 {
            let lost = LostStreams::new();
            let counted: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8u64)
                    .map(|i| {
                        let lost = &lost;
                        // Two connections (1 and 2), four streams each.
                        s.spawn(move || {
                            usize::from(lost.count(Some(i % 2 + 1), round + i, 10_000 + i))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(counted, 2, "round {round}");
        }
    }
}
