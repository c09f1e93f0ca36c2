//! The functions the host exports to the module: every proxy-wasm ABI v0.2.1 call (module
//! `env`) and the WASI calls Envoy provides (modules `wasi_snapshot_preview1` and
//! `wasi_unstable`).
//!
//! Status codes, their order of checks and the memory rules follow proxy-wasm-cpp-host's
//! `src/exports.cc` and Envoy's `source/extensions/common/wasm/context.cc`:
//! - every guest pointer is bounds-checked; a bad one gives `InvalidMemoryAccess` (WASI: FAULT);
//! - data returned to the module is copied into memory from `proxy_on_memory_allocate`, and an
//!   empty value is returned as a null pointer with size 0 (nothing is allocated);
//! - stream operations (continue, close, local reply) are recorded and applied after the
//!   callback returns, as Envoy defers them.
//!
//! One file per family of calls (memory, logging and time, buffers, header maps, properties,
//! stream control, shared data and queues, metrics, callouts, WASI); this module registers them.

use std::collections::HashSet;

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::state::VmState;

mod buffers;
mod callouts;
mod header_maps;
mod logging_and_time;
mod memory;
mod metrics;
mod properties;
mod shared_data;
mod stream_control;
mod wasi;

type Ctx<'a> = Caller<'a, VmState>;
type HostResult = wasmtime::Result<i32>;

fn ok() -> HostResult {
    Ok(Status::Ok.code())
}

fn status(s: Status) -> HostResult {
    Ok(s.code())
}

fn from_result(r: Result<(), Status>) -> HostResult {
    Ok(match r {
        Ok(()) => Status::Ok.code(),
        Err(s) => s.code(),
    })
}

/// Defines every host function in a linker and returns their names as "module.name".
pub(crate) fn link(linker: &mut Linker<VmState>) -> wasmtime::Result<HashSet<String>> {
    let mut names = HashSet::new();
    define(linker, &mut names)?;
    Ok(names)
}

fn define(linker: &mut Linker<VmState>, names: &mut HashSet<String>) -> wasmtime::Result<()> {
    macro_rules! env {
        ($($module:ident: $($name:ident),+;)*) => {$($(
            linker.func_wrap("env", stringify!($name), $module::$name)?;
            names.insert(concat!("env.", stringify!($name)).to_string());
        )+)*};
    }
    macro_rules! wasi {
        ($($name:literal => $f:path),* $(,)?) => {$(
            for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
                linker.func_wrap(module, $name, $f)?;
                names.insert(format!("{module}.{}", $name));
            }
        )*};
    }
    env! {
        logging_and_time:
            proxy_log,
            proxy_get_log_level,
            proxy_get_current_time_nanoseconds,
            proxy_set_tick_period_milliseconds;
        buffers:
            proxy_get_buffer_bytes,
            proxy_get_buffer_status,
            proxy_set_buffer_bytes;
        header_maps:
            proxy_get_header_map_value,
            proxy_get_header_map_pairs,
            proxy_set_header_map_pairs,
            proxy_get_header_map_size,
            proxy_add_header_map_value,
            proxy_replace_header_map_value,
            proxy_remove_header_map_value;
        properties:
            proxy_get_property,
            proxy_set_property;
        stream_control:
            proxy_continue_stream,
            proxy_close_stream,
            proxy_send_local_response,
            proxy_set_effective_context,
            proxy_done,
            proxy_get_status;
        shared_data:
            proxy_get_shared_data,
            proxy_set_shared_data,
            proxy_register_shared_queue,
            proxy_resolve_shared_queue,
            proxy_enqueue_shared_queue,
            proxy_dequeue_shared_queue;
        metrics:
            proxy_define_metric,
            proxy_increment_metric,
            proxy_record_metric,
            proxy_get_metric;
        callouts:
            proxy_http_call,
            proxy_grpc_call,
            proxy_grpc_stream,
            proxy_grpc_send,
            proxy_grpc_cancel,
            proxy_grpc_close,
            proxy_call_foreign_function;
    }
    wasi!(
        "fd_write" => wasi::wasi_fd_write,
        "fd_read" => wasi::wasi_fd_read,
        "fd_seek" => wasi::wasi_fd_seek,
        "fd_close" => wasi::wasi_fd_close,
        "fd_fdstat_get" => wasi::wasi_fd_fdstat_get,
        "fd_prestat_get" => wasi::wasi_fd_prestat_get,
        "fd_prestat_dir_name" => wasi::wasi_fd_prestat_dir_name,
        "path_open" => wasi::wasi_path_open,
        "environ_get" => wasi::wasi_environ_get,
        "environ_sizes_get" => wasi::wasi_environ_sizes_get,
        "args_get" => wasi::wasi_args_get,
        "args_sizes_get" => wasi::wasi_args_sizes_get,
        "clock_time_get" => wasi::wasi_clock_time_get,
        "random_get" => wasi::wasi_random_get,
        "proc_exit" => wasi::wasi_proc_exit,
    );
    Ok(())
}
