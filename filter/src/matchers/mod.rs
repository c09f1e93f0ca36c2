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
pub use host::{HostMatcher, HostPattern, HostTable, HostTableBuilder};
pub use path::{PathMatcher, PathPattern};
pub use port::{parse_port, PortSet};
pub use string::{StringMatcher, StringPattern};

use std::collections::HashMap;

/// Tables are keyed by configuration values, never grown by requests, so a fixed seed is safe and
/// keeps the module free of a random-number import.
pub type FixedState = foldhash::fast::FixedState;
pub type FastMap<K, V> = HashMap<K, V, FixedState>;

const HASH_SEED: u64 = 0x6567_7265_7373_2d67; // "egress-g"

pub fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(FixedState::with_seed(HASH_SEED))
}

/// The ids attached to one key of a table: almost always one, so that case does not allocate.
#[derive(Debug, Clone)]
pub(crate) enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    fn push(&mut self, id: u32) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, id]),
            Self::Many(ids) => ids.push(id),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u32] {
        match self {
            Self::One(id) => std::slice::from_ref(id),
            Self::Many(ids) => ids,
        }
    }
}

/// Strings mapped to ids. Every string table of the matchers is this one type, so the `.wasm`
/// carries a single copy of the hash-table code.
pub(crate) type IdMap = FastMap<Box<str>, Ids>;

pub(crate) fn insert_id(map: &mut IdMap, key: &str, id: u32) {
    match map.get_mut(key) {
        Some(ids) => ids.push(id),
        None => {
            map.insert(key.into(), Ids::One(id));
        }
    }
}

/// Calls `f` for each id; stops and returns true when `f` does.
pub(crate) fn visit(ids: &[u32], f: &mut dyn FnMut(u32) -> bool) -> bool {
    ids.iter().any(|id| f(*id))
}

/// Affixes (prefixes or suffixes) grouped by length: a lookup costs one hash probe per distinct
/// affix length, whatever the number of affixes.
#[derive(Debug, Clone)]
pub(crate) struct AffixMap {
    entries: IdMap,
    /// Distinct lengths of the entries, ascending.
    lengths: Vec<usize>,
}

impl Default for AffixMap {
    fn default() -> Self {
        Self {
            entries: fast_map(),
            lengths: Vec::new(),
        }
    }
}

impl AffixMap {
    pub(crate) fn insert(&mut self, affix: &str, id: u32) {
        if let Err(at) = self.lengths.binary_search(&affix.len()) {
            self.lengths.insert(at, affix.len());
        }
        insert_id(&mut self.entries, affix, id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Calls `f` for each id whose affix is a prefix of `text`; stops when `f` returns true.
    pub(crate) fn prefixes_of(&self, text: &str, f: &mut dyn FnMut(u32) -> bool) -> bool {
        for &len in &self.lengths {
            if len > text.len() {
                break;
            }
            let Some(head) = text.get(..len) else {
                continue;
            };
            if let Some(ids) = self.entries.get(head) {
                if visit(ids.as_slice(), f) {
                    return true;
                }
            }
        }
        false
    }

    /// Calls `f` for each id whose affix is a suffix of `text`; stops when `f` returns true.
    pub(crate) fn suffixes_of(&self, text: &str, f: &mut dyn FnMut(u32) -> bool) -> bool {
        for &len in &self.lengths {
            if len > text.len() {
                break;
            }
            let Some(tail) = text.get(text.len() - len..) else {
                continue;
            };
            if let Some(ids) = self.entries.get(tail) {
                if visit(ids.as_slice(), f) {
                    return true;
                }
            }
        }
        false
    }
}
