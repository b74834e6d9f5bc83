//! A counting global allocator for the allocation tests: wraps the system
//! allocator and counts allocations (`alloc`, `alloc_zeroed`, `realloc`)
//! per thread, so the harness's other test threads do not disturb a
//! measurement. Include it with
//! `#[path = "common/counting_alloc.rs"] mod counting_alloc;` and declare
//! `#[global_allocator] static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The allocator: forwards to [`System`], counting per thread.
pub struct Counting;

thread_local! {
    /// Allocations made by this thread. Const-initialised `Cell<u64>`: no
    /// lazy initialisation and no destructor, so touching it never allocates.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn bump() {
    // `try_with`: never panic inside the allocator, even during teardown.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations this thread has made so far.
pub fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}
