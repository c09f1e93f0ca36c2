;; Rate-limits everything: HTTP gets a 429 local reply; a TCP connection is closed after a
;; decision line saying "ratelimited".
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{\"event\":\"decision\",\"kind\":\"tcp\",\"decision\":\"ratelimited\",\"policy\":\"burst\",\"reason\":\"rate_limited\"}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 32768))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 429) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_new_connection") (param i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 64) (i32.const 99)))
    (drop (call $close (i32.const 2)))
    (i32.const 1))
)
