//! Matchers compiled once at configuration time and consulted per request.
//!
//! The Istio string-match forms (exact, `prefix*`, `*suffix`, `*`) are parsed in [`string`] and
//! reused by every field: principals, namespaces, methods, header values, hosts, SNI and paths.

pub mod cidr;
pub mod host;
pub mod path;
pub mod port;
pub mod string;

pub use cidr::{CidrSet, IpBlock};
pub use host::{HostMatcher, HostPattern, HostTable};
pub use path::{PathMatcher, PathPattern};
pub use port::{parse_port, PortSet};
pub use string::{StringMatcher, StringPattern};

use std::collections::{HashMap, HashSet};

/// Tables are keyed by configuration values, never grown by requests, so a fixed seed is safe and
/// keeps the module free of a random-number import.
pub type FixedState = foldhash::fast::FixedState;
pub type FastMap<K, V> = HashMap<K, V, FixedState>;
pub type FastSet<K> = HashSet<K, FixedState>;

const HASH_SEED: u64 = 0x6567_7265_7373_2d67; // "egress-g"

pub fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(FixedState::with_seed(HASH_SEED))
}

pub fn fast_set<K>() -> FastSet<K> {
    HashSet::with_hasher(FixedState::with_seed(HASH_SEED))
}

/// Affixes (prefixes or suffixes) grouped by length: a lookup costs one hash probe per distinct
/// affix length, whatever the number of affixes.
#[derive(Debug, Clone)]
pub(crate) struct AffixMap<V> {
    entries: FastMap<Box<str>, Vec<V>>,
    /// Distinct lengths of the entries, ascending.
    lengths: Vec<usize>,
}

impl<V> Default for AffixMap<V> {
    fn default() -> Self {
        Self {
            entries: fast_map(),
            lengths: Vec::new(),
        }
    }
}

impl<V> AffixMap<V> {
    pub(crate) fn insert(&mut self, affix: &str, value: V) {
        if let Err(at) = self.lengths.binary_search(&affix.len()) {
            self.lengths.insert(at, affix.len());
        }
        self.entries.entry(affix.into()).or_default().push(value);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Calls `f` for each value whose affix is a prefix of `text`; stops when `f` returns true.
    pub(crate) fn prefixes_of(&self, text: &str, f: &mut impl FnMut(&V) -> bool) -> bool {
        for &len in &self.lengths {
            let Some(head) = text.get(..len) else {
                if len > text.len() {
                    break;
                }
                continue;
            };
            if let Some(values) = self.entries.get(head) {
                for value in values {
                    if f(value) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Calls `f` for each value whose affix is a suffix of `text`; stops when `f` returns true.
    pub(crate) fn suffixes_of(&self, text: &str, f: &mut impl FnMut(&V) -> bool) -> bool {
        for &len in &self.lengths {
            if len > text.len() {
                break;
            }
            let Some(tail) = text.get(text.len() - len..) else {
                continue;
            };
            if let Some(values) = self.entries.get(tail) {
                for value in values {
                    if f(value) {
                        return true;
                    }
                }
            }
        }
        false
    }
}
