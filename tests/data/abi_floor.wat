;; The host traffic of an enforcing filter without the filter's own work: the floor that
;; egress_filter's cost is compared with besides the no-op filter (docs/BENCHMARKS.md).
;; Per request it makes the same host calls egress_filter makes for an allowed mTLS request:
;; five property reads (peer URI SAN, source and destination address, SNI, request.protocol),
;; the request header list, one decision log line of 639 bytes (a real one) and three counter
;; increments; then it continues. Per TCP connection, those egress_filter makes for a plain TCP
;; connection it denies at connect: seven property reads (peer URI SAN, the waypoint's peer
;; principal, connection.mtls, source and destination address, SNI, the local certificate), one
;; decision line of 346 bytes (a real one), three counter increments and the close of the
;; connection. Values are read and dropped; memory handed over by the host is a bump heap reset
;; at every request.
(module
  (import "env" "proxy_get_property" (func $property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))

  ;; 0..8: out-pointers (data, size); 16..28: counter ids
  (data (i32.const 64) "connection\00uri_san_peer_certificate")
  (data (i32.const 128) "source\00address")
  (data (i32.const 192) "destination\00address")
  (data (i32.const 256) "connection\00requested_server_name")
  (data (i32.const 320) "request\00protocol")
  (data (i32.const 384) "egress_floor.decision")
  (data (i32.const 416) "egress_floor.reason")
  (data (i32.const 448) "egress_floor.policy")
  (data (i32.const 512) "filter_state\00io.istio.peer_principal")
  (data (i32.const 576) "connection\00mtls")
  (data (i32.const 640) "connection\00subject_local_certificate")
  (data (i32.const 2048) "{\"event\":\"decision\",\"kind\":\"tcp\",\"decision\":\"deny\",\"policy\":\"deny-metadata\",\"rule\":0,\"action\":\"DENY\",\"reason\":\"denied_by_policy\",\"audit\":[],\"dryRun\":[],\"attributes\":{\"source.ip\":\"10.0.0.1\",\"source.port\":50000,\"remote.ip\":\"10.0.0.1\",\"destination.ip\":\"10.0.0.2\",\"destination.port\":443,\"connection.sni\":\"host-0.example.com\",\"connection.mtls\":false}}")
  (data (i32.const 1024) "{\"event\":\"decision\",\"kind\":\"http\",\"decision\":\"allow\",\"policy\":\"allow-listed\",\"rule\":0,\"action\":\"ALLOW\",\"reason\":\"allowed_by_policy\",\"audit\":[],\"dryRun\":[],\"attributes\":{\"source.principal\":\"cluster.local/ns/ci/sa/runner\",\"source.namespace\":\"ci\",\"source.ip\":\"10.0.0.1\",\"source.port\":50000,\"remote.ip\":\"10.0.0.1\",\"destination.ip\":\"10.0.0.2\",\"destination.port\":443,\"connection.protocol\":\"http1\",\"connection.mtls\":true,\"request.authority\":\"host-999.example.com\",\"request.host\":\"host-999.example.com\",\"request.method\":\"GET\",\"request.path\":\"/v1/items\",\"request.normalized_path\":\"/v1/items\",\"request.scheme\":\"https\",\"request.protocol\":\"HTTP/1.1\"}}")

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 384) (i32.const 21) (i32.const 16)))
    (drop (call $define (i32.const 0) (i32.const 416) (i32.const 19) (i32.const 20)))
    (drop (call $define (i32.const 0) (i32.const 448) (i32.const 19) (i32.const 24)))
    (i32.const 1))
  (func $read (param $path i32) (param $len i32)
    (drop (call $property (local.get $path) (local.get $len) (i32.const 0) (i32.const 8))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 65536))
    (call $read (i32.const 64) (i32.const 35))
    (call $read (i32.const 128) (i32.const 14))
    (call $read (i32.const 192) (i32.const 19))
    (call $read (i32.const 256) (i32.const 32))
    (call $read (i32.const 320) (i32.const 16))
    (drop (call $pairs (i32.const 0) (i32.const 0) (i32.const 8)))
    (drop (call $log (i32.const 2) (i32.const 1024) (i32.const 639)))
    (drop (call $increment (i32.load (i32.const 16)) (i64.const 1)))
    (drop (call $increment (i32.load (i32.const 20)) (i64.const 1)))
    (drop (call $increment (i32.load (i32.const 24)) (i64.const 1)))
    (i32.const 0))
  (func (export "proxy_on_new_connection") (param i32) (result i32)
    (global.set $heap (i32.const 65536))
    (call $read (i32.const 64) (i32.const 35))
    (call $read (i32.const 512) (i32.const 36))
    (call $read (i32.const 576) (i32.const 15))
    (call $read (i32.const 128) (i32.const 14))
    (call $read (i32.const 192) (i32.const 19))
    (call $read (i32.const 256) (i32.const 32))
    (call $read (i32.const 640) (i32.const 36))
    (drop (call $log (i32.const 2) (i32.const 2048) (i32.const 346)))
    (drop (call $increment (i32.load (i32.const 16)) (i64.const 1)))
    (drop (call $increment (i32.load (i32.const 20)) (i64.const 1)))
    (drop (call $increment (i32.load (i32.const 24)) (i64.const 1)))
    ;; Downstream (2): the denied client's connection.
    (drop (call $close (i32.const 2)))
    (i32.const 1))
)
