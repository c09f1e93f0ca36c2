//! How the process's allocator (mimalloc, set in `main.rs`) gives memory back. Part of the
//! binary, not the library: the library has no `unsafe` code, and this calls mimalloc's C API.
//!
//! By default mimalloc (v3) commits its arenas eagerly and purges freed pages a second after
//! they are freed. The scans free what they read as they go (each page of pods once judged,
//! each file once read), and with those defaults the freed pages stay resident long enough to
//! add up: a live scan of 50,000 pods peaked at 151-175 MiB, a file scan of 100,000 pods at
//! 239-273 MB. With arenas committed on demand and freed pages purged at once they peak at
//! 136-137 MiB and 179-181 MB, in about the same time (docs/BENCHMARKS.md). The options take
//! effect for arenas created after they are set, so `main.rs` sets them before the first
//! allocation.

use std::os::raw::{c_int, c_long};

// Linked through the `mimalloc` dependency (libmimalloc-sys builds mimalloc v3).
extern "C" {
    #[cfg(all(test, target_os = "linux"))]
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e` (default 2: eager on
/// overcommitting systems such as Linux). The numbers are the same in mimalloc v2.
const ARENA_EAGER_COMMIT: c_int = 4;
/// `mi_option_purge_delay` (default 1,000 ms in v3; 0 purges at once).
const PURGE_DELAY: c_int = 15;

/// Arenas committed as they are used, and freed memory purged at once.
pub fn return_freed_memory_at_once() {
    // SAFETY: setting an option is always allowed; unknown values are ignored by mimalloc.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

// On Linux the options are set before the first allocation (see `main.rs`).
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn option(n: c_int) -> c_long {
        // SAFETY: reading an option has no precondition.
        unsafe { mi_option_get(n) }
    }

    #[test]
    fn the_options_are_in_force_from_the_start_and_are_the_ones_meant() {
        // The test binary is this binary: `main.rs` set them before its first allocation.
        assert_eq!((option(ARENA_EAGER_COMMIT), option(PURGE_DELAY)), (0, 0));
        // Their neighbours in mimalloc's `mi_option_e` keep their defaults (options.c): were
        // the numbers off by one, one of these would be 0 or the two above would not be.
        for (n, default) in [(3, 1), (5, 1), (14, 1), (16, 0), (18, 100), (19, 32)] {
            assert_eq!(option(n), default, "option {n}");
        }
    }
}
