//! Log capture for test binaries whose tests run in parallel.
//!
//! tracing caches each callsite's interest process-wide. While no
//! thread-local (`set_default`) subscriber has ever existed, tracing-core
//! registers a callsite on its lock-free "just one dispatcher" path. A
//! callsite first hit then, with no subscriber anywhere, computes `never`
//! and can store it *after* another test's `set_default` and
//! `rebuild_interest_cache` have run: that test's subscriber then sees
//! nothing from the callsite. It happened once in CI (`config`, 0 of 3
//! warnings captured).
//!
//! [`init`] installs a global `Registry`, which is interested in every
//! callsite and records nothing, before any test of the binary logs, so no
//! callsite is ever cached as `never`. Every test of a binary that captures
//! logs calls it first; [`capture`] calls it too.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, Once};

/// Installs the global do-nothing `Registry` once per test binary.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Only this module installs a global subscriber in these binaries.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
}

/// Log lines written by a `fmt` subscriber, as bytes.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything logged so far, as text.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `fmt` subscriber at `level` (and above) writing into the returned
/// buffer, set as this thread's default until the guard drops. Only what
/// runs on this thread is captured: use a current-thread runtime.
pub fn capture(level: tracing::Level) -> (tracing::subscriber::DefaultGuard, Captured) {
    init();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    (guard, captured)
}
