//! Worker VMs on their own OS threads race compare-and-swap updates of one shared-data key
//! through the ABI (`cas_counter.wat`): no update is lost.

mod common;

use std::sync::{Arc, Barrier};

use common::host_from_wat;
use egress_sim::{HttpRequest, PluginConfig};

#[test]
fn racing_cas_increments_lose_no_update() {
    const WORKERS: usize = 4;
    const REQUESTS: u32 = 500;
    let host = host_from_wat("cas_counter.wat");
    // The key exists before the race: two first writers with CAS 0 would both succeed.
    host.shared()
        .data
        .set("", b"counter", &0u32.to_le_bytes(), 0)
        .unwrap();
    let (_, initial_cas) = host.shared().data.get("", b"counter").unwrap();

    let workers = host
        .start(vec![PluginConfig::http("cas", "cas", "")], WORKERS)
        .unwrap()
        .into_workers();
    let barrier = Arc::new(Barrier::new(WORKERS));
    let threads: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..REQUESTS {
                    let outcome = worker.http(&HttpRequest::get("a", "/")).unwrap();
                    assert_eq!(outcome.result, egress_sim::StreamResult::Continued);
                }
                worker.failure().map(str::to_string)
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), None, "no VM failed");
    }

    let (value, cas) = host.shared().data.get("", b"counter").unwrap();
    let total = u32::from_le_bytes(value.try_into().unwrap());
    assert_eq!(total, WORKERS as u32 * REQUESTS);
    // Every successful write took exactly one fresh CAS value.
    assert_eq!(cas, initial_cas + WORKERS as u32 * REQUESTS);
    let retries = host.shared().metrics.value("cas_retries").unwrap_or(0);
    println!("{WORKERS} workers x {REQUESTS} increments: counter {total}, {retries} CAS retries");
}
