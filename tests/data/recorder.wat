;; Logs the name of every callback it gets, and acts by the first byte of its configuration
;; (or the second, after a '"', so that the JSON string "d" works too):
;;   a  allow: continue everything
;;   d  deny: HTTP local reply 403 (returning Continue: the host must still stop), TCP close
;;   c  reset the HTTP stream
;;   p  pause the HTTP request and never resume it
;;   r  reject the configuration (logs the reason at error)
;; It adds "x-seen: 1" to every response it sees in proxy_on_response_headers.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $mode (mut i32) (i32.const 97)) ;; 'a'

  (data (i32.const 100) "create")
  (data (i32.const 110) "vm_start")
  (data (i32.const 120) "configure")
  (data (i32.const 130) "request_headers")
  (data (i32.const 150) "request_body")
  (data (i32.const 170) "response_headers")
  (data (i32.const 190) "response_body")
  (data (i32.const 210) "log")
  (data (i32.const 220) "done")
  (data (i32.const 230) "delete")
  (data (i32.const 240) "new_connection")
  (data (i32.const 260) "downstream_data")
  (data (i32.const 280) "downstream_close")
  (data (i32.const 300) "upstream_data")
  (data (i32.const 320) "upstream_close")
  (data (i32.const 340) "configuration rejected: mode r asks for it")
  (data (i32.const 400) "denied by test")
  (data (i32.const 420) "no")
  ;; one header x-deny: yes, serialised: count 1, sizes 6 and 3, "x-deny\00yes\00"
  (data (i32.const 440) "\01\00\00\00\06\00\00\00\03\00\00\00x-deny\00yes\00")
  (data (i32.const 480) "x-seen")
  (data (i32.const 490) "1")

  (func $say (param $ptr i32) (param $len i32)
    (drop (call $log (i32.const 2) (local.get $ptr) (local.get $len))))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32) (call $say (i32.const 100) (i32.const 6)))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $say (i32.const 110) (i32.const 8)) (i32.const 1))
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (call $say (i32.const 120) (i32.const 9))
    ;; first byte of the configuration, or the second after a '"' (a JSON string "d")
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 2) (i32.const 8) (i32.const 12)))
    (global.set $mode (i32.load8_u (i32.load (i32.const 8))))
    (if (i32.eq (global.get $mode) (i32.const 34))
      (then (global.set $mode (i32.load8_u (i32.add (i32.load (i32.const 8)) (i32.const 1))))))
    (if (i32.eq (global.get $mode) (i32.const 114)) ;; 'r'
      (then
        (drop (call $log (i32.const 4) (i32.const 340) (i32.const 42)))
        (return (i32.const 0))))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $say (i32.const 130) (i32.const 15))
    (if (i32.eq (global.get $mode) (i32.const 100)) ;; 'd'
      (then
        (drop (call $reply (i32.const 403) (i32.const 400) (i32.const 14) (i32.const 420) (i32.const 2)
          (i32.const 440) (i32.const 23) (i32.const -1)))
        (return (i32.const 0))))
    (if (i32.eq (global.get $mode) (i32.const 99)) ;; 'c'
      (then (drop (call $close (i32.const 0)))))
    (if (i32.eq (global.get $mode) (i32.const 112)) ;; 'p'
      (then (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (call $say (i32.const 150) (i32.const 12)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $say (i32.const 170) (i32.const 16))
    (drop (call $add_header (i32.const 2) (i32.const 480) (i32.const 6) (i32.const 490) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (call $say (i32.const 190) (i32.const 13)) (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $say (i32.const 210) (i32.const 3)))
  (func (export "proxy_on_done") (param i32) (result i32) (call $say (i32.const 220) (i32.const 4)) (i32.const 1))
  (func (export "proxy_on_delete") (param i32) (call $say (i32.const 230) (i32.const 6)))
  (func (export "proxy_on_new_connection") (param i32) (result i32)
    (call $say (i32.const 240) (i32.const 14))
    (if (i32.eq (global.get $mode) (i32.const 100)) ;; 'd'
      (then (drop (call $close (i32.const 2)))))
    (i32.const 0))
  (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32)
    (call $say (i32.const 260) (i32.const 15)) (i32.const 0))
  (func (export "proxy_on_downstream_connection_close") (param i32 i32)
    (call $say (i32.const 280) (i32.const 16)))
  (func (export "proxy_on_upstream_data") (param i32 i32 i32) (result i32)
    (call $say (i32.const 300) (i32.const 13)) (i32.const 0))
  (func (export "proxy_on_upstream_connection_close") (param i32 i32)
    (call $say (i32.const 320) (i32.const 14)))
)
