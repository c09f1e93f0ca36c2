//! Helpers shared by the integration tests: locating the built filters, and "probe" modules
//! written in WAT that call host functions and leave the statuses in shared data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use egress_sim::{Host, HostOptions, VmConfig};

/// `target/wasm32-wasip1/release/<name>.wasm` of this workspace; fails with the command that
/// builds it when it is missing.
pub fn built_wasm(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(format!("wasm32-wasip1/release/{name}.wasm"));
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build --release --target wasm32-wasip1 -p {}` \
         (the test command builds it before running the tests)",
        path.display(),
        name.replace('_', "-")
    );
    path
}

pub fn noop_filter() -> PathBuf {
    built_wasm("noop_filter")
}

pub fn egress_filter() -> PathBuf {
    built_wasm("egress_filter")
}

/// A file under `tests/data` (this crate's `data/`).
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Compiles a `.wat` file from `tests/data` to binary Wasm.
pub fn wat_file(name: &str) -> Vec<u8> {
    wat::parse_file(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn host_from_wat(name: &str) -> Host {
    Host::new(&wat_file(name), VmConfig::default(), HostOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An address no module memory reaches (probe memory is 3 pages).
pub const BAD_PTR: i32 = 0x7fff_fff0;

/// Imports every host function under `$<import name>`, a bump allocator, and helpers:
/// `$rec` appends an i32 to the results, `$flush` stores them in shared data under "results",
/// `$stash key key_len ptr_ptr` stores the bytes a host call returned (pointer at `ptr_ptr`,
/// size at `ptr_ptr + 4`) under `key`.
const PROBE_PRELUDE: &str = r#"
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $proxy_get_log_level (param i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $proxy_get_current_time_nanoseconds (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $proxy_set_tick_period_milliseconds (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $proxy_get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $proxy_get_buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $proxy_set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $proxy_get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $proxy_get_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $proxy_set_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $proxy_get_header_map_size (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $proxy_add_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $proxy_replace_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $proxy_remove_header_map_value (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $proxy_get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $proxy_set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $proxy_continue_stream (param i32) (result i32)))
  (import "env" "proxy_close_stream" (func $proxy_close_stream (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $proxy_send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $proxy_set_effective_context (param i32) (result i32)))
  (import "env" "proxy_done" (func $proxy_done (result i32)))
  (import "env" "proxy_get_status" (func $proxy_get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $proxy_get_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $proxy_set_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $proxy_register_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $proxy_resolve_shared_queue (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $proxy_enqueue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $proxy_dequeue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $proxy_define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $proxy_increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $proxy_record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $proxy_get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $proxy_http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $proxy_grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $proxy_grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $proxy_grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $proxy_grpc_cancel (param i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $proxy_grpc_close (param i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $proxy_call_foreign_function (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  (memory (export "memory") 3)
  (global $heap (mut i32) (i32.const 65536))
  (global $out (mut i32) (i32.const 1024))
  (data (i32.const 1000) "results")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func $rec (param $v i32)
    (i32.store (global.get $out) (local.get $v))
    (global.set $out (i32.add (global.get $out) (i32.const 4))))
  (func $flush
    (drop (call $proxy_set_shared_data (i32.const 1000) (i32.const 7)
      (i32.const 1024) (i32.sub (global.get $out) (i32.const 1024)) (i32.const 0)))
    (global.set $out (i32.const 1024)))
  (func $stash (param $key i32) (param $key_len i32) (param $pp i32)
    (drop (call $proxy_set_shared_data (local.get $key) (local.get $key_len)
      (i32.load (local.get $pp)) (i32.load (i32.add (local.get $pp) (i32.const 4))) (i32.const 0))))
"#;

/// A probe module: `body` runs in `callback` (e.g. "proxy_on_request_headers"), then the
/// recorded statuses are flushed. `extra` adds data segments or functions.
pub fn probe(callback: &str, body: &str, extra: &str) -> Vec<u8> {
    let (params, result) = match callback {
        "proxy_on_vm_start" | "proxy_on_configure" => {
            ("(param $ctx i32) (param $size i32)", "(i32.const 1)")
        }
        "proxy_on_request_headers"
        | "proxy_on_request_body"
        | "proxy_on_response_headers"
        | "proxy_on_response_body"
        | "proxy_on_downstream_data" => (
            "(param $ctx i32) (param $n i32) (param $eos i32)",
            "(i32.const 0)",
        ),
        "proxy_on_new_connection" => ("(param $ctx i32)", "(i32.const 0)"),
        "proxy_on_log" | "proxy_on_tick" | "proxy_on_delete" => ("(param $ctx i32)", ""),
        other => panic!("probe: no signature for {other}"),
    };
    let result_type = if result.is_empty() {
        ""
    } else {
        "(result i32)"
    };
    let text = format!(
        "(module {PROBE_PRELUDE}\n {extra}\n (func (export \"{callback}\") {params} {result_type}\n {body}\n (call $flush) {result}))"
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("probe module: {e}\n{text}"))
}

/// The statuses a probe recorded.
pub fn results(host: &Host) -> Vec<i32> {
    let (bytes, _) = host
        .shared()
        .data
        .get(&host.vm_config().vm_id, b"results")
        .expect("the probe flushed its results");
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Bytes a probe stashed under `key`.
pub fn stashed(host: &Host, key: &str) -> Vec<u8> {
    host.shared()
        .data
        .get(&host.vm_config().vm_id, key.as_bytes())
        .unwrap_or_else(|_| panic!("the probe stashed {key:?}"))
        .0
}

/// A probe that reads `paths` in each of `callbacks` (any of `proxy_on_request_headers`,
/// `proxy_on_new_connection`, `proxy_on_downstream_data`, `proxy_on_upstream_data`, each
/// continuing) and stores, per callback `prefix` and path index `i`, the status under
/// "<prefix>s<i>" (4 bytes LE) and a found value under "<prefix><i>". A later call of the
/// same callback overwrites them.
pub fn property_probes(callbacks: &[(&str, &str)], paths: &[&str]) -> Vec<u8> {
    let mut data = String::new();
    let mut funcs = String::new();
    let mut address = 4096;
    let mut alloc = |text: &str, data: &mut String| {
        let at = address;
        // Segments joined by '.', or by NUL where a segment has dots of its own.
        let escaped = if text.contains('\0') {
            text.replace('\0', "\\00")
        } else {
            text.replace('.', "\\00")
        };
        data.push_str(&format!("(data (i32.const {at}) \"{escaped}\")\n"));
        address += 128;
        at
    };
    for (callback, prefix) in callbacks {
        let mut body = String::new();
        for (i, path) in paths.iter().enumerate() {
            let path_at = alloc(path, &mut data);
            let value_key = format!("{prefix}{i}");
            let status_key = format!("{prefix}s{i}");
            let value_at = alloc(&value_key, &mut data);
            let status_at = alloc(&status_key, &mut data);
            body.push_str(&format!(
                "(local.set $st (call $proxy_get_property (i32.const {path_at}) (i32.const {}) (i32.const 600) (i32.const 604)))\n\
                 (i32.store (i32.const 608) (local.get $st))\n\
                 (drop (call $proxy_set_shared_data (i32.const {status_at}) (i32.const {}) (i32.const 608) (i32.const 4) (i32.const 0)))\n\
                 (if (i32.eqz (local.get $st)) (then (call $stash (i32.const {value_at}) (i32.const {}) (i32.const 600))))\n\
                 (i32.store (i32.const 600) (i32.const 0)) (i32.store (i32.const 604) (i32.const 0))\n",
                path.len(),
                status_key.len(),
                value_key.len(),
            ));
        }
        let params = match *callback {
            "proxy_on_new_connection" => "(param $ctx i32)",
            "proxy_on_request_headers" | "proxy_on_downstream_data" | "proxy_on_upstream_data" => {
                "(param $ctx i32) (param $n i32) (param $eos i32)"
            }
            other => panic!("property_probes: no signature for {other}"),
        };
        funcs.push_str(&format!(
            "(func (export \"{callback}\") {params} (result i32) (local $st i32)\n{body} (i32.const 0))\n"
        ));
    }
    let text = format!("(module {PROBE_PRELUDE}\n{data}\n{funcs})");
    wat::parse_str(&text).unwrap_or_else(|e| panic!("probe module: {e}\n{text}"))
}

/// The status a [`property_probes`] module stored under `key`.
pub fn probe_status(host: &Host, key: &str) -> Option<i32> {
    let (bytes, _) = host
        .shared()
        .data
        .get(&host.vm_config().vm_id, key.as_bytes())
        .ok()?;
    Some(i32::from_le_bytes(bytes.try_into().ok()?))
}

/// The value a [`property_probes`] module stored under `key`, if the read succeeded.
pub fn probe_value(host: &Host, key: &str) -> Option<Vec<u8>> {
    host.shared()
        .data
        .get(&host.vm_config().vm_id, key.as_bytes())
        .ok()
        .map(|(v, _)| v)
}
