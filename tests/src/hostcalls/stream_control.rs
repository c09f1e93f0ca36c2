//! Stream control: continue, close, local replies, the effective context, `proxy_done` and
//! `proxy_get_status`. Operations are recorded and applied after the callback returns.

use super::memory::*;
use super::{ok, status, Ctx, HostResult};
use crate::abi::{Status, StreamType};
use crate::state::{LocalReplyRequest, StreamProtocol};

/// The largest valid gRPC status code (Envoy `Grpc::Status::WellKnownGrpcStatus::MaximumKnown`).
const MAX_GRPC_STATUS: u32 = 16;

pub(super) fn proxy_continue_stream(mut caller: Ctx<'_>, stream: i32) -> HostResult {
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

pub(super) fn proxy_close_stream(mut caller: Ctx<'_>, stream: i32) -> HostResult {
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
pub(super) fn proxy_send_local_response(
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

pub(super) fn proxy_set_effective_context(mut caller: Ctx<'_>, context_id: i32) -> HostResult {
    let state = caller.data_mut();
    let id = context_id as u32;
    if !state.contexts.contains_key(&id) {
        return status(Status::BadArgument);
    }
    state.effective_context = id;
    ok()
}

pub(super) fn proxy_done(mut caller: Ctx<'_>) -> HostResult {
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

pub(super) fn proxy_get_status(
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
