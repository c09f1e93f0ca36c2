;; Every proxy_on_request_headers adds 1 to the little-endian u32 in shared data "counter" with
;; a compare-and-swap loop: read value and CAS, write value + 1 with that CAS, retry on
;; CAS_MISMATCH (each retry counted in the counter metric "cas_retries"). Any other status traps.
(module
  (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 16) "counter")
  (data (i32.const 32) "cas_retries")
  (func (export "proxy_abi_version_0_2_1"))
  ;; A bump allocator that starts over at the end of its page: the host's copies are read
  ;; before the next allocation.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $size)) (i32.const 131072))
      (then (global.set $heap (i32.const 65536))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (if (call $define (i32.const 0) (i32.const 32) (i32.const 11) (i32.const 48)) (then unreachable))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $status i32)
    (loop $retry
      (if (call $get (i32.const 16) (i32.const 7) (i32.const 0) (i32.const 4) (i32.const 8))
        (then unreachable))
      (i32.store (i32.const 12) (i32.add (i32.load (i32.load (i32.const 0))) (i32.const 1)))
      (local.set $status
        (call $set (i32.const 16) (i32.const 7) (i32.const 12) (i32.const 4) (i32.load (i32.const 8))))
      (if (i32.eq (local.get $status) (i32.const 8))
        (then
          (drop (call $inc (i32.load (i32.const 48)) (i64.const 1)))
          (br $retry)))
      (if (local.get $status) (then unreachable)))
    (i32.const 0))
)
