//! Counting heap allocations, to hold a hot path to its allocation budget in a test.
//!
//! Install [`CountingAllocator`] as the test binary's global allocator, then read
//! [`allocations`] before and after the code under test. The count is per thread, so
//! other tests running at the same time do not disturb it; a count, not a timing, so
//! the assertion is exact.
//!
//! ```
//! use cano_testing::alloc::{CountingAllocator, allocations};
//!
//! #[global_allocator]
//! static GLOBAL: CountingAllocator = CountingAllocator;
//!
//! let before = allocations();
//! let boxed = Box::new(7);
//! assert_eq!(allocations() - before, 1);
//! # drop(boxed);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting the allocations each thread makes (see
/// [`allocations`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

#[allow(unsafe_code)]
// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // (`try_with`: the count is gone while the thread exits; that allocation is
        // simply not counted.)
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// How many allocations the calling thread has made so far, when
/// [`CountingAllocator`] is the global allocator (always 0 otherwise).
pub fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}
