//! Buffers (bodies, downstream/upstream data, configuration, callout answers):
//! `proxy_get_buffer_bytes`, `proxy_get_buffer_status`, `proxy_set_buffer_bytes`.

use super::memory::*;
use super::{ok, status, Ctx, HostResult};
use crate::abi::{BufferType, Status};
use crate::state::{StreamProtocol, VmState};

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

pub(super) fn proxy_get_buffer_bytes(
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

pub(super) fn proxy_get_buffer_status(
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

pub(super) fn proxy_set_buffer_bytes(
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
