//! Process-wide state shared by every VM of a host, as in Envoy: shared data and shared queues
//! (scoped by `vm_id`) and metrics (scoped by name).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::{MetricType, Status};

/// Locks a mutex, taking the data even if another thread panicked while holding it: the maps
/// stay consistent because every update is a single insert or remove.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// All process-wide state.
#[derive(Debug, Default)]
pub struct SharedState {
    pub data: SharedData,
    pub queues: SharedQueues,
    pub metrics: Metrics,
}

// ---------------------------------------------------------------------------------------------
// Shared data
// ---------------------------------------------------------------------------------------------

/// proxy-wasm shared data with proxy-wasm-cpp-host's semantics (`src/shared_data.cc`):
/// one CAS counter for the process starting at 1 and skipping 0; `set` on an existing key with a
/// non-zero CAS that differs from the stored one fails with `CasMismatch`; any other `set`
/// stores the value with a fresh CAS.
#[derive(Debug)]
pub struct SharedData {
    inner: Mutex<SharedDataInner>,
}

/// One vm_id's keys: value and CAS.
type SharedDataOfVm = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Debug)]
struct SharedDataInner {
    next_cas: u32,
    by_vm: HashMap<String, SharedDataOfVm>,
}

impl Default for SharedData {
    fn default() -> Self {
        SharedData {
            inner: Mutex::new(SharedDataInner {
                next_cas: 1,
                by_vm: HashMap::new(),
            }),
        }
    }
}

impl SharedData {
    /// The value and CAS of a key, or `NotFound`.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        let inner = lock(&self.inner);
        inner
            .by_vm
            .get(vm_id)
            .and_then(|map| map.get(key))
            .cloned()
            .ok_or(Status::NotFound)
    }

    /// Stores a value, honouring the compare-and-swap value.
    pub fn set(&self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let new_cas = inner.next_cas;
        let map = inner.by_vm.entry(vm_id.to_string()).or_default();
        match map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Err(Status::CasMismatch);
                }
                *entry = (value.to_vec(), new_cas);
            }
            None => {
                map.insert(key.to_vec(), (value.to_vec(), new_cas));
            }
        }
        inner.next_cas = match new_cas.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        Ok(())
    }

    /// Number of keys stored for a vm_id (to check that a module bounds its shared data).
    pub fn len(&self, vm_id: &str) -> usize {
        lock(&self.inner).by_vm.get(vm_id).map_or(0, HashMap::len)
    }

    /// All keys stored for a vm_id, sorted.
    pub fn keys(&self, vm_id: &str) -> Vec<Vec<u8>> {
        let inner = lock(&self.inner);
        let mut keys: Vec<Vec<u8>> = inner
            .by_vm
            .get(vm_id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

// ---------------------------------------------------------------------------------------------
// Shared queues
// ---------------------------------------------------------------------------------------------

/// Where `proxy_on_queue_ready` is delivered: the root context that registered the queue, in the
/// VM (and so on the worker thread) it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOwner {
    pub vm_instance: u64,
    pub root_context_id: u32,
}

#[derive(Debug)]
struct Queue {
    owner: QueueOwner,
    items: VecDeque<Vec<u8>>,
}

/// proxy-wasm shared queues (`src/shared_queue.cc`): named per vm_id, tokens from a process-wide
/// counter that skips 0; registering an existing name returns its token.
#[derive(Debug, Default)]
pub struct SharedQueues {
    inner: Mutex<SharedQueuesInner>,
    /// Pending `on_queue_ready` calls per VM instance, drained by that VM's worker.
    ready: Mutex<HashMap<u64, Vec<(u32, u32)>>>,
}

#[derive(Debug, Default)]
struct SharedQueuesInner {
    last_token: u32,
    tokens: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
}

impl SharedQueues {
    /// Registers a queue; registering a name again keeps its token and moves it to the new
    /// owner, who gets `proxy_on_queue_ready` from then on (proxy-wasm-cpp-host
    /// `SharedQueue::registerQueue` overwrites the context id and VM key).
    pub fn register(&self, vm_id: &str, name: &[u8], owner: QueueOwner) -> u32 {
        let mut inner = lock(&self.inner);
        if let Some(token) = inner
            .tokens
            .get(&(vm_id.to_string(), name.to_vec()))
            .copied()
        {
            if let Some(queue) = inner.queues.get_mut(&token) {
                queue.owner = owner;
            }
            return token;
        }
        let token = loop {
            inner.last_token = inner.last_token.wrapping_add(1);
            let candidate = inner.last_token;
            if candidate != 0 && !inner.queues.contains_key(&candidate) {
                break candidate;
            }
        };
        inner
            .tokens
            .insert((vm_id.to_string(), name.to_vec()), token);
        inner.queues.insert(
            token,
            Queue {
                owner,
                items: VecDeque::new(),
            },
        );
        token
    }

    pub fn resolve(&self, vm_id: &str, name: &[u8]) -> Option<u32> {
        lock(&self.inner)
            .tokens
            .get(&(vm_id.to_string(), name.to_vec()))
            .copied()
    }

    pub fn enqueue(&self, token: u32, value: &[u8]) -> Result<(), Status> {
        let owner = {
            let mut inner = lock(&self.inner);
            let queue = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
            queue.items.push_back(value.to_vec());
            queue.owner
        };
        lock(&self.ready)
            .entry(owner.vm_instance)
            .or_default()
            .push((owner.root_context_id, token));
        Ok(())
    }

    pub fn dequeue(&self, token: u32) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let queue = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }

    /// Takes the pending `on_queue_ready` notifications of one VM instance.
    pub(crate) fn take_ready(&self, vm_instance: u64) -> Vec<(u32, u32)> {
        lock(&self.ready).remove(&vm_instance).unwrap_or_default()
    }

    /// Forgets notifications for a VM that no longer exists.
    pub(crate) fn forget_vm(&self, vm_instance: u64) {
        lock(&self.ready).remove(&vm_instance);
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Envoy names a module's metric `wasmcustom.<name>` (custom stat namespace).
pub const METRIC_NAMESPACE: &str = "wasmcustom";

/// Samples kept per histogram beyond count/sum/min/max: bounded so a long run stays small.
const HISTOGRAM_SAMPLE_CAP: usize = 10_000;

#[derive(Debug)]
pub struct MetricCell {
    pub kind: MetricType,
    pub name: String,
    /// Counter value.
    counter: AtomicU64,
    /// Gauge value (Envoy gauges are unsigned; a decrement below zero stops at zero).
    gauge: AtomicI64,
    histogram: Mutex<HistogramData>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct HistogramData {
    pub count: u64,
    pub sum: u128,
    pub min: Option<u64>,
    pub max: Option<u64>,
    /// The first recorded values, up to a bound.
    pub samples: Vec<u64>,
}

impl MetricCell {
    fn new(kind: MetricType, name: &str) -> MetricCell {
        MetricCell {
            kind,
            name: name.to_string(),
            counter: AtomicU64::new(0),
            gauge: AtomicI64::new(0),
            histogram: Mutex::new(HistogramData::default()),
        }
    }

    /// `proxy_increment_metric`: counters take only positive offsets; gauges add or subtract;
    /// histograms refuse (Envoy `Context::incrementMetric`).
    pub fn increment(&self, offset: i64) -> Result<(), Status> {
        match self.kind {
            MetricType::Counter if offset > 0 => {
                self.counter.fetch_add(offset as u64, Ordering::Relaxed);
                Ok(())
            }
            MetricType::Counter => Err(Status::BadArgument),
            MetricType::Gauge => {
                let _ = self
                    .gauge
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some(v.saturating_add(offset).max(0))
                    });
                Ok(())
            }
            MetricType::Histogram => Err(Status::BadArgument),
        }
    }

    /// `proxy_record_metric`: a counter adds the value, a gauge is set, a histogram records.
    pub fn record(&self, value: u64) {
        match self.kind {
            MetricType::Counter => {
                self.counter.fetch_add(value, Ordering::Relaxed);
            }
            MetricType::Gauge => {
                self.gauge
                    .store(i64::try_from(value).unwrap_or(i64::MAX), Ordering::Relaxed);
            }
            MetricType::Histogram => {
                let mut h = lock(&self.histogram);
                h.count += 1;
                h.sum += u128::from(value);
                h.min = Some(h.min.map_or(value, |m| m.min(value)));
                h.max = Some(h.max.map_or(value, |m| m.max(value)));
                if h.samples.len() < HISTOGRAM_SAMPLE_CAP {
                    h.samples.push(value);
                }
            }
        }
    }

    /// `proxy_get_metric`: histograms cannot be read back (BadArgument, as in Envoy).
    pub fn value(&self) -> Result<u64, Status> {
        match self.kind {
            MetricType::Counter => Ok(self.counter.load(Ordering::Relaxed)),
            MetricType::Gauge => Ok(self.gauge.load(Ordering::Relaxed).max(0) as u64),
            MetricType::Histogram => Err(Status::BadArgument),
        }
    }

    pub fn histogram(&self) -> HistogramData {
        lock(&self.histogram).clone()
    }
}

/// A snapshot of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSnapshot {
    /// Full stat name, `wasmcustom.<name>`.
    pub full_name: String,
    /// Name as the module defined it.
    pub name: String,
    pub kind: MetricType,
    /// Counter or gauge value; for a histogram, the number of samples.
    pub value: u64,
    pub histogram: Option<HistogramData>,
}

/// Metrics by (kind, name): every VM that defines the same name shares one stat, as Envoy's
/// stats scope does.
#[derive(Debug, Default)]
pub struct Metrics {
    cells: Mutex<HashMap<(&'static str, String), Arc<MetricCell>>>,
}

impl Metrics {
    pub(crate) fn define(&self, kind: MetricType, name: &str) -> Arc<MetricCell> {
        lock(&self.cells)
            .entry((kind.as_str(), name.to_string()))
            .or_insert_with(|| Arc::new(MetricCell::new(kind, name)))
            .clone()
    }

    /// The counter or gauge value of a metric by the name the module gave it.
    pub fn value(&self, name: &str) -> Option<u64> {
        let cells = lock(&self.cells);
        [MetricType::Counter, MetricType::Gauge]
            .iter()
            .find_map(|kind| cells.get(&(kind.as_str(), name.to_string())))
            .and_then(|cell| cell.value().ok())
    }

    /// A histogram by name.
    pub fn histogram(&self, name: &str) -> Option<HistogramData> {
        lock(&self.cells)
            .get(&(MetricType::Histogram.as_str(), name.to_string()))
            .map(|cell| cell.histogram())
    }

    /// All metrics, sorted by name.
    pub fn snapshot(&self) -> Vec<MetricSnapshot> {
        let cells = lock(&self.cells);
        let mut out: Vec<MetricSnapshot> = cells
            .values()
            .map(|cell| {
                let histogram = (cell.kind == MetricType::Histogram).then(|| cell.histogram());
                MetricSnapshot {
                    full_name: format!("{METRIC_NAMESPACE}.{}", cell.name),
                    name: cell.name.clone(),
                    kind: cell.kind,
                    value: histogram
                        .as_ref()
                        .map_or_else(|| cell.value().unwrap_or(0), |h| h.count),
                    histogram,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.kind.as_str().cmp(b.kind.as_str()))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_follows_cpp_host() {
        let data = SharedData::default();
        assert_eq!(data.get("vm", b"k"), Err(Status::NotFound));
        // absent key: stored whatever the cas
        data.set("vm", b"k", b"1", 77).unwrap();
        let (v, cas) = data.get("vm", b"k").unwrap();
        assert_eq!((v.as_slice(), cas), (&b"1"[..], 1));
        assert_eq!(
            data.set("vm", b"k", b"2", cas + 1),
            Err(Status::CasMismatch)
        );
        data.set("vm", b"k", b"2", cas).unwrap();
        assert_eq!(data.get("vm", b"k").unwrap().1, 2);
        // cas 0 overwrites unconditionally
        data.set("vm", b"k", b"3", 0).unwrap();
        assert_eq!(data.get("vm", b"k").unwrap(), (b"3".to_vec(), 3));
        // vm ids are isolated
        assert_eq!(data.get("other", b"k"), Err(Status::NotFound));
    }

    #[test]
    fn cas_counter_skips_zero() {
        let data = SharedData::default();
        lock(&data.inner).next_cas = u32::MAX;
        data.set("vm", b"a", b"", 0).unwrap();
        data.set("vm", b"b", b"", 0).unwrap();
        assert_eq!(data.get("vm", b"a").unwrap().1, u32::MAX);
        assert_eq!(data.get("vm", b"b").unwrap().1, 1);
    }

    #[test]
    fn metric_rules_follow_envoy() {
        let metrics = Metrics::default();
        let counter = metrics.define(MetricType::Counter, "c");
        assert_eq!(counter.increment(0), Err(Status::BadArgument));
        counter.increment(2).unwrap();
        counter.record(3);
        assert_eq!(metrics.value("c"), Some(5));
        let gauge = metrics.define(MetricType::Gauge, "g");
        gauge.increment(-4).unwrap();
        assert_eq!(gauge.value(), Ok(0));
        gauge.record(7);
        gauge.increment(-2).unwrap();
        assert_eq!(gauge.value(), Ok(5));
        let hist = metrics.define(MetricType::Histogram, "h");
        assert_eq!(hist.increment(1), Err(Status::BadArgument));
        assert_eq!(hist.value(), Err(Status::BadArgument));
        hist.record(10);
        hist.record(4);
        let h = metrics.histogram("h").unwrap();
        assert_eq!((h.count, h.sum, h.min, h.max), (2, 14, Some(4), Some(10)));
    }
}
