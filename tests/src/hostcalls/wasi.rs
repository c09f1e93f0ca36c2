//! The WASI calls Envoy provides (modules `wasi_snapshot_preview1` and `wasi_unstable`).

use super::memory::*;
use super::{Ctx, HostResult};
use crate::abi::{errno, LogLevel};
use crate::state::VmState;

/// Largest `random_get` request (proxy-wasm-cpp-host `PROXY_WASM_HOST_WASI_RANDOM_GET_MAX_SIZE_BYTES`).
const MAX_RANDOM_BYTES: u32 = 64 * 1024;

/// stdout logs at info, stderr at error; a trailing newline is dropped (cpp-host `writevImpl`).
pub(super) fn wasi_fd_write(
    mut caller: Ctx<'_>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten_ptr: i32,
) -> HostResult {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(errno::BADF),
    };
    let mut output = Vec::new();
    for i in 0..iovs_len as u32 {
        let Some(entry_ptr) = (iovs as u32).checked_add(i.saturating_mul(8)) else {
            return Ok(errno::FAULT);
        };
        let Some(iovec) = read(&caller, entry_ptr as i32, 8) else {
            return Ok(errno::FAULT);
        };
        let buf = u32::from_le_bytes([iovec[0], iovec[1], iovec[2], iovec[3]]);
        let len = u32::from_le_bytes([iovec[4], iovec[5], iovec[6], iovec[7]]);
        if len > 0 {
            let Some(bytes) = read(&caller, buf as i32, len as i32) else {
                return Ok(errno::FAULT);
            };
            output.extend_from_slice(&bytes);
        }
    }
    let written = output.len();
    if written > 0 {
        if output.last() == Some(&b'\n') {
            output.pop();
        }
        caller.data_mut().log(level, text(output));
    }
    if !write_u32(&mut caller, nwritten_ptr, written as u32) {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_fd_read(
    _caller: Ctx<'_>,
    _fd: i32,
    _iovs: i32,
    _len: i32,
    _nread: i32,
) -> HostResult {
    Ok(errno::NOSYS)
}

pub(super) fn wasi_fd_seek(
    _caller: Ctx<'_>,
    _fd: i32,
    _offset: i64,
    _whence: i32,
    _ptr: i32,
) -> HostResult {
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_fd_close(_caller: Ctx<'_>, _fd: i32) -> HostResult {
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_fd_fdstat_get(mut caller: Ctx<'_>, fd: i32, stat_ptr: i32) -> HostResult {
    if fd != 1 && fd != 2 {
        return Ok(errno::BADF);
    }
    // filetype/flags 0, rights_base FD_WRITE (64), rights_inheriting 0.
    let mut stat = [0u8; 24];
    stat[8..16].copy_from_slice(&64u64.to_le_bytes());
    write(&mut caller, stat_ptr, &stat);
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_fd_prestat_get(_caller: Ctx<'_>, _fd: i32, _ptr: i32) -> HostResult {
    // No preopened directories.
    Ok(errno::BADF)
}

pub(super) fn wasi_fd_prestat_dir_name(
    _caller: Ctx<'_>,
    _fd: i32,
    _ptr: i32,
    _len: i32,
) -> HostResult {
    Ok(errno::NOSYS)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn wasi_path_open(
    _caller: Ctx<'_>,
    _fd: i32,
    _dirflags: i32,
    _path: i32,
    _path_len: i32,
    _oflags: i32,
    _rights_base: i64,
    _rights_inheriting: i64,
    _fdflags: i32,
    _fd_ptr: i32,
) -> HostResult {
    Ok(errno::NOENT)
}

fn environment(state: &VmState) -> Vec<Vec<u8>> {
    state
        .vm_config
        .environment
        .iter()
        .map(|(k, v)| {
            let mut entry = Vec::with_capacity(k.len() + v.len() + 2);
            entry.extend_from_slice(k.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            entry.push(0);
            entry
        })
        .collect()
}

pub(super) fn wasi_environ_sizes_get(
    mut caller: Ctx<'_>,
    count_ptr: i32,
    size_ptr: i32,
) -> HostResult {
    let env = environment(caller.data());
    let size: usize = env.iter().map(Vec::len).sum();
    if !write_u32(&mut caller, count_ptr, env.len() as u32)
        || !write_u32(&mut caller, size_ptr, size as u32)
    {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_environ_get(mut caller: Ctx<'_>, array_ptr: i32, buf_ptr: i32) -> HostResult {
    let env = environment(caller.data());
    let (mut array, mut buf) = (array_ptr as u32, buf_ptr as u32);
    for entry in env {
        if !write_u32(&mut caller, array as i32, buf) || !write(&mut caller, buf as i32, &entry) {
            return Ok(errno::FAULT);
        }
        array = array.wrapping_add(4);
        buf = buf.wrapping_add(entry.len() as u32);
    }
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_args_sizes_get(mut caller: Ctx<'_>, argc_ptr: i32, size_ptr: i32) -> HostResult {
    if !write_u32(&mut caller, argc_ptr, 0) || !write_u32(&mut caller, size_ptr, 0) {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_args_get(_caller: Ctx<'_>, _argv: i32, _buf: i32) -> HostResult {
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_clock_time_get(
    mut caller: Ctx<'_>,
    clock_id: i32,
    _precision: i64,
    time_ptr: i32,
) -> HostResult {
    let clock = &caller.data().clock;
    let now = match clock_id {
        0 => clock.realtime_nanos(),
        1 => clock.monotonic_nanos(),
        _ => return Ok(errno::NOTSUP),
    };
    if !write_u64(&mut caller, time_ptr, now) {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

pub(super) fn wasi_random_get(mut caller: Ctx<'_>, buf_ptr: i32, len: i32) -> HostResult {
    let len = len as u32;
    if len > MAX_RANDOM_BYTES {
        return Ok(errno::INVAL);
    }
    let state = caller.data_mut();
    let mut bytes = Vec::with_capacity(len as usize + 8);
    while bytes.len() < len as usize {
        bytes.extend_from_slice(&state.next_random().to_le_bytes());
    }
    bytes.truncate(len as usize);
    if !write(&mut caller, buf_ptr, &bytes) {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

/// The module asked to exit: Envoy treats it as a failure of the VM.
pub(super) fn wasi_proc_exit(mut caller: Ctx<'_>, code: i32) -> wasmtime::Result<()> {
    let message = format!("the module called proc_exit({code})");
    caller.data_mut().fatal = Some(message.clone());
    Err(wasmtime::Error::msg(message))
}
