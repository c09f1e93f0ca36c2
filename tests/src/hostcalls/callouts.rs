//! HTTP and gRPC callouts and foreign functions: `proxy_http_call`, `proxy_grpc_*`,
//! `proxy_call_foreign_function`.

use super::memory::*;
use super::{ok, status, Ctx, HostResult};
use crate::abi::Status;
use crate::headers::HeaderMap;
use crate::state::{GrpcCompletion, PendingGrpcCall, PendingHttpCall, VmState};
use crate::upstream::{authority_for, CallHandle, GrpcRequest};
use crate::worker::{GrpcCallout, HttpCallout};

fn known_cluster(state: &VmState, name: &str) -> bool {
    state.options.clusters.iter().any(|c| c == name)
        || state.options.cluster_endpoints.contains_key(name)
}

/// When a call started now with `timeout_ms` times out on the host clock (0: never, as in
/// Envoy's router).
fn deadline(state: &VmState, timeout_ms: u32) -> Option<u64> {
    (timeout_ms > 0).then(|| {
        state
            .clock
            .monotonic_nanos()
            .saturating_add(u64::from(timeout_ms) * 1_000_000)
    })
}

fn pairs_to_strings(bytes: &[u8]) -> Vec<(String, String)> {
    crate::pairs::decode(bytes)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (lossy(&k), lossy(&v)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_http_call(
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
    let caller_id = state.active_id();
    let deadline = deadline(state, timeout_ms as u32);
    state.http_calls.insert(
        token,
        PendingHttpCall {
            root_context_id,
            caller: caller_id,
            deadline,
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
    // The token's memory is checked before the call starts.
    if !write_u32(&mut caller, token_ptr, 0) {
        return status(Status::InvalidMemoryAccess);
    }
    let upstream = lossy(&upstream);
    let state = caller.data_mut();
    if !known_cluster(state, &upstream) {
        // Envoy: an unknown cluster name is refused at once, without a callback.
        return status(Status::ParseFailure);
    }
    let streaming = message.is_none();
    let token = next_grpc_token(state, streaming);
    let root_context_id = state.active_root_id();
    let caller_id = state.active_id();
    let timeout_ms = timeout_ms.map(|t| t as u32);
    let call = GrpcCallout {
        token,
        upstream,
        service: lossy(&service_name),
        method: lossy(&method),
        initial_metadata: pairs_to_strings(&metadata),
        messages: message.into_iter().collect(),
        streaming,
        timeout_ms,
        closed_by_module: false,
        endpoint: None,
    };
    let pending = match state.options.cluster_endpoints.get(&call.upstream) {
        Some(&address) if !streaming => match start_network_call(state, token, address, &call) {
            Ok(handle) => PendingGrpcCall {
                root_context_id,
                caller: caller_id,
                deadline: None,
                network: Some(handle),
                call: GrpcCallout {
                    endpoint: Some(address),
                    ..call
                },
            },
            Err(_) => return status(Status::InternalFailure),
        },
        _ => PendingGrpcCall {
            root_context_id,
            caller: caller_id,
            deadline: timeout_ms.and_then(|t| deadline(state, t)),
            network: None,
            call,
        },
    };
    state.grpc_calls.insert(token, pending);
    write_u32(&mut caller, token_ptr, token);
    ok()
}

/// Starts the real call; its outcome reaches the worker through the VM's completion channel.
fn start_network_call(
    state: &VmState,
    token: u32,
    address: std::net::SocketAddr,
    call: &GrpcCallout,
) -> Result<CallHandle, String> {
    let transport = state.upstreams.transport()?;
    let request = GrpcRequest {
        address,
        authority: authority_for(&call.upstream, address),
        service: call.service.clone(),
        method: call.method.clone(),
        metadata: call.initial_metadata.clone(),
        message: call.messages.first().cloned().unwrap_or_default(),
        timeout: call
            .timeout_ms
            .filter(|t| *t > 0)
            .map(|t| std::time::Duration::from_millis(u64::from(t))),
    };
    let completions = state.completions.0.clone();
    Ok(transport.call(request, move |outcome| {
        // The VM may be gone by then: nothing waits for the answer.
        let _ = completions.send(GrpcCompletion { token, outcome });
    }))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_grpc_call(
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
pub(super) fn proxy_grpc_stream(
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

pub(super) fn proxy_grpc_send(
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

/// Cancels a call or resets a stream: it is forgotten and no callback follows (a real call's
/// request is cancelled when its handle drops).
pub(super) fn proxy_grpc_cancel(mut caller: Ctx<'_>, token: i32) -> HostResult {
    match caller.data_mut().grpc_calls.remove(&(token as u32)) {
        Some(_) => ok(),
        None => status(Status::NotFound),
    }
}

/// On a stream, closes the module's side. On a unary call Envoy does what cancel does
/// (`Context::grpcClose`: cancel and erase, no callback).
pub(super) fn proxy_grpc_close(mut caller: Ctx<'_>, token: i32) -> HostResult {
    let calls = &mut caller.data_mut().grpc_calls;
    let token = token as u32;
    match calls.get_mut(&token) {
        Some(pending) if pending.call.streaming => {
            pending.call.closed_by_module = true;
            ok()
        }
        Some(_) => {
            calls.remove(&token);
            ok()
        }
        None => status(Status::NotFound),
    }
}

pub(super) fn proxy_call_foreign_function(
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
