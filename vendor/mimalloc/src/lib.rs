// Copyright 2019 Octavian Oncescu

#![no_std]

//! A drop-in global allocator wrapper around the [mimalloc](https://github.com/microsoft/mimalloc) allocator.
//! Mimalloc is a general purpose, performance oriented allocator built by Microsoft.
//!
//! ## Usage
//! ```rust,ignore
//! use mimalloc::MiMalloc;
//!
//! #[global_allocator]
//! static GLOBAL: MiMalloc = MiMalloc;
//! ```
//!
//! ## Usage with secure mode
//! Using secure mode adds guard pages,
//! randomized allocation, encrypted free lists, etc. The performance penalty is usually
//! around 10% according to [mimalloc's](https://github.com/microsoft/mimalloc)
//! own benchmarks.
//!
//! To enable secure mode, put in `Cargo.toml`:
//! ```toml
//! [dependencies]
//! mimalloc = { version = "*", features = ["secure"] }
//! ```

extern crate libmimalloc_sys as ffi;

#[cfg(feature = "extended")]
mod extended;

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use ffi::*;

/// Drop-in mimalloc global allocator.
///
/// ## Usage
/// ```rust,ignore
/// use mimalloc::MiMalloc;
///
/// #[global_allocator]
/// static GLOBAL: MiMalloc = MiMalloc;
/// ```
pub struct MiMalloc;

// colorgate patch 16: plain `mi_malloc` when its own alignment suffices.
// Every mimalloc block is a multiple of `MIN_ALIGN` bytes from a
// `MIN_ALIGN`-aligned page start (blocks of 8 bytes or less excepted, which
// `align <= size` covers), as `std`'s `System` allocator assumes of malloc.
// The `mi_*_aligned` calls cost more on every allocation, and in mimalloc v3
// any block over 1 KiB whose size is not a power of two (a `HeaderMap`'s
// entries, a body buffer) went through its over-allocating path, which also
// made the page's frees slower.
#[cfg(target_pointer_width = "64")]
const MIN_ALIGN: usize = 16;
#[cfg(not(target_pointer_width = "64"))]
const MIN_ALIGN: usize = 8;

/// Whether `mi_malloc` (and `mi_zalloc`, `mi_realloc`) of `size` bytes is
/// aligned enough for `align`.
#[inline]
fn plain_alignment_fits(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_alignment_fits(layout.size(), layout.align()) {
            mi_malloc(layout.size()) as *mut u8
        } else {
            mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_alignment_fits(layout.size(), layout.align()) {
            mi_zalloc(layout.size()) as *mut u8
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_alignment_fits(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_frees_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 16);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 2 << 20);
            alloc.dealloc(ptr, layout);
        }
    }

    // colorgate patch 16: whichever call serves it, every block is aligned
    // as asked, holds its size, and keeps its bytes when grown and shrunk.
    #[test]
    fn every_size_and_alignment_comes_back_aligned() {
        let alloc = MiMalloc;
        let aligned = |p: *mut u8, align: usize| !p.is_null() && (p as usize).is_multiple_of(align);
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=160).chain([1000, 1024, 1025, 1600, 4096, 4100, 70_000]) {
                for zeroed in [false, true] {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    unsafe {
                        let p = if zeroed {
                            alloc.alloc_zeroed(layout)
                        } else {
                            alloc.alloc(layout)
                        };
                        assert!(aligned(p, align), "size {} align {}", size, align);
                        if zeroed {
                            assert!(core::slice::from_raw_parts(p, size).iter().all(|b| *b == 0));
                        }
                        core::ptr::write_bytes(p, 0xa5, size);
                        // Grow, then shrink below the original size.
                        let grown = alloc.realloc(p, layout, size * 3);
                        assert!(aligned(grown, align), "grow {} align {}", size, align);
                        let grown_layout = Layout::from_size_align(size * 3, align).unwrap();
                        let small = size / 2 + 1;
                        let shrunk = alloc.realloc(grown, grown_layout, small);
                        assert!(aligned(shrunk, align), "shrink {} align {}", size, align);
                        let kept = core::slice::from_raw_parts(shrunk, small);
                        assert!(kept.iter().all(|b| *b == 0xa5));
                        alloc.dealloc(shrunk, Layout::from_size_align(small, align).unwrap());
                    }
                }
            }
        }
    }
}
