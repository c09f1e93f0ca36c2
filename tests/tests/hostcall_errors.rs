//! Every host call's status codes, checked from inside a module: bad pointers, unknown buffer
//! and map types, unavailable buffers and maps, missing keys, CAS mismatches, unknown queues,
//! metrics, callouts and WASI errno values.
//!
//! Status values: Ok 0, NotFound 1, BadArgument 2, SerializationFailure 3, ParseFailure 4,
//! InvalidMemoryAccess 6, Empty 7, CasMismatch 8, Unimplemented 12.
//! WASI: SUCCESS 0, BADF 8, FAULT 21, INVAL 28, NOTSUP 58.

mod common;

use common::{probe, results, stashed, BAD_PTR};
use egress_sim::{Host, HostOptions, HttpRequest, LogLevel, PluginConfig, StreamResult, VmConfig};

fn bad() -> String {
    BAD_PTR.to_string()
}

/// Runs `body` in `proxy_on_request_headers` of one HTTP stream; returns the host and outcome.
fn run_http(
    body: &str,
    extra: &str,
    vm: VmConfig,
    options: HostOptions,
    request: HttpRequest,
) -> (Host, egress_sim::StreamOutcome) {
    let wasm = probe("proxy_on_request_headers", body, extra);
    let host = Host::new(&wasm, vm, options).expect("probe loads");
    let mut deployment = host
        .start(vec![PluginConfig::http("probe", "probe", "{}")], 1)
        .expect("probe starts");
    let outcome = deployment.worker(0).http(&request).expect("stream runs");
    (host, outcome)
}

#[test]
fn logging_time_and_buffers() {
    let b = bad();
    let body = format!(
        r#"
        (call $rec (call $proxy_log (i32.const 9) (i32.const 4096) (i32.const 5)))
        (call $rec (call $proxy_log (i32.const 2) (i32.const {b}) (i32.const 5)))
        (call $rec (call $proxy_log (i32.const 2) (i32.const 4096) (i32.const 5)))
        (call $rec (call $proxy_log (i32.const 1) (i32.const 4096) (i32.const 5)))
        (call $rec (call $proxy_get_log_level (i32.const {b})))
        (call $rec (call $proxy_get_log_level (i32.const 200)))
        (call $rec (i32.load (i32.const 200)))
        (call $rec (call $proxy_get_current_time_nanoseconds (i32.const {b})))
        (call $rec (call $proxy_get_current_time_nanoseconds (i32.const 208)))
        (call $rec (call $proxy_get_buffer_bytes (i32.const 9) (i32.const 0) (i32.const 10) (i32.const 216) (i32.const 220)))
        (call $rec (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 10) (i32.const 216) (i32.const 220)))
        (call $rec (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 5) (i32.const 10) (i32.const 216) (i32.const 220)))
        (call $rec (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 1) (i32.const -1) (i32.const 216) (i32.const 220)))
        (call $rec (i32.load (i32.const 220)))
        (call $stash (i32.const 4200) (i32.const 10) (i32.const 216))
        (call $rec (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 5) (i32.const 10) (i32.const 216) (i32.const 220)))
        (call $rec (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 3) (i32.const {b}) (i32.const 220)))
        (call $rec (call $proxy_get_buffer_status (i32.const 9) (i32.const 224) (i32.const 228)))
        (call $rec (call $proxy_get_buffer_status (i32.const 4) (i32.const 224) (i32.const 228)))
        (call $rec (call $proxy_get_buffer_status (i32.const 6) (i32.const 224) (i32.const 228)))
        (call $rec (i32.load (i32.const 224)))
        (call $rec (call $proxy_get_buffer_status (i32.const 6) (i32.const {b}) (i32.const 228)))
        (call $rec (call $proxy_set_buffer_bytes (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 4096) (i32.const 5)))
        (call $rec (call $proxy_set_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 4096) (i32.const 5)))
        (call $rec (call $proxy_set_buffer_bytes (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 4096) (i32.const 5)))
        (call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {b}) (i32.const 5)))
        "#
    );
    let extra = r#"(data (i32.const 4096) "hello") (data (i32.const 4200) "vmcfg_tail")"#;
    let vm = VmConfig {
        configuration: b"vmcfg".to_vec(),
        ..VmConfig::default()
    };
    let (host, outcome) = run_http(
        &body,
        extra,
        vm,
        HostOptions::default(),
        HttpRequest::get("a", "/"),
    );
    assert_eq!(
        results(&host),
        [
            2, 6, 0, 0, // log: bad level, bad pointer, ok, ok (debug: dropped)
            6, 0, 2, // log level: bad pointer, ok, value Info
            6, 0, // time
            2, 1, 0, 0, 4, 0,
            6, // get_buffer_bytes: type, unavailable, start past end (Ok, nothing), ok+size, empty read, bad pointer
            2, 1, 0, 5, 6, // get_buffer_status: type, unavailable, ok+size, bad pointer
            2, 2, 1, 6, // set_buffer_bytes: type, read-only, unavailable, bad pointer
        ]
    );
    assert_eq!(stashed(&host, "vmcfg_tail"), b"mcfg");
    // Only the info message got through; the debug one is below the host's level.
    assert_eq!(outcome.messages(), ["hello"]);
    assert_eq!(outcome.logs[0].level, LogLevel::Info);
}

#[test]
fn plugin_configuration_is_readable_only_while_configuring() {
    let body = r#"
        (call $rec (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const -1) (i32.const 216) (i32.const 220)))
        (call $stash (i32.const 4096) (i32.const 6) (i32.const 216))
        (call $rec (call $proxy_set_property (i32.const 4110) (i32.const 1) (i32.const 4110) (i32.const 1)))
        (call $rec (call $proxy_get_property (i32.const 4120) (i32.const 14) (i32.const 216) (i32.const 220)))
        (call $rec (call $proxy_get_property (i32.const 4140) (i32.const 11) (i32.const 216) (i32.const 220)))
        (call $stash (i32.const 4160) (i32.const 9) (i32.const 216))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4110) (i32.const 1) (i32.const 216) (i32.const 220)))
    "#;
    let extra = r#"(data (i32.const 4096) "config") (data (i32.const 4110) "x")
        (data (i32.const 4120) "source\00address") (data (i32.const 4140) "plugin_name")
        (data (i32.const 4160) "plugin_nm")"#;
    let wasm = probe("proxy_on_configure", body, extra);
    let host = Host::new(&wasm, VmConfig::default(), HostOptions::default()).unwrap();
    host.canary(&PluginConfig::http("my-plugin", "root", r#"{"k":1}"#))
        .unwrap();
    // config read, set_property on a root: NotFound, stream property on a root: NotFound,
    // plugin_name: ok, request headers from a root: BadArgument.
    assert_eq!(results(&host), [0, 1, 1, 0, 2]);
    assert_eq!(stashed(&host, "config"), br#"{"k":1}"#);
    assert_eq!(stashed(&host, "plugin_nm"), b"my-plugin");
}

#[test]
fn header_maps() {
    let b = bad();
    let body = format!(
        r#"
        (call $rec (call $proxy_get_header_map_value (i32.const 8) (i32.const 4096) (i32.const 3) (i32.const 300) (i32.const 304)))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4100) (i32.const 7) (i32.const 300) (i32.const 304)))
        (call $rec (call $proxy_get_header_map_value (i32.const 2) (i32.const 4096) (i32.const 3) (i32.const 300) (i32.const 304)))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const {b}) (i32.const 3) (i32.const 300) (i32.const 304)))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4096) (i32.const 3) (i32.const 300) (i32.const 304)))
        (call $stash (i32.const 4300) (i32.const 5) (i32.const 300))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4110) (i32.const 4) (i32.const 300) (i32.const 304)))
        (call $stash (i32.const 4310) (i32.const 4) (i32.const 300))
        (call $rec (call $proxy_get_header_map_value (i32.const 0) (i32.const 4096) (i32.const 3) (i32.const {b}) (i32.const 304)))
        (call $rec (call $proxy_get_header_map_pairs (i32.const 8) (i32.const 300) (i32.const 304)))
        (call $rec (call $proxy_get_header_map_pairs (i32.const 2) (i32.const 300) (i32.const 304)))
        (call $rec (i32.load (i32.const 304)))
        (call $rec (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 300) (i32.const 304)))
        (call $stash (i32.const 4320) (i32.const 5) (i32.const 300))
        (call $rec (call $proxy_get_header_map_pairs (i32.const 0) (i32.const {b}) (i32.const 304)))
        (call $rec (call $proxy_get_header_map_size (i32.const 6) (i32.const 308)))
        (call $rec (call $proxy_get_header_map_size (i32.const 0) (i32.const 308)))
        (call $rec (i32.load (i32.const 308)))
        (call $rec (call $proxy_add_header_map_value (i32.const 8) (i32.const 4120) (i32.const 5) (i32.const 4130) (i32.const 2)))
        (call $rec (call $proxy_add_header_map_value (i32.const 2) (i32.const 4120) (i32.const 5) (i32.const 4130) (i32.const 2)))
        (call $rec (call $proxy_add_header_map_value (i32.const 0) (i32.const {b}) (i32.const 5) (i32.const 4130) (i32.const 2)))
        (call $rec (call $proxy_add_header_map_value (i32.const 0) (i32.const 4120) (i32.const 5) (i32.const 4130) (i32.const 2)))
        (call $rec (call $proxy_replace_header_map_value (i32.const 0) (i32.const 4096) (i32.const 3) (i32.const 4130) (i32.const 2)))
        (call $rec (call $proxy_replace_header_map_value (i32.const 0) (i32.const 4096) (i32.const 3) (i32.const {b}) (i32.const 2)))
        (call $rec (call $proxy_remove_header_map_value (i32.const 9) (i32.const 4100) (i32.const 7)))
        (call $rec (call $proxy_remove_header_map_value (i32.const 0) (i32.const 4100) (i32.const 7)))
        (call $rec (call $proxy_set_header_map_pairs (i32.const 6) (i32.const 4400) (i32.const 4)))
        (call $rec (call $proxy_set_header_map_pairs (i32.const 0) (i32.const {b}) (i32.const 4)))
        "#
    );
    let extra = r#"(data (i32.const 4096) "X-A") (data (i32.const 4100) "missing") (data (i32.const 4110) "host")
        (data (i32.const 4120) "x-new") (data (i32.const 4130) "v1")
        (data (i32.const 4300) "first") (data (i32.const 4310) "host") (data (i32.const 4320) "pairs")"#;
    let options = HostOptions {
        connection_manager_headers: false,
        ..HostOptions::default()
    };
    let request = HttpRequest {
        headers: vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())],
        ..HttpRequest::get("example.com", "/")
    };
    let (host, outcome) = run_http(&body, extra, VmConfig::default(), options, request);
    assert_eq!(
        results(&host),
        [
            2, 1, 2, 6, 0, 0,
            6, // get value: type, missing, unavailable map, bad key, ok, host alias, bad return
            2, 0, 0, 0, 6, // pairs: type, unavailable (empty), size 0, ok, bad return
            2, 0, 56, // size: read-only map, ok, byte size
            2, 2, 6, 0, // add: type, unavailable, bad key, ok
            0, 6, // replace: ok, bad value
            2, 0, // remove: type, missing key is fine
            2, 6, // set pairs: read-only map, bad pointer
        ]
    );
    assert_eq!(
        stashed(&host, "first"),
        b"1",
        "only the first value of a repeated header"
    );
    assert_eq!(stashed(&host, "host"), b"example.com", "host is :authority");
    assert_eq!(
        outcome.forwarded_request_headers.unwrap(),
        [
            (":authority", "example.com"),
            (":path", "/"),
            (":method", "GET"),
            (":scheme", "http"),
            ("x-a", "v1"),
            ("x-new", "v1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[test]
fn request_body_can_be_read_and_replaced_in_its_callback() {
    let body = r#"
        (call $rec (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 300) (i32.const 304)))
        (call $stash (i32.const 4096) (i32.const 4) (i32.const 300))
        (call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 2) (i32.const 1) (i32.const 4110) (i32.const 3)))
        (call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4110) (i32.const 3)))
        (call $rec (call $proxy_set_buffer_bytes (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 4110) (i32.const 3)))
        (call $rec (call $proxy_get_buffer_status (i32.const 0) (i32.const 308) (i32.const 312)))
        (call $rec (i32.load (i32.const 308)))
    "#;
    let extra = r#"(data (i32.const 4096) "body") (data (i32.const 4110) "<+>")"#;
    let wasm = probe("proxy_on_request_body", body, extra);
    let host = Host::new(&wasm, VmConfig::default(), HostOptions::default()).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    let request = HttpRequest {
        body: Some(b"hello".to_vec()),
        ..HttpRequest::get("a", "/")
    };
    let outcome = deployment.worker(0).http(&request).unwrap();
    // read, replace in the middle refused, prepend, append, size
    assert_eq!(results(&host), [0, 2, 0, 0, 0, 11]);
    assert_eq!(stashed(&host, "body"), b"hello");
    assert_eq!(outcome.forwarded_bytes, b"<+>hello<+>");
}

#[test]
fn shared_data_queues_metrics_stream_control_callouts_and_wasi() {
    let b = bad();
    // Headers for a valid callout: :path /, :method GET, :authority up.
    let callout_headers =
        egress_sim::pairs::encode(&[(":path", "/"), (":method", "GET"), (":authority", "up")]);
    let callout_data: String = callout_headers
        .iter()
        .map(|byte| format!("\\{byte:02x}"))
        .collect();
    let n = callout_headers.len();
    let body = format!(
        r#"
        ;; shared data
        (call $rec (call $proxy_get_shared_data (i32.const 4096) (i32.const 1) (i32.const 400) (i32.const 404) (i32.const 408)))
        (call $rec (call $proxy_get_shared_data (i32.const {b}) (i32.const 1) (i32.const 400) (i32.const 404) (i32.const 408)))
        (call $rec (call $proxy_set_shared_data (i32.const 4096) (i32.const 1) (i32.const {b}) (i32.const 2) (i32.const 0)))
        (call $rec (call $proxy_set_shared_data (i32.const 4096) (i32.const 1) (i32.const 4100) (i32.const 2) (i32.const 0)))
        (call $rec (call $proxy_get_shared_data (i32.const 4096) (i32.const 1) (i32.const 400) (i32.const 404) (i32.const 408)))
        (call $rec (call $proxy_set_shared_data (i32.const 4096) (i32.const 1) (i32.const 4100) (i32.const 2)
          (i32.add (i32.load (i32.const 408)) (i32.const 1))))
        (call $rec (call $proxy_set_shared_data (i32.const 4096) (i32.const 1) (i32.const 4100) (i32.const 2) (i32.load (i32.const 408))))
        (call $rec (call $proxy_get_shared_data (i32.const 4096) (i32.const 1) (i32.const 400) (i32.const 404) (i32.const {b})))
        ;; queues
        (call $rec (call $proxy_resolve_shared_queue (i32.const 4120) (i32.const 0) (i32.const 4110) (i32.const 1) (i32.const 412)))
        (call $rec (call $proxy_register_shared_queue (i32.const 4110) (i32.const 1) (i32.const {b})))
        (call $rec (call $proxy_register_shared_queue (i32.const 4110) (i32.const 1) (i32.const 412)))
        (call $rec (call $proxy_resolve_shared_queue (i32.const 4120) (i32.const 0) (i32.const 4110) (i32.const 1) (i32.const 416)))
        (call $rec (i32.eq (i32.load (i32.const 412)) (i32.load (i32.const 416))))
        (call $rec (call $proxy_dequeue_shared_queue (i32.load (i32.const 412)) (i32.const 420) (i32.const 424)))
        (call $rec (call $proxy_dequeue_shared_queue (i32.const 9999) (i32.const 420) (i32.const 424)))
        (call $rec (call $proxy_enqueue_shared_queue (i32.const 9999) (i32.const 4100) (i32.const 2)))
        (call $rec (call $proxy_enqueue_shared_queue (i32.load (i32.const 412)) (i32.const {b}) (i32.const 2)))
        (call $rec (call $proxy_enqueue_shared_queue (i32.load (i32.const 412)) (i32.const 4100) (i32.const 2)))
        (call $rec (call $proxy_dequeue_shared_queue (i32.load (i32.const 412)) (i32.const 420) (i32.const 424)))
        (call $rec (i32.load (i32.const 424)))
        ;; metrics
        (call $rec (call $proxy_define_metric (i32.const 3) (i32.const 4130) (i32.const 1) (i32.const 430)))
        (call $rec (call $proxy_define_metric (i32.const 0) (i32.const {b}) (i32.const 1) (i32.const 430)))
        (call $rec (call $proxy_define_metric (i32.const 0) (i32.const 4130) (i32.const 1) (i32.const 430)))
        (call $rec (call $proxy_define_metric (i32.const 2) (i32.const 4140) (i32.const 1) (i32.const 434)))
        (call $rec (call $proxy_increment_metric (i32.load (i32.const 430)) (i64.const 0)))
        (call $rec (call $proxy_increment_metric (i32.load (i32.const 430)) (i64.const 3)))
        (call $rec (call $proxy_increment_metric (i32.const 400) (i64.const 1)))
        (call $rec (call $proxy_increment_metric (i32.load (i32.const 434)) (i64.const 1)))
        (call $rec (call $proxy_record_metric (i32.const 401) (i64.const 1)))
        (call $rec (call $proxy_record_metric (i32.load (i32.const 434)) (i64.const 7)))
        (call $rec (call $proxy_get_metric (i32.load (i32.const 434)) (i32.const 440)))
        (call $rec (call $proxy_get_metric (i32.load (i32.const 430)) (i32.const {b})))
        (call $rec (call $proxy_get_metric (i32.load (i32.const 430)) (i32.const 440)))
        (call $rec (i32.load (i32.const 440)))
        ;; stream control and contexts
        (call $rec (call $proxy_continue_stream (i32.const 4)))
        (call $rec (call $proxy_continue_stream (i32.const 3)))
        (call $rec (call $proxy_close_stream (i32.const 4)))
        (call $rec (call $proxy_set_effective_context (i32.const 9999)))
        (call $rec (call $proxy_set_effective_context (local.get $ctx)))
        (call $rec (call $proxy_done))
        (call $rec (call $proxy_get_status (i32.const {b}) (i32.const 444) (i32.const 448)))
        (call $rec (call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
          (i32.const {b}) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const -1)))
        ;; callouts
        (call $rec (call $proxy_http_call (i32.const 4170) (i32.const 4) (i32.const 4500) (i32.const {n})
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 450)))
        (call $rec (call $proxy_http_call (i32.const 4180) (i32.const 2) (i32.const 0) (i32.const 0)
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 450)))
        (call $rec (call $proxy_http_call (i32.const 4180) (i32.const 2) (i32.const 4500) (i32.const {n})
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const {b})))
        (call $rec (call $proxy_http_call (i32.const 4180) (i32.const 2) (i32.const 4500) (i32.const {n})
          (i32.const 4100) (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 450)))
        (call $rec (call $proxy_grpc_call (i32.const 4170) (i32.const 4) (i32.const 4190) (i32.const 3) (i32.const 4200) (i32.const 1)
          (i32.const 0) (i32.const 0) (i32.const 4100) (i32.const 2) (i32.const 1000) (i32.const 454)))
        (call $rec (call $proxy_grpc_call (i32.const 4180) (i32.const 2) (i32.const 4190) (i32.const 3) (i32.const 4200) (i32.const 1)
          (i32.const 0) (i32.const 0) (i32.const 4100) (i32.const 2) (i32.const 1000) (i32.const 454)))
        (call $rec (i32.and (i32.load (i32.const 454)) (i32.const 1)))
        (call $rec (call $proxy_grpc_send (i32.load (i32.const 454)) (i32.const 4100) (i32.const 2) (i32.const 0)))
        (call $rec (call $proxy_grpc_send (i32.const 1000) (i32.const 4100) (i32.const 2) (i32.const 0)))
        (call $rec (call $proxy_grpc_cancel (i32.const 1001)))
        (call $rec (call $proxy_grpc_close (i32.const 1001)))
        (call $rec (call $proxy_call_foreign_function (i32.const 4170) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 460) (i32.const 464)))
        (call $rec (call $proxy_call_foreign_function (i32.const 4150) (i32.const 17) (i32.const 0) (i32.const 0) (i32.const 460) (i32.const 464)))
        ;; WASI
        (i32.store (i32.const 470) (i32.const 4100))
        (i32.store (i32.const 474) (i32.const 2))
        (call $rec (call $fd_write (i32.const 3) (i32.const 470) (i32.const 1) (i32.const 478)))
        (call $rec (call $fd_write (i32.const 1) (i32.const {b}) (i32.const 1) (i32.const 478)))
        (call $rec (call $fd_write (i32.const 1) (i32.const 470) (i32.const 1) (i32.const 478)))
        (call $rec (i32.load (i32.const 478)))
        (call $rec (call $clock_time_get (i32.const 5) (i64.const 0) (i32.const 480)))
        (call $rec (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const {b})))
        (call $rec (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 480)))
        (call $rec (call $random_get (i32.const 488) (i32.const 70000)))
        (call $rec (call $random_get (i32.const {b}) (i32.const 8)))
        (call $rec (call $random_get (i32.const 488) (i32.const 8)))
        (call $rec (call $environ_sizes_get (i32.const {b}) (i32.const 500)))
        (call $rec (call $environ_sizes_get (i32.const 496) (i32.const 500)))
        (call $rec (i32.load (i32.const 496)))
        (call $rec (i32.load (i32.const 500)))
        (call $rec (call $environ_get (i32.const 520) (i32.const 540)))
        (call $rec (i32.load (i32.const 520)))
        (call $rec (i32.load (i32.const 540)))
        (call $rec (call $args_sizes_get (i32.const 504) (i32.const 508)))
        "#
    );
    let extra = format!(
        r#"(data (i32.const 4096) "k") (data (i32.const 4100) "v1") (data (i32.const 4110) "q")
        (data (i32.const 4130) "c") (data (i32.const 4140) "h") (data (i32.const 4150) "clear_route_cache")
        (data (i32.const 4170) "nope") (data (i32.const 4180) "up") (data (i32.const 4190) "svc")
        (data (i32.const 4200) "m") (data (i32.const 4500) "{callout_data}")"#
    );
    let vm = VmConfig {
        environment: vec![("MODE".into(), "test".into())],
        ..VmConfig::default()
    };
    let options = HostOptions {
        clusters: vec!["up".into()],
        ..HostOptions::default()
    };
    let wasm = probe("proxy_on_request_headers", &body, &extra);
    let host = Host::new(&wasm, vm, options).unwrap();
    let mut deployment = host
        .start(vec![PluginConfig::http("p", "p", "")], 1)
        .unwrap();
    let worker = deployment.worker(0);
    let outcome = worker.http(&HttpRequest::get("a", "/")).unwrap();
    assert_eq!(
        results(&host),
        [
            1,
            6,
            6,
            0,
            0,
            8,
            0,
            6, // shared data
            1,
            6,
            0,
            0,
            1,
            7,
            1,
            1,
            6,
            0,
            0,
            2, // queues
            2,
            6,
            0,
            0,
            2,
            0,
            1,
            2,
            1,
            0,
            2,
            6,
            0,
            3, // metrics
            2,
            12,
            2,
            2,
            0,
            1,
            6,
            6, // stream control
            2,
            2,
            6,
            0, // http call: unknown cluster, missing pseudo headers, bad token pointer, ok
            4,
            0,
            1,
            2,
            1,
            1,
            1, // grpc: unknown cluster, ok (odd token), send on a call, unknown stream, cancel, close
            1,
            0, // foreign functions
            8,
            21,
            0,
            2, // fd_write
            58,
            21,
            0, // clock_time_get
            28,
            21,
            0, // random_get
            21,
            0,
            1,
            10,
            0,
            540,
            i32::from_le_bytes(*b"MODE"), // environ: pointer to "MODE=test\0"
            0,                            // args
        ]
    );
    // The invalid local reply was refused; the stream went on.
    assert_eq!(outcome.result, StreamResult::Continued);
    assert_eq!(outcome.messages(), ["v1"], "stdout is logged at info");
    assert_eq!(host.shared().metrics.value("c"), Some(3));
    assert_eq!(host.shared().metrics.histogram("h").unwrap().samples, [7]);
    let calls = worker.http_callouts();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].upstream, "up");
    assert_eq!(calls[0].body, b"v1");
    let grpc = worker.grpc_callouts();
    assert_eq!(grpc.len(), 1);
    assert_eq!(
        (grpc[0].service.as_str(), grpc[0].method.as_str()),
        ("svc", "m")
    );
}
