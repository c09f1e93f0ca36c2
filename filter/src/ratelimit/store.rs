//! The compare-and-swap store that holds bucket state: proxy-wasm shared data, or memory in tests.

use std::collections::HashMap;
use std::sync::Mutex;

/// A conditional write lost a race: the key's CAS no longer matches the one that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shared data CAS mismatch")]
pub struct CasMismatch;

/// A key-value store with the exact semantics of proxy-wasm shared data in Envoy
/// (proxy-wasm-cpp-host `SharedData`):
///
/// - `get` returns the value and its CAS, or `None` when the key is absent.
/// - `set` with `cas == 0` writes unconditionally.
/// - `set` on an existing key with a non-zero `cas` that differs from the stored one fails with
///   [`CasMismatch`]; otherwise the value is stored and gets a fresh CAS.
/// - `set` on an absent key stores the value whatever `cas` is.
///
/// The proxy-wasm layer implements this over `get_shared_data`/`set_shared_data`. It may map any
/// host failure of `set` to [`CasMismatch`] and any failure of `get` to `None`: the limiter then
/// retries and finally denies (see `limiter`), so a failing host never lets traffic through.
pub trait CasStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch>;
}

impl<T: CasStore + ?Sized> CasStore for &T {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        (**self).set(key, value, cas)
    }
}

impl<T: CasStore + ?Sized> CasStore for std::sync::Arc<T> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        (**self).set(key, value, cas)
    }
}

/// In-memory [`CasStore`] following Envoy's shared data: one CAS counter for the whole store,
/// starting at 1, incremented on every successful `set`, skipping 0 on wrap-around.
/// Thread-safe, so one `Arc<MemoryStore>` can stand for the shared data seen by many workers.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<MemoryStoreInner>,
}

#[derive(Debug)]
struct MemoryStoreInner {
    next_cas: u32,
    entries: HashMap<String, (Vec<u8>, u32)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_next_cas(1)
    }

    /// A store whose CAS counter starts at `next_cas` (tests of wrap-around start near `u32::MAX`).
    pub fn with_next_cas(next_cas: u32) -> Self {
        MemoryStore {
            inner: Mutex::new(MemoryStoreInner {
                next_cas: next_cas.max(1),
                entries: HashMap::new(),
            }),
        }
    }

    /// Number of keys held (the key cap tests count them).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().entries.keys().cloned().collect();
        keys.sort();
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryStoreInner> {
        // A poisoned lock only means another test thread panicked; the map itself is consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CasStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock().entries.get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let mut inner = self.lock();
        if let Some((_, stored)) = inner.entries.get(key) {
            if cas != 0 && cas != *stored {
                return Err(CasMismatch);
            }
        }
        let new_cas = inner.next_cas;
        inner.next_cas = match new_cas.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        inner
            .entries
            .insert(key.to_owned(), (value.to_vec(), new_cas));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_counter_starts_at_one_and_increments_per_set() {
        let store = MemoryStore::new();
        assert_eq!(store.get("a"), None);
        store.set("a", b"1", 0).unwrap();
        assert_eq!(store.get("a"), Some((b"1".to_vec(), 1)));
        store.set("b", b"2", 0).unwrap();
        assert_eq!(store.get("b"), Some((b"2".to_vec(), 2)));
        store.set("a", b"3", 1).unwrap();
        assert_eq!(store.get("a"), Some((b"3".to_vec(), 3)));
    }

    #[test]
    fn stale_cas_is_refused_and_zero_is_unconditional() {
        let store = MemoryStore::new();
        store.set("k", b"x", 0).unwrap();
        store.set("k", b"y", 0).unwrap(); // cas now 2
        assert_eq!(store.set("k", b"z", 1), Err(CasMismatch));
        assert_eq!(store.get("k"), Some((b"y".to_vec(), 2)));
        store.set("k", b"z", 0).unwrap();
        assert_eq!(store.get("k"), Some((b"z".to_vec(), 3)));
    }

    #[test]
    fn absent_key_is_stored_whatever_the_cas() {
        let store = MemoryStore::new();
        store.set("new", b"v", 12345).unwrap();
        assert_eq!(store.get("new"), Some((b"v".to_vec(), 1)));
    }

    #[test]
    fn cas_counter_skips_zero_on_wrap() {
        let store = MemoryStore::with_next_cas(u32::MAX);
        store.set("a", b"", 0).unwrap();
        store.set("b", b"", 0).unwrap();
        assert_eq!(store.get("a").map(|v| v.1), Some(u32::MAX));
        assert_eq!(store.get("b").map(|v| v.1), Some(1));
    }
}
