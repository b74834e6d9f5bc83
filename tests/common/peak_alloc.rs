//! A global allocator that tracks live heap bytes and their peak, for the
//! memory-bound tests. Include it with
//! `#[path = "common/peak_alloc.rs"] mod peak_alloc;` and declare
//! `#[global_allocator] static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;`.
//! The counters are process-wide: serialize the measured sections.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The allocator: forwards to [`System`], tracking live bytes.
pub struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; `realloc` uses
// the default (alloc, copy, dealloc), so it is tracked by those two.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Starts a measurement: the peak is reset to the live bytes now, which
/// are returned as the base.
pub fn start() -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    base
}

/// Bytes the peak grew above `base` since [`start`].
pub fn grown(base: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

/// Bytes live now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes live at once since the last [`start`] or [`set_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Resets the peak to `bytes` (the live bytes, to measure from now).
pub fn set_peak(bytes: usize) {
    PEAK.store(bytes, Ordering::Relaxed);
}
