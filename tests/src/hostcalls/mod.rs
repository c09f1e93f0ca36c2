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

const WASI_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// While proxy-wasm-cpp-host runs the module's start functions (`WasmBase::startVm`) only
/// these host calls are allowed ("module.name"; the module is any WASI one for WASI calls).
pub(crate) const ALLOWED_WHILE_STARTING: &[&str] = &[
    "env.proxy_log",
    "wasi.fd_write",
    "wasi.args_get",
    "wasi.args_sizes_get",
    "wasi.environ_get",
    "wasi.environ_sizes_get",
    "wasi.fd_prestat_get",
    "wasi.fd_prestat_dir_name",
    "wasi.clock_time_get",
    "wasi.random_get",
];

/// Inside the module's allocator (`WasmBase::allocMemory`) only these are allowed.
pub(crate) const ALLOWED_WHILE_ALLOCATING: &[&str] =
    &["env.proxy_log", "wasi.fd_write", "wasi.clock_time_get"];

/// A host call outside the allowed set while the VM restricts them traps, as cpp-host's
/// `restricted_callback` trap does.
fn allowed(caller: &Ctx<'_>, module: &str, name: &str) -> wasmtime::Result<()> {
    let Some(list) = caller.data().restricted else {
        return Ok(());
    };
    let family = if module == "env" { "env" } else { "wasi" };
    let permitted = list.iter().any(|entry| {
        entry
            .split_once('.')
            .is_some_and(|(m, n)| m == family && n == name)
    });
    if permitted {
        Ok(())
    } else {
        Err(wasmtime::Error::msg(format!(
            "restricted_callback: {module}.{name} is not allowed here"
        )))
    }
}

/// Defines every host function in a linker and returns their names as "module.name".
pub(crate) fn link(linker: &mut Linker<VmState>) -> wasmtime::Result<HashSet<String>> {
    let mut names = HashSet::new();
    define(linker, &mut names)?;
    Ok(names)
}

fn define(linker: &mut Linker<VmState>, names: &mut HashSet<String>) -> wasmtime::Result<()> {
    macro_rules! env {
        ($($module:ident: $($name:ident($($arg:ident: $ty:ty),*)),+;)*) => {$($(
            linker.func_wrap(
                "env",
                stringify!($name),
                |caller: Ctx<'_>, $($arg: $ty),*| {
                    allowed(&caller, "env", stringify!($name))?;
                    $module::$name(caller, $($arg),*)
                },
            )?;
            names.insert(concat!("env.", stringify!($name)).to_string());
        )+)*};
    }
    macro_rules! wasi {
        ($($name:literal => $f:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
            for module in WASI_MODULES {
                linker.func_wrap(module, $name, move |caller: Ctx<'_>, $($arg: $ty),*| {
                    allowed(&caller, module, $name)?;
                    wasi::$f(caller, $($arg),*)
                })?;
                names.insert(format!("{module}.{}", $name));
            }
        )*};
    }
    env! {
        logging_and_time:
            proxy_log(a0: i32, a1: i32, a2: i32),
            proxy_get_log_level(a0: i32),
            proxy_get_current_time_nanoseconds(a0: i32),
            proxy_set_tick_period_milliseconds(a0: i32);
        buffers:
            proxy_get_buffer_bytes(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32),
            proxy_get_buffer_status(a0: i32, a1: i32, a2: i32),
            proxy_set_buffer_bytes(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32);
        header_maps:
            proxy_get_header_map_value(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32),
            proxy_get_header_map_pairs(a0: i32, a1: i32, a2: i32),
            proxy_set_header_map_pairs(a0: i32, a1: i32, a2: i32),
            proxy_get_header_map_size(a0: i32, a1: i32),
            proxy_add_header_map_value(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32),
            proxy_replace_header_map_value(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32),
            proxy_remove_header_map_value(a0: i32, a1: i32, a2: i32);
        properties:
            proxy_get_property(a0: i32, a1: i32, a2: i32, a3: i32),
            proxy_set_property(a0: i32, a1: i32, a2: i32, a3: i32);
        stream_control:
            proxy_continue_stream(a0: i32),
            proxy_close_stream(a0: i32),
            proxy_send_local_response(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32, a5: i32, a6: i32, a7: i32),
            proxy_set_effective_context(a0: i32),
            proxy_done(),
            proxy_get_status(a0: i32, a1: i32, a2: i32);
        shared_data:
            proxy_get_shared_data(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32),
            proxy_set_shared_data(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32),
            proxy_register_shared_queue(a0: i32, a1: i32, a2: i32),
            proxy_resolve_shared_queue(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32),
            proxy_enqueue_shared_queue(a0: i32, a1: i32, a2: i32),
            proxy_dequeue_shared_queue(a0: i32, a1: i32, a2: i32);
        metrics:
            proxy_define_metric(a0: i32, a1: i32, a2: i32, a3: i32),
            proxy_increment_metric(a0: i32, a1: i64),
            proxy_record_metric(a0: i32, a1: i64),
            proxy_get_metric(a0: i32, a1: i32);
        callouts:
            proxy_http_call(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32, a5: i32, a6: i32, a7: i32, a8: i32, a9: i32),
            proxy_grpc_call(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32, a5: i32, a6: i32, a7: i32, a8: i32, a9: i32, a10: i32, a11: i32),
            proxy_grpc_stream(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32, a5: i32, a6: i32, a7: i32, a8: i32),
            proxy_grpc_send(a0: i32, a1: i32, a2: i32, a3: i32),
            proxy_grpc_cancel(a0: i32),
            proxy_grpc_close(a0: i32),
            proxy_call_foreign_function(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32, a5: i32);
    }
    wasi!(
        "fd_write" => wasi_fd_write(a0: i32, a1: i32, a2: i32, a3: i32),
        "fd_read" => wasi_fd_read(a0: i32, a1: i32, a2: i32, a3: i32),
        "fd_seek" => wasi_fd_seek(a0: i32, a1: i64, a2: i32, a3: i32),
        "fd_close" => wasi_fd_close(a0: i32),
        "fd_fdstat_get" => wasi_fd_fdstat_get(a0: i32, a1: i32),
        "fd_prestat_get" => wasi_fd_prestat_get(a0: i32, a1: i32),
        "fd_prestat_dir_name" => wasi_fd_prestat_dir_name(a0: i32, a1: i32, a2: i32),
        "path_open" => wasi_path_open(a0: i32, a1: i32, a2: i32, a3: i32, a4: i32, a5: i64, a6: i64, a7: i32, a8: i32),
        "environ_get" => wasi_environ_get(a0: i32, a1: i32),
        "environ_sizes_get" => wasi_environ_sizes_get(a0: i32, a1: i32),
        "args_get" => wasi_args_get(a0: i32, a1: i32),
        "args_sizes_get" => wasi_args_sizes_get(a0: i32, a1: i32),
        "clock_time_get" => wasi_clock_time_get(a0: i32, a1: i64, a2: i32),
        "random_get" => wasi_random_get(a0: i32, a1: i32),
        "proc_exit" => wasi_proc_exit(a0: i32),
    );
    Ok(())
}
