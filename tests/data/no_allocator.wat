;; A proxy-wasm module without proxy_on_memory_allocate or malloc.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
)
