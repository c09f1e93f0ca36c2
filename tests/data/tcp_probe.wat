;; A network filter that logs its TCP callbacks (the close callbacks with the peer type:
;; "downstream_close:2") and answers by the first byte of its configuration:
;;   c  continue everything
;;   p  pause in proxy_on_new_connection (as a filter that waits there for a decision), then
;;      continue the data callbacks it gets
;;   h  hold: pause downstream data until end_of_stream, pause all upstream data
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $mode (mut i32) (i32.const 99)) ;; 'c'

  (data (i32.const 100) "new_connection")
  (data (i32.const 120) "downstream_data")
  (data (i32.const 140) "upstream_data")
  (data (i32.const 160) "downstream_close:?")
  (data (i32.const 180) "upstream_close:?")

  (func $say (param $ptr i32) (param $len i32)
    (drop (call $log (i32.const 2) (local.get $ptr) (local.get $len))))
  ;; logs the message at $ptr whose last byte is replaced by the digit $n
  (func $say_n (param $ptr i32) (param $len i32) (param $n i32)
    (i32.store8 (i32.add (local.get $ptr) (i32.sub (local.get $len) (i32.const 1)))
      (i32.add (i32.const 48) (local.get $n)))
    (call $say (local.get $ptr) (local.get $len)))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 1) (i32.const 8) (i32.const 12)))
    (if (i32.load (i32.const 12))
      (then (global.set $mode (i32.load8_u (i32.load (i32.const 8))))))
    (i32.const 1))
  (func (export "proxy_on_new_connection") (param $ctx i32) (result i32)
    (call $say (i32.const 100) (i32.const 14))
    (i32.eq (global.get $mode) (i32.const 112))) ;; 'p': Pause (1)
  (func (export "proxy_on_downstream_data") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $say (i32.const 120) (i32.const 15))
    (if (i32.eq (global.get $mode) (i32.const 104)) ;; 'h'
      (then (return (i32.eqz (local.get $eos)))))
    (i32.const 0))
  (func (export "proxy_on_upstream_data") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $say (i32.const 140) (i32.const 13))
    (i32.eq (global.get $mode) (i32.const 104)))
  (func (export "proxy_on_downstream_connection_close") (param $ctx i32) (param $peer i32)
    (call $say_n (i32.const 160) (i32.const 18) (local.get $peer)))
  (func (export "proxy_on_upstream_connection_close") (param $ctx i32) (param $peer i32)
    (call $say_n (i32.const 180) (i32.const 16) (local.get $peer)))
)
