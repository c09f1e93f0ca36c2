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

use std::collections::HashSet;

use wasmtime::{Caller, Linker};

use crate::abi::{errno, BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use crate::headers::HeaderMap;
use crate::properties;
use crate::state::{
    LocalReplyRequest, PendingGrpcCall, PendingHttpCall, StreamProtocol, Timer, VmState,
};
use crate::worker::{GrpcCallout, HttpCallout};

type Ctx<'a> = Caller<'a, VmState>;
type HostResult = wasmtime::Result<i32>;

/// Largest `random_get` request (proxy-wasm-cpp-host `PROXY_WASM_HOST_WASI_RANDOM_GET_MAX_SIZE_BYTES`).
const MAX_RANDOM_BYTES: u32 = 64 * 1024;

/// The largest valid gRPC status code (Envoy `Grpc::Status::WellKnownGrpcStatus::MaximumKnown`).
const MAX_GRPC_STATUS: u32 = 16;

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

// ---------------------------------------------------------------------------------------------
// Guest memory
// ---------------------------------------------------------------------------------------------

/// The `len` bytes at `ptr` in guest memory, or `None` if the range is out of bounds.
fn slice<'a>(caller: &'a Ctx<'_>, ptr: i32, len: i32) -> Option<&'a [u8]> {
    let memory = caller.data().memory?;
    let data = memory.data(caller);
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    data.get(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
fn read(caller: &Ctx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    slice(caller, ptr, len).map(<[u8]>::to_vec)
}

fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(memory) = caller.data().memory else {
        return false;
    };
    let data = memory.data_mut(caller);
    let start = ptr as u32 as usize;
    let Some(end) = start.checked_add(bytes.len()) else {
        return false;
    };
    match data.get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

fn write_u64(caller: &mut Ctx<'_>, ptr: i32, value: u64) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates in the module with its allocator. A trap inside the allocator is a trap of the
/// host call; a null or out-of-bounds result is `None`.
fn allocate(caller: &mut Ctx<'_>, size: usize) -> wasmtime::Result<Option<u32>> {
    let Some(malloc) = caller.data().malloc.clone() else {
        return Ok(None);
    };
    let Ok(size_arg) = i32::try_from(size) else {
        return Ok(None);
    };
    let ptr = malloc.call(&mut *caller, size_arg)? as u32;
    let memory_size = caller
        .data()
        .memory
        .map_or(0, |m| m.data_size(&*caller) as u64);
    if ptr == 0 || u64::from(ptr) + size as u64 > memory_size {
        return Ok(None);
    }
    Ok(Some(ptr))
}

/// proxy-wasm-cpp-host `copyToPointerSize`: hands `bytes` to the module in newly allocated
/// memory and writes the pointer and size. Returns false on a memory error.
fn copy_out(
    caller: &mut Ctx<'_>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<bool> {
    let mut pointer = 0u32;
    if !bytes.is_empty() {
        let Some(p) = allocate(caller, bytes.len())? else {
            return Ok(false);
        };
        if !write(caller, p as i32, bytes) {
            return Ok(false);
        }
        pointer = p;
    }
    Ok(write_u32(caller, ptr_ptr, pointer) && write_u32(caller, size_ptr, bytes.len() as u32))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Text from bytes the host already owns: no copy when they are valid UTF-8.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Logging, time, timers
// ---------------------------------------------------------------------------------------------

fn proxy_log(mut caller: Ctx<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    let Some(level) = LogLevel::from_raw(level as u32) else {
        return status(Status::BadArgument);
    };
    let Some(message) = read(&caller, ptr, len) else {
        return status(Status::InvalidMemoryAccess);
    };
    caller.data_mut().log(level, text(message));
    ok()
}

fn proxy_get_log_level(mut caller: Ctx<'_>, ptr: i32) -> HostResult {
    let level = caller.data().options.log_level as u32;
    if !write_u32(&mut caller, ptr, level) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_get_current_time_nanoseconds(mut caller: Ctx<'_>, ptr: i32) -> HostResult {
    let now = caller.data().clock.realtime_nanos();
    if !write_u64(&mut caller, ptr, now) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_set_tick_period_milliseconds(mut caller: Ctx<'_>, period: i32) -> HostResult {
    let state = caller.data_mut();
    let root = state.active_root_id();
    let period_nanos = u64::from(period as u32) * 1_000_000;
    if period_nanos == 0 {
        state.timers.remove(&root);
    } else {
        let next_due = state.clock.monotonic_nanos().saturating_add(period_nanos);
        state.timers.insert(
            root,
            Timer {
                period_nanos,
                next_due,
            },
        );
    }
    ok()
}

// ---------------------------------------------------------------------------------------------
// Buffers
// ---------------------------------------------------------------------------------------------

/// Envoy `Context::getBuffer`: the bytes of a buffer as the active context sees them, or
/// `None` when the buffer is not available (`NotFound`).
fn buffer_view(state: &VmState, buffer: BufferType) -> Option<&[u8]> {
    let ctx = state.active();
    let root = state.contexts.get(&ctx.root_id).and_then(|c| c.root());
    match buffer {
        BufferType::CallData => Some(&state.call_data),
        BufferType::VmConfiguration => Some(&state.vm_config.configuration),
        BufferType::PluginConfiguration => ctx.root()?.configuring.as_deref().map(Vec::as_slice),
        BufferType::HttpRequestBody => Some(ctx.http().map_or(&[][..], |h| &h.request_body)),
        BufferType::HttpResponseBody => Some(ctx.http().map_or(&[][..], |h| &h.response_body)),
        BufferType::DownstreamData | BufferType::UpstreamData => {
            let Some(StreamProtocol::Tcp(tcp)) = ctx.stream().map(|s| &s.protocol) else {
                return Some(&[]);
            };
            Some(if buffer == BufferType::DownstreamData {
                &tcp.downstream
            } else {
                &tcp.upstream
            })
        }
        BufferType::HttpCallResponseBody => {
            root?.http_call_response.as_ref().map(|r| r.body.as_slice())
        }
        BufferType::GrpcReceiveBuffer => Some(root.map_or(&[][..], |r| &r.grpc_message)),
    }
}

/// The mutable buffer behind `proxy_set_buffer_bytes`, if the buffer can be changed.
fn buffer_mut(state: &mut VmState, buffer: BufferType) -> Option<&mut Vec<u8>> {
    let ctx = state.active_mut();
    match buffer {
        BufferType::HttpRequestBody => ctx.http_mut().map(|h| &mut h.request_body),
        BufferType::HttpResponseBody => ctx.http_mut().map(|h| &mut h.response_body),
        BufferType::DownstreamData => ctx.tcp_mut().map(|t| &mut t.downstream),
        BufferType::UpstreamData => ctx.tcp_mut().map(|t| &mut t.upstream),
        _ => None,
    }
}

fn proxy_get_buffer_bytes(
    mut caller: Ctx<'_>,
    buffer: i32,
    start: i32,
    max_size: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> HostResult {
    let Some(buffer) = BufferType::from_raw(buffer as u32) else {
        return status(Status::BadArgument);
    };
    let Some(bytes) = buffer_view(caller.data(), buffer) else {
        return status(Status::NotFound);
    };
    let start = start as u32 as usize;
    if start > bytes.len() {
        return status(Status::BadArgument);
    }
    // Reads past the end are cut short, as Envoy does ("don't overread").
    let length = (max_size as u32 as usize).min(bytes.len() - start);
    if length == 0 {
        return ok();
    }
    let chunk = bytes[start..start + length].to_vec();
    if !copy_out(&mut caller, &chunk, ptr_ptr, size_ptr)? {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_get_buffer_status(
    mut caller: Ctx<'_>,
    buffer: i32,
    size_ptr: i32,
    flags_ptr: i32,
) -> HostResult {
    let Some(buffer) = BufferType::from_raw(buffer as u32) else {
        return status(Status::BadArgument);
    };
    let Some(size) = buffer_view(caller.data(), buffer).map(<[u8]>::len) else {
        return status(Status::NotFound);
    };
    if !write_u32(&mut caller, size_ptr, size as u32) || !write_u32(&mut caller, flags_ptr, 0) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_set_buffer_bytes(
    mut caller: Ctx<'_>,
    buffer: i32,
    start: i32,
    size: i32,
    data_ptr: i32,
    data_size: i32,
) -> HostResult {
    let Some(buffer) = BufferType::from_raw(buffer as u32) else {
        return status(Status::BadArgument);
    };
    if buffer_view(caller.data(), buffer).is_none() {
        return status(Status::NotFound);
    }
    let Some(data) = read(&caller, data_ptr, data_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let Some(target) = buffer_mut(caller.data_mut(), buffer) else {
        // Configuration, call data and callout buffers are read-only.
        return status(Status::BadArgument);
    };
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    // Envoy `Buffer::copyFrom`: prepend, replace all, or append; nothing in between.
    if start == 0 {
        if size == 0 {
            target.splice(0..0, data);
        } else if size >= target.len() {
            *target = data;
        } else {
            return status(Status::BadArgument);
        }
    } else if start >= target.len() {
        target.extend_from_slice(&data);
    } else {
        return status(Status::BadArgument);
    }
    ok()
}

// ---------------------------------------------------------------------------------------------
// Header maps
// ---------------------------------------------------------------------------------------------

/// Envoy `Context::getConstMap`: the map readable from the active context.
fn map_view(state: &VmState, map: MapType) -> Option<&HeaderMap> {
    let ctx = state.active();
    let root = state.contexts.get(&ctx.root_id).and_then(|c| c.root());
    let http = ctx.http();
    match map {
        MapType::HttpRequestHeaders => http?.visible_request_headers(),
        MapType::HttpRequestTrailers => {
            let h = http?;
            if h.access_log_phase {
                None
            } else {
                h.request_trailers.as_ref()
            }
        }
        MapType::HttpResponseHeaders => http?.visible_response_headers(),
        MapType::HttpResponseTrailers => http?.response_trailers.as_ref(),
        MapType::GrpcReceiveInitialMetadata => root?.grpc_initial_metadata.as_ref(),
        MapType::GrpcReceiveTrailingMetadata => root?.grpc_trailing_metadata.as_ref(),
        MapType::HttpCallResponseHeaders => root?.http_call_response.as_ref().map(|r| &r.headers),
        MapType::HttpCallResponseTrailers => root?.http_call_response.as_ref().map(|r| &r.trailers),
    }
}

/// Envoy `Context::getMap`: the map the active context may change. Trailers can be added from
/// the last body callback.
fn map_mut(state: &mut VmState, map: MapType) -> Option<&mut HeaderMap> {
    let h = state.active_mut().http_mut()?;
    match map {
        MapType::HttpRequestHeaders => h.request_headers_live.then_some(&mut h.request_headers),
        MapType::HttpRequestTrailers => {
            if h.request_trailers.is_none() && h.request_end_of_stream {
                h.request_trailers = Some(HeaderMap::other());
            }
            h.request_trailers.as_mut()
        }
        MapType::HttpResponseHeaders => {
            if h.response_headers_live {
                h.response_headers.as_mut()
            } else {
                None
            }
        }
        MapType::HttpResponseTrailers => {
            if h.response_trailers.is_none() && h.response_end_of_stream {
                h.response_trailers = Some(HeaderMap::other());
            }
            h.response_trailers.as_mut()
        }
        _ => None,
    }
}

fn map_type(raw: i32) -> Option<MapType> {
    MapType::from_raw(raw as u32)
}

fn proxy_get_header_map_value(
    mut caller: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_size: i32,
    value_ptr_ptr: i32,
    value_size_ptr: i32,
) -> HostResult {
    let Some(map) = map_type(map) else {
        return status(Status::BadArgument);
    };
    let Some(key) = slice(&caller, key_ptr, key_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let state = caller.data();
    let value = match map_view(state, map) {
        Some(headers) => match headers.get(key) {
            Some(v) => v.to_vec(),
            None => return status(Status::NotFound),
        },
        None => {
            let access_log = state.active().http().is_some_and(|h| h.access_log_phase);
            // A map that is not available now is a bad argument, except while logging.
            return status(if access_log {
                Status::NotFound
            } else {
                Status::BadArgument
            });
        }
    };
    if !copy_out(&mut caller, &value, value_ptr_ptr, value_size_ptr)? {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_get_header_map_pairs(
    mut caller: Ctx<'_>,
    map: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> HostResult {
    let Some(map) = map_type(map) else {
        return status(Status::BadArgument);
    };
    // An unavailable map reads as empty (Envoy `getHeaderMapPairs` always succeeds).
    let serialized = match map_view(caller.data(), map) {
        Some(headers) if !headers.is_empty() => headers.serialize(),
        _ => Vec::new(),
    };
    if !copy_out(&mut caller, &serialized, ptr_ptr, size_ptr)? {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_set_header_map_pairs(mut caller: Ctx<'_>, map: i32, ptr: i32, size: i32) -> HostResult {
    let Some(map) = map_type(map) else {
        return status(Status::BadArgument);
    };
    let Some(data) = read(&caller, ptr, size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let pairs = crate::pairs::decode(&data).unwrap_or_default();
    match map_mut(caller.data_mut(), map) {
        Some(headers) => {
            headers.set_all(pairs);
            ok()
        }
        None => status(Status::BadArgument),
    }
}

fn proxy_get_header_map_size(mut caller: Ctx<'_>, map: i32, size_ptr: i32) -> HostResult {
    let Some(map) = map_type(map) else {
        return status(Status::BadArgument);
    };
    let Some(size) = map_mut(caller.data_mut(), map).map(|h| h.byte_size()) else {
        return status(Status::BadArgument);
    };
    if !write_u32(&mut caller, size_ptr, size as u32) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

/// add / replace / remove share their checks: map type, then memory, then availability.
fn edit_header_map(
    mut caller: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_size: i32,
    value: Option<(i32, i32)>,
    edit: impl FnOnce(&mut HeaderMap, Vec<u8>, Vec<u8>),
) -> HostResult {
    let Some(map) = map_type(map) else {
        return status(Status::BadArgument);
    };
    let Some(key) = read(&caller, key_ptr, key_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let value = match value {
        Some((ptr, size)) => match read(&caller, ptr, size) {
            Some(v) => v,
            None => return status(Status::InvalidMemoryAccess),
        },
        None => Vec::new(),
    };
    match map_mut(caller.data_mut(), map) {
        Some(headers) => {
            edit(headers, key, value);
            ok()
        }
        None => status(Status::BadArgument),
    }
}

fn proxy_add_header_map_value(
    caller: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_size: i32,
    value_ptr: i32,
    value_size: i32,
) -> HostResult {
    edit_header_map(
        caller,
        map,
        key_ptr,
        key_size,
        Some((value_ptr, value_size)),
        |h, k, v| h.add(k, v),
    )
}

fn proxy_replace_header_map_value(
    caller: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_size: i32,
    value_ptr: i32,
    value_size: i32,
) -> HostResult {
    edit_header_map(
        caller,
        map,
        key_ptr,
        key_size,
        Some((value_ptr, value_size)),
        |h, k, v| h.replace(k, v),
    )
}

fn proxy_remove_header_map_value(
    caller: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_size: i32,
) -> HostResult {
    edit_header_map(caller, map, key_ptr, key_size, None, |h, k, _| h.remove(k))
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn proxy_get_property(
    mut caller: Ctx<'_>,
    path_ptr: i32,
    path_size: i32,
    value_ptr_ptr: i32,
    value_size_ptr: i32,
) -> HostResult {
    let Some(path) = slice(&caller, path_ptr, path_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let state = caller.data();
    let env = properties::PropertyEnv {
        vm_id: &state.vm_config.vm_id,
        local_principal: &state.options.local_principal,
    };
    let value = match properties::get(state.active(), &env, path) {
        Ok(v) => v,
        Err(s) => return status(s),
    };
    if !copy_out(&mut caller, &value, value_ptr_ptr, value_size_ptr)? {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_set_property(
    mut caller: Ctx<'_>,
    path_ptr: i32,
    path_size: i32,
    value_ptr: i32,
    value_size: i32,
) -> HostResult {
    let (Some(path), Some(value)) = (
        read(&caller, path_ptr, path_size),
        read(&caller, value_ptr, value_size),
    ) else {
        return status(Status::InvalidMemoryAccess);
    };
    from_result(properties::set(
        caller.data_mut().active_mut(),
        &path,
        &value,
    ))
}

// ---------------------------------------------------------------------------------------------
// Stream control
// ---------------------------------------------------------------------------------------------

fn proxy_continue_stream(mut caller: Ctx<'_>, stream: i32) -> HostResult {
    let Some(stream) = StreamType::from_raw(stream as u32) else {
        return status(Status::BadArgument);
    };
    if stream == StreamType::Upstream {
        return status(Status::Unimplemented);
    }
    let ctx = caller.data_mut().active_mut();
    if let Some(s) = ctx.stream_mut() {
        match stream {
            StreamType::HttpRequest => s.requests.continue_request = true,
            StreamType::HttpResponse => s.requests.continue_response = true,
            StreamType::Downstream => s.requests.continue_downstream = true,
            StreamType::Upstream => {}
        }
    }
    // Envoy drops its request map pointers on any HTTP continue, at once.
    if matches!(stream, StreamType::HttpRequest | StreamType::HttpResponse) {
        if let Some(h) = ctx.http_mut() {
            h.request_headers_live = false;
            h.request_trailers = None;
        }
    }
    ok()
}

fn proxy_close_stream(mut caller: Ctx<'_>, stream: i32) -> HostResult {
    let Some(stream) = StreamType::from_raw(stream as u32) else {
        return status(Status::BadArgument);
    };
    let ctx = caller.data_mut().active_mut();
    let Some(s) = ctx.stream_mut() else {
        return ok();
    };
    let applies = matches!(
        (&s.protocol, stream),
        (
            StreamProtocol::Http(_),
            StreamType::HttpRequest | StreamType::HttpResponse
        ) | (
            StreamProtocol::Tcp(_),
            StreamType::Downstream | StreamType::Upstream
        )
    );
    if applies && s.requests.close.is_none() {
        s.requests.close = Some(stream);
        if let StreamProtocol::Http(h) = &mut s.protocol {
            h.response_details
                .get_or_insert_with(|| "wasm_close_stream".to_string());
        }
    }
    ok()
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    mut caller: Ctx<'_>,
    status_code: i32,
    details_ptr: i32,
    details_size: i32,
    body_ptr: i32,
    body_size: i32,
    headers_ptr: i32,
    headers_size: i32,
    grpc_status: i32,
) -> HostResult {
    let (Some(details), Some(body), Some(headers)) = (
        read(&caller, details_ptr, details_size),
        read(&caller, body_ptr, body_size),
        read(&caller, headers_ptr, headers_size),
    ) else {
        return status(Status::InvalidMemoryAccess);
    };
    let headers = crate::pairs::decode(&headers).unwrap_or_default();
    let details: String = lossy(&details)
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    let grpc_status = u32::try_from(grpc_status)
        .ok()
        .filter(|s| *s <= MAX_GRPC_STATUS);
    if let Some(s) = caller.data_mut().active_mut().stream_mut() {
        // Only HTTP filters have decoder callbacks; elsewhere Envoy does nothing.
        if matches!(s.protocol, StreamProtocol::Http(_)) && s.requests.local_reply.is_none() {
            s.requests.local_reply = Some(LocalReplyRequest {
                status: status_code as u32,
                details,
                body,
                headers,
                grpc_status,
            });
        }
        // proxy-wasm-cpp-host stops the next iteration whatever the callback returns.
        s.requests.stop_iteration = true;
    }
    ok()
}

fn proxy_set_effective_context(mut caller: Ctx<'_>, context_id: i32) -> HostResult {
    let state = caller.data_mut();
    let id = context_id as u32;
    if !state.contexts.contains_key(&id) {
        return status(Status::BadArgument);
    }
    state.effective_context = id;
    ok()
}

fn proxy_done(mut caller: Ctx<'_>) -> HostResult {
    let state = caller.data_mut();
    let id = state.active_id();
    match state.pending_done.iter().position(|c| *c == id) {
        Some(i) => {
            state.pending_done.remove(i);
            state.done_released.push(id);
            ok()
        }
        None => status(Status::NotFound),
    }
}

fn proxy_get_status(
    mut caller: Ctx<'_>,
    code_ptr: i32,
    msg_ptr_ptr: i32,
    msg_size_ptr: i32,
) -> HostResult {
    let state = caller.data();
    let (code, message) = state
        .contexts
        .get(&state.active_root_id())
        .and_then(|c| c.root())
        .map(|r| r.status.clone())
        .unwrap_or_default();
    if !write_u32(&mut caller, code_ptr, code) {
        return status(Status::InvalidMemoryAccess);
    }
    if !copy_out(&mut caller, &message, msg_ptr_ptr, msg_size_ptr)? {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

// ---------------------------------------------------------------------------------------------
// Shared data and queues
// ---------------------------------------------------------------------------------------------

fn proxy_get_shared_data(
    mut caller: Ctx<'_>,
    key_ptr: i32,
    key_size: i32,
    value_ptr_ptr: i32,
    value_size_ptr: i32,
    cas_ptr: i32,
) -> HostResult {
    let Some(key) = read(&caller, key_ptr, key_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let state = caller.data();
    let (value, cas) = match state.shared.data.get(&state.vm_config.vm_id, &key) {
        Ok(found) => found,
        Err(s) => return status(s),
    };
    if !copy_out(&mut caller, &value, value_ptr_ptr, value_size_ptr)?
        || !write_u32(&mut caller, cas_ptr, cas)
    {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_set_shared_data(
    caller: Ctx<'_>,
    key_ptr: i32,
    key_size: i32,
    value_ptr: i32,
    value_size: i32,
    cas: i32,
) -> HostResult {
    let (Some(key), Some(value)) = (
        read(&caller, key_ptr, key_size),
        read(&caller, value_ptr, value_size),
    ) else {
        return status(Status::InvalidMemoryAccess);
    };
    let state = caller.data();
    from_result(
        state
            .shared
            .data
            .set(&state.vm_config.vm_id, &key, &value, cas as u32),
    )
}

fn proxy_register_shared_queue(
    mut caller: Ctx<'_>,
    name_ptr: i32,
    name_size: i32,
    token_ptr: i32,
) -> HostResult {
    let Some(name) = read(&caller, name_ptr, name_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let state = caller.data();
    // on_queue_ready goes to the root context, even when a stream registers the queue.
    let owner = crate::shared::QueueOwner {
        vm_instance: state.vm_instance,
        root_context_id: state.active_root_id(),
    };
    let token = state
        .shared
        .queues
        .register(&state.vm_config.vm_id, &name, owner);
    if !write_u32(&mut caller, token_ptr, token) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_resolve_shared_queue(
    mut caller: Ctx<'_>,
    vm_id_ptr: i32,
    vm_id_size: i32,
    name_ptr: i32,
    name_size: i32,
    token_ptr: i32,
) -> HostResult {
    let (Some(vm_id), Some(name)) = (
        read(&caller, vm_id_ptr, vm_id_size),
        read(&caller, name_ptr, name_size),
    ) else {
        return status(Status::InvalidMemoryAccess);
    };
    let Some(token) = caller.data().shared.queues.resolve(&lossy(&vm_id), &name) else {
        return status(Status::NotFound);
    };
    if !write_u32(&mut caller, token_ptr, token) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_enqueue_shared_queue(
    caller: Ctx<'_>,
    token: i32,
    value_ptr: i32,
    value_size: i32,
) -> HostResult {
    let Some(value) = read(&caller, value_ptr, value_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    from_result(caller.data().shared.queues.enqueue(token as u32, &value))
}

fn proxy_dequeue_shared_queue(
    mut caller: Ctx<'_>,
    token: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> HostResult {
    let value = match caller.data().shared.queues.dequeue(token as u32) {
        Ok(v) => v,
        Err(s) => return status(s),
    };
    if !copy_out(&mut caller, &value, ptr_ptr, size_ptr)? {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Envoy encodes the metric type in the two low bits of the id.
fn metric_kind_of_id(id: u32) -> Option<MetricType> {
    MetricType::from_raw(id & 0x3)
}

fn proxy_define_metric(
    mut caller: Ctx<'_>,
    kind: i32,
    name_ptr: i32,
    name_size: i32,
    id_ptr: i32,
) -> HostResult {
    let Some(name) = read(&caller, name_ptr, name_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let Some(kind) = MetricType::from_raw(kind as u32) else {
        return status(Status::BadArgument);
    };
    let state = caller.data_mut();
    let cell = state.shared.metrics.define(kind, &lossy(&name));
    let slot = kind as usize;
    let id = state.next_metric_ids[slot];
    state.next_metric_ids[slot] = id.wrapping_add(4);
    state.metrics.insert(id, cell);
    if !write_u32(&mut caller, id_ptr, id) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

fn proxy_increment_metric(caller: Ctx<'_>, id: i32, offset: i64) -> HostResult {
    let id = id as u32;
    match metric_kind_of_id(id) {
        Some(MetricType::Counter | MetricType::Gauge) => match caller.data().metrics.get(&id) {
            Some(cell) => from_result(cell.increment(offset)),
            None => status(Status::NotFound),
        },
        _ => status(Status::BadArgument),
    }
}

fn proxy_record_metric(caller: Ctx<'_>, id: i32, value: i64) -> HostResult {
    match caller.data().metrics.get(&(id as u32)) {
        Some(cell) => {
            cell.record(value as u64);
            ok()
        }
        None => status(Status::NotFound),
    }
}

fn proxy_get_metric(mut caller: Ctx<'_>, id: i32, value_ptr: i32) -> HostResult {
    let id = id as u32;
    let value = match metric_kind_of_id(id) {
        Some(MetricType::Counter | MetricType::Gauge) => match caller.data().metrics.get(&id) {
            Some(cell) => cell.value().unwrap_or(0),
            None => return status(Status::NotFound),
        },
        _ => return status(Status::BadArgument),
    };
    if !write_u64(&mut caller, value_ptr, value) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

// ---------------------------------------------------------------------------------------------
// HTTP and gRPC callouts
// ---------------------------------------------------------------------------------------------

fn known_cluster(state: &VmState, name: &str) -> bool {
    state.options.clusters.iter().any(|c| c == name)
}

fn pairs_to_strings(bytes: &[u8]) -> Vec<(String, String)> {
    crate::pairs::decode(bytes)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (lossy(&k), lossy(&v)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    mut caller: Ctx<'_>,
    upstream_ptr: i32,
    upstream_size: i32,
    headers_ptr: i32,
    headers_size: i32,
    body_ptr: i32,
    body_size: i32,
    trailers_ptr: i32,
    trailers_size: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> HostResult {
    let (Some(upstream), Some(body), Some(headers), Some(trailers)) = (
        read(&caller, upstream_ptr, upstream_size),
        read(&caller, body_ptr, body_size),
        read(&caller, headers_ptr, headers_size),
        read(&caller, trailers_ptr, trailers_size),
    ) else {
        return status(Status::InvalidMemoryAccess);
    };
    // The token's memory is checked before the call starts.
    if !write_u32(&mut caller, token_ptr, 0) {
        return status(Status::InvalidMemoryAccess);
    }
    let upstream = lossy(&upstream);
    let headers = pairs_to_strings(&headers);
    let state = caller.data_mut();
    if timeout_ms < 0 || !known_cluster(state, &upstream) {
        return status(Status::BadArgument);
    }
    let mut request_headers = HeaderMap::request();
    for (k, v) in &headers {
        request_headers.add(k, v);
    }
    if [":path", ":method", ":authority"]
        .iter()
        .any(|h| request_headers.get(h).is_none())
    {
        return status(Status::BadArgument);
    }
    state.last_http_call = state.last_http_call.wrapping_add(1).max(1);
    let token = state.last_http_call;
    let root_context_id = state.active_root_id();
    state.http_calls.insert(
        token,
        PendingHttpCall {
            root_context_id,
            call: HttpCallout {
                token,
                upstream,
                headers,
                body,
                trailers: pairs_to_strings(&trailers),
                timeout_ms: timeout_ms as u32,
            },
        },
    );
    write_u32(&mut caller, token_ptr, token);
    ok()
}

/// Envoy gives gRPC calls odd tokens and gRPC streams even ones.
fn next_grpc_token(state: &mut VmState, streaming: bool) -> u32 {
    let mut token = state.last_grpc_call.wrapping_add(1).max(1);
    if token.is_multiple_of(2) != streaming {
        token = token.wrapping_add(1).max(1);
    }
    state.last_grpc_call = token;
    token
}

#[allow(clippy::too_many_arguments)]
fn start_grpc(
    mut caller: Ctx<'_>,
    service: (i32, i32),
    service_name: (i32, i32),
    method: (i32, i32),
    metadata: (i32, i32),
    message: Option<(i32, i32)>,
    timeout_ms: Option<i32>,
    token_ptr: i32,
) -> HostResult {
    let (Some(upstream), Some(service_name), Some(method), Some(metadata)) = (
        read(&caller, service.0, service.1),
        read(&caller, service_name.0, service_name.1),
        read(&caller, method.0, method.1),
        read(&caller, metadata.0, metadata.1),
    ) else {
        return status(Status::InvalidMemoryAccess);
    };
    let message = match message {
        Some((ptr, size)) => match read(&caller, ptr, size) {
            Some(m) => Some(m),
            None => return status(Status::InvalidMemoryAccess),
        },
        None => None,
    };
    let upstream = lossy(&upstream);
    let state = caller.data_mut();
    if !known_cluster(state, &upstream) {
        return status(Status::ParseFailure);
    }
    let streaming = message.is_none();
    let token = next_grpc_token(state, streaming);
    let root_context_id = state.active_root_id();
    state.grpc_calls.insert(
        token,
        PendingGrpcCall {
            root_context_id,
            call: GrpcCallout {
                token,
                upstream,
                service: lossy(&service_name),
                method: lossy(&method),
                initial_metadata: pairs_to_strings(&metadata),
                messages: message.into_iter().collect(),
                streaming,
                timeout_ms: timeout_ms.map(|t| t as u32),
                closed_by_module: false,
            },
        },
    );
    if !write_u32(&mut caller, token_ptr, token) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_call(
    caller: Ctx<'_>,
    service_ptr: i32,
    service_size: i32,
    service_name_ptr: i32,
    service_name_size: i32,
    method_ptr: i32,
    method_size: i32,
    metadata_ptr: i32,
    metadata_size: i32,
    message_ptr: i32,
    message_size: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> HostResult {
    start_grpc(
        caller,
        (service_ptr, service_size),
        (service_name_ptr, service_name_size),
        (method_ptr, method_size),
        (metadata_ptr, metadata_size),
        Some((message_ptr, message_size)),
        Some(timeout_ms),
        token_ptr,
    )
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_stream(
    caller: Ctx<'_>,
    service_ptr: i32,
    service_size: i32,
    service_name_ptr: i32,
    service_name_size: i32,
    method_ptr: i32,
    method_size: i32,
    metadata_ptr: i32,
    metadata_size: i32,
    token_ptr: i32,
) -> HostResult {
    start_grpc(
        caller,
        (service_ptr, service_size),
        (service_name_ptr, service_name_size),
        (method_ptr, method_size),
        (metadata_ptr, metadata_size),
        None,
        None,
        token_ptr,
    )
}

fn proxy_grpc_send(
    mut caller: Ctx<'_>,
    token: i32,
    message_ptr: i32,
    message_size: i32,
    end_stream: i32,
) -> HostResult {
    let Some(message) = read(&caller, message_ptr, message_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let token = token as u32;
    if !token.is_multiple_of(2) {
        // A call token, not a stream.
        return status(Status::BadArgument);
    }
    match caller.data_mut().grpc_calls.get_mut(&token) {
        Some(pending) => {
            pending.call.messages.push(message);
            if end_stream != 0 {
                pending.call.closed_by_module = true;
            }
            ok()
        }
        None => status(Status::NotFound),
    }
}

fn proxy_grpc_cancel(mut caller: Ctx<'_>, token: i32) -> HostResult {
    match caller.data_mut().grpc_calls.remove(&(token as u32)) {
        Some(_) => ok(),
        None => status(Status::NotFound),
    }
}

fn proxy_grpc_close(mut caller: Ctx<'_>, token: i32) -> HostResult {
    match caller.data_mut().grpc_calls.get_mut(&(token as u32)) {
        Some(pending) => {
            pending.call.closed_by_module = true;
            ok()
        }
        None => status(Status::NotFound),
    }
}

fn proxy_call_foreign_function(
    mut caller: Ctx<'_>,
    name_ptr: i32,
    name_size: i32,
    args_ptr: i32,
    args_size: i32,
    results_ptr: i32,
    results_size_ptr: i32,
) -> HostResult {
    let Some(name) = read(&caller, name_ptr, name_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let Some(args) = read(&caller, args_ptr, args_size) else {
        return status(Status::InvalidMemoryAccess);
    };
    let name = lossy(&name);
    let result = if name == "clear_route_cache" {
        Ok(Vec::new())
    } else {
        match caller.data().options.foreign_functions.get(&name) {
            Some(f) => f(&args),
            None => return status(Status::NotFound),
        }
    };
    let (code, output) = match result {
        Ok(output) => (Status::Ok, output),
        Err(s) => (s, Vec::new()),
    };
    let mut address = 0u32;
    if results_ptr != 0 && !output.is_empty() {
        match allocate(&mut caller, output.len())? {
            Some(p) if write(&mut caller, p as i32, &output) => address = p,
            _ => return status(Status::InvalidMemoryAccess),
        }
    }
    if results_ptr != 0 && !write_u32(&mut caller, results_ptr, address) {
        return status(Status::InvalidMemoryAccess);
    }
    if results_size_ptr != 0 && !write_u32(&mut caller, results_size_ptr, output.len() as u32) {
        return status(Status::InvalidMemoryAccess);
    }
    status(code)
}

// ---------------------------------------------------------------------------------------------
// WASI
// ---------------------------------------------------------------------------------------------

/// stdout logs at info, stderr at error; a trailing newline is dropped (cpp-host `writevImpl`).
fn wasi_fd_write(
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

fn wasi_fd_read(_caller: Ctx<'_>, _fd: i32, _iovs: i32, _len: i32, _nread: i32) -> HostResult {
    Ok(errno::NOSYS)
}

fn wasi_fd_seek(_caller: Ctx<'_>, _fd: i32, _offset: i64, _whence: i32, _ptr: i32) -> HostResult {
    Ok(errno::SUCCESS)
}

fn wasi_fd_close(_caller: Ctx<'_>, _fd: i32) -> HostResult {
    Ok(errno::SUCCESS)
}

fn wasi_fd_fdstat_get(mut caller: Ctx<'_>, fd: i32, stat_ptr: i32) -> HostResult {
    if fd != 1 && fd != 2 {
        return Ok(errno::BADF);
    }
    // filetype/flags 0, rights_base FD_WRITE (64), rights_inheriting 0.
    let mut stat = [0u8; 24];
    stat[8..16].copy_from_slice(&64u64.to_le_bytes());
    write(&mut caller, stat_ptr, &stat);
    Ok(errno::SUCCESS)
}

fn wasi_fd_prestat_get(_caller: Ctx<'_>, _fd: i32, _ptr: i32) -> HostResult {
    // No preopened directories.
    Ok(errno::BADF)
}

fn wasi_fd_prestat_dir_name(_caller: Ctx<'_>, _fd: i32, _ptr: i32, _len: i32) -> HostResult {
    Ok(errno::NOSYS)
}

#[allow(clippy::too_many_arguments)]
fn wasi_path_open(
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

fn wasi_environ_sizes_get(mut caller: Ctx<'_>, count_ptr: i32, size_ptr: i32) -> HostResult {
    let env = environment(caller.data());
    let size: usize = env.iter().map(Vec::len).sum();
    if !write_u32(&mut caller, count_ptr, env.len() as u32)
        || !write_u32(&mut caller, size_ptr, size as u32)
    {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

fn wasi_environ_get(mut caller: Ctx<'_>, array_ptr: i32, buf_ptr: i32) -> HostResult {
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

fn wasi_args_sizes_get(mut caller: Ctx<'_>, argc_ptr: i32, size_ptr: i32) -> HostResult {
    if !write_u32(&mut caller, argc_ptr, 0) || !write_u32(&mut caller, size_ptr, 0) {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

fn wasi_args_get(_caller: Ctx<'_>, _argv: i32, _buf: i32) -> HostResult {
    Ok(errno::SUCCESS)
}

fn wasi_clock_time_get(
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

fn wasi_random_get(mut caller: Ctx<'_>, buf_ptr: i32, len: i32) -> HostResult {
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
fn wasi_proc_exit(mut caller: Ctx<'_>, code: i32) -> wasmtime::Result<()> {
    let message = format!("the module called proc_exit({code})");
    caller.data_mut().fatal = Some(message.clone());
    Err(wasmtime::Error::msg(message))
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

/// Defines every host function in a linker and returns their names as "module.name".
pub(crate) fn link(linker: &mut Linker<VmState>) -> wasmtime::Result<HashSet<String>> {
    let mut names = HashSet::new();
    define(linker, &mut names)?;
    Ok(names)
}

fn define(linker: &mut Linker<VmState>, names: &mut HashSet<String>) -> wasmtime::Result<()> {
    macro_rules! env {
        ($($name:ident),* $(,)?) => {$(
            linker.func_wrap("env", stringify!($name), $name)?;
            names.insert(concat!("env.", stringify!($name)).to_string());
        )*};
    }
    macro_rules! wasi {
        ($($name:literal => $f:ident),* $(,)?) => {$(
            for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
                linker.func_wrap(module, $name, $f)?;
                names.insert(format!("{module}.{}", $name));
            }
        )*};
    }
    env!(
        proxy_log,
        proxy_get_log_level,
        proxy_get_current_time_nanoseconds,
        proxy_set_tick_period_milliseconds,
        proxy_get_buffer_bytes,
        proxy_get_buffer_status,
        proxy_set_buffer_bytes,
        proxy_get_header_map_value,
        proxy_get_header_map_pairs,
        proxy_set_header_map_pairs,
        proxy_get_header_map_size,
        proxy_add_header_map_value,
        proxy_replace_header_map_value,
        proxy_remove_header_map_value,
        proxy_get_property,
        proxy_set_property,
        proxy_continue_stream,
        proxy_close_stream,
        proxy_send_local_response,
        proxy_set_effective_context,
        proxy_done,
        proxy_get_status,
        proxy_get_shared_data,
        proxy_set_shared_data,
        proxy_register_shared_queue,
        proxy_resolve_shared_queue,
        proxy_enqueue_shared_queue,
        proxy_dequeue_shared_queue,
        proxy_define_metric,
        proxy_increment_metric,
        proxy_record_metric,
        proxy_get_metric,
        proxy_http_call,
        proxy_grpc_call,
        proxy_grpc_stream,
        proxy_grpc_send,
        proxy_grpc_cancel,
        proxy_grpc_close,
        proxy_call_foreign_function,
    );
    wasi!(
        "fd_write" => wasi_fd_write,
        "fd_read" => wasi_fd_read,
        "fd_seek" => wasi_fd_seek,
        "fd_close" => wasi_fd_close,
        "fd_fdstat_get" => wasi_fd_fdstat_get,
        "fd_prestat_get" => wasi_fd_prestat_get,
        "fd_prestat_dir_name" => wasi_fd_prestat_dir_name,
        "path_open" => wasi_path_open,
        "environ_get" => wasi_environ_get,
        "environ_sizes_get" => wasi_environ_sizes_get,
        "args_get" => wasi_args_get,
        "args_sizes_get" => wasi_args_sizes_get,
        "clock_time_get" => wasi_clock_time_get,
        "random_get" => wasi_random_get,
        "proc_exit" => wasi_proc_exit,
    );
    Ok(())
}
