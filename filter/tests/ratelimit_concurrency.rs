//! Many workers, one bucket: the limit holds exactly under real thread contention.
//!
//! Each thread stands for an Envoy worker VM; the `Arc<MemoryStore>` (a mutex-guarded map with
//! Envoy's CAS rules) stands for proxy-wasm shared data.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use egress_filter::ratelimit::{
    BucketKey, BucketParams, MemoryStore, RateLimitOutcome, RateLimitSpec, RateLimiter,
};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_040 * 1_000_000_000;

struct Run {
    admitted: usize,
    limited: usize,
    contended: usize,
    conflicts: usize,
}

/// `workers` threads send `requests` each; every request advances a shared logical clock by
/// `step_ns` so the run spans several fill intervals.
fn run(workers: usize, requests: usize, step_ns: u64, l: RateLimiter) -> Run {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(AtomicU64::new(T0));
    let limiter = Arc::new(l);
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let start = Arc::new(Barrier::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (store, clock, limiter, counts, start) = (
                Arc::clone(&store),
                Arc::clone(&clock),
                Arc::clone(&limiter),
                Arc::clone(&counts),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                let key = BucketKey::from_values([Some("spiffe://cluster.local/ns/a/sa/client")]);
                start.wait();
                for _ in 0..requests {
                    let now = clock.fetch_add(step_ns, Ordering::SeqCst);
                    let d = limiter.check(&*store, &key, now);
                    let slot = match d.outcome {
                        RateLimitOutcome::Allowed => 0,
                        RateLimitOutcome::Limited => 1,
                        RateLimitOutcome::Contended => 2,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                    counts[3].fetch_add(d.cas_conflicts as usize, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }
    Run {
        admitted: counts[0].load(Ordering::SeqCst),
        limited: counts[1].load(Ordering::SeqCst),
        contended: counts[2].load(Ordering::SeqCst),
        conflicts: counts[3].load(Ordering::SeqCst),
    }
}

fn limiter(max_tokens: u32, tokens_per_fill: u32, fill_interval_ns: u64) -> RateLimiter {
    RateLimiter::new(RateLimitSpec {
        name: "shared".into(),
        key: vec![],
        params: BucketParams {
            max_tokens,
            tokens_per_fill,
            fill_interval_ns,
        },
        max_keys: 10_000,
    })
    // Enough attempts that contention on 2 cores never ends in a denial; a denial for
    // contention would also leave tokens unspent, which the exact count below would catch.
    .with_max_cas_attempts(1_000)
}

#[test]
fn eight_workers_admit_exactly_the_bucket_without_refill() {
    let (workers, requests) = (8, 2_000);
    // Whole run inside one interval: 16,000 requests at 1ns steps.
    let r = run(workers, requests, 1, limiter(500, 100, 60_000 * MS));
    println!(
        "workers={workers} requests/worker={requests} admitted={} limited={} contended={} cas_conflicts={}",
        r.admitted, r.limited, r.contended, r.conflicts
    );
    assert_eq!(r.admitted, 500);
    assert_eq!(r.contended, 0);
    assert_eq!(r.admitted + r.limited, workers * requests);
}

#[test]
fn eight_workers_admit_exactly_the_bucket_plus_refills() {
    let (workers, requests) = (8, 25_000);
    // 200,000 requests, 1µs apart on the logical clock: 200ms, i.e. four 50ms intervals
    // starting at a fill boundary, so three fills happen during the run. Each interval sees
    // 50,000 requests, far more than the bucket, so every fill is spent before the next.
    let r = run(workers, requests, 1_000, limiter(300, 120, 50 * MS));
    println!(
        "workers={workers} requests/worker={requests} admitted={} limited={} contended={} cas_conflicts={}",
        r.admitted, r.limited, r.contended, r.conflicts
    );
    assert_eq!(r.admitted, 300 + 3 * 120);
    assert_eq!(r.contended, 0);
    assert_eq!(r.admitted + r.limited, workers * requests);
}
