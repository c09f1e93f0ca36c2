//! The module's memory allocator: size classes with free lists in front of the system
//! allocator (dlmalloc in wasm32-wasip1).
//!
//! A request allocates and frees a few dozen small blocks (attribute strings, the header list,
//! the log line), and every property the host hands over is a block allocated through
//! `proxy_on_memory_allocate`. Popping and pushing a free list costs a few instructions where
//! dlmalloc's bins cost tens of nanoseconds each way; on the request path that is a measurable
//! share (docs/BENCHMARKS.md).
//!
//! Blocks up to [`MAX_CLASS`] bytes are rounded up to a power of two (at least 16) and, once
//! freed, kept on their class's list for reuse: the memory held is the peak number of live
//! blocks of each class, never more, so it does not grow with traffic. Larger blocks and
//! alignments above 16 go to the system allocator directly.
//!
//! The module runs on one thread (wasm32-wasip1 has no threads, one VM per Envoy worker), so
//! the lists need no lock.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// Largest block size served from a class list.
pub const MAX_CLASS: usize = 4096;
/// Classes: 16, 32, ..., 4096 bytes.
const CLASSES: usize = 9;
const MIN_CLASS_SHIFT: u32 = 4;
const ALIGN: usize = 16;

/// Free lists by size class in front of `A`.
pub struct SizeClasses<A> {
    inner: A,
    /// Address of the first free block of each class (0: empty); each free block starts with
    /// the address of the next.
    heads: [Cell<usize>; CLASSES],
}

// SAFETY: only where the module runs, single-threaded (see the module documentation); the
// lists have no lock, so natively (tests use an instance per test) the type is not `Sync`.
#[cfg(target_arch = "wasm32")]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

impl<A> SizeClasses<A> {
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            heads: [const { Cell::new(0) }; CLASSES],
        }
    }
}

/// The class of a block of `layout`, `None` when it is served by the system allocator.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > ALIGN || layout.size() > MAX_CLASS {
        return None;
    }
    let size = layout.size().max(1 << MIN_CLASS_SHIFT);
    // ceil(log2(size)) - 4
    let bits = usize::BITS - (size - 1).leading_zeros();
    Some(bits.saturating_sub(MIN_CLASS_SHIFT) as usize)
}

fn class_layout(class: usize) -> Option<Layout> {
    Layout::from_size_align((1usize << MIN_CLASS_SHIFT) << class, ALIGN).ok()
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((class, head)) = class_of(layout).and_then(|c| Some((c, self.heads.get(c)?)))
        else {
            // SAFETY: the caller's layout contract is passed on unchanged.
            return unsafe { self.inner.alloc(layout) };
        };
        let block = head.get();
        if block != 0 {
            // SAFETY: `block` is a free block of this class; its first word holds the next.
            head.set(unsafe { (block as *const usize).read() });
            return block as *mut u8;
        }
        match class_layout(class) {
            // SAFETY: a non-zero size with a valid alignment.
            Some(full) => unsafe { self.inner.alloc(full) },
            None => std::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout).and_then(|c| self.heads.get(c)) {
            Some(head) => {
                // SAFETY: `ptr` is a block of this class (at least 16 bytes, 16-aligned) that
                // the caller gives up; its first word now links the list.
                unsafe { (ptr as *mut usize).write(head.get()) };
                head.set(ptr as usize);
            }
            // SAFETY: allocated by `inner` with this very layout.
            None => unsafe { self.inner.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        match (class_of(layout), class_of(new_layout)) {
            // Still fits its block.
            (Some(old), Some(new)) if old == new => ptr,
            (None, None) => {
                // SAFETY: allocated by `inner` with `layout`; the contract is passed on.
                unsafe { self.inner.realloc(ptr, layout, new_size) }
            }
            _ => {
                // SAFETY: standard move to a new block, as `GlobalAlloc::realloc` describes.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn classes() {
        let class = |size, align| class_of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(0, 1), Some(0));
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 1), Some(1));
        assert_eq!(class(32, 1), Some(1));
        assert_eq!(class(33, 1), Some(2));
        assert_eq!(class(4096, 1), Some(8));
        assert_eq!(class(4097, 1), None);
        assert_eq!(class(8, 32), None);
    }

    #[test]
    fn reuses_freed_blocks_and_keeps_contents_on_realloc() {
        let heap = SizeClasses::new(System);
        let small = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: every pointer below is used within its layout and freed once.
        unsafe {
            let a = heap.alloc(small);
            let b = heap.alloc(small);
            assert!(!a.is_null() && !b.is_null() && a != b);
            assert_eq!(a as usize % 16, 0);
            heap.dealloc(a, small);
            // Last freed, first reused, for any size of the class.
            let c = heap.alloc(Layout::from_size_align(30, 1).unwrap());
            assert_eq!(c, a);
            for i in 0..30 {
                c.add(i).write(i as u8);
            }
            // Same class: same block. Next class: moved with its bytes.
            let c = heap.realloc(c, Layout::from_size_align(30, 1).unwrap(), 32);
            assert_eq!(c, a);
            let d = heap.realloc(c, Layout::from_size_align(32, 1).unwrap(), 5000);
            assert_ne!(d, a);
            for i in 0..30 {
                assert_eq!(d.add(i).read(), i as u8);
            }
            let e = heap.realloc(d, Layout::from_size_align(5000, 1).unwrap(), 6000);
            for i in 0..30 {
                assert_eq!(e.add(i).read(), i as u8);
            }
            heap.dealloc(e, Layout::from_size_align(6000, 1).unwrap());
            heap.dealloc(b, small);
            // Many blocks of one class, freed and taken again: the same set comes back.
            let mut blocks: Vec<*mut u8> = (0..100).map(|_| heap.alloc(small)).collect();
            for &p in &blocks {
                heap.dealloc(p, small);
            }
            let mut again: Vec<*mut u8> = (0..100).map(|_| heap.alloc(small)).collect();
            blocks.sort();
            again.sort();
            assert_eq!(blocks, again);
            for &p in &again {
                heap.dealloc(p, small);
            }
        }
    }
}
