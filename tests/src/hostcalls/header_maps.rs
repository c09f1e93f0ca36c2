//! Header maps (request/response headers and trailers, callout and gRPC metadata):
//! the `proxy_*_header_map_*` calls.

use super::memory::*;
use super::{ok, status, Ctx, HostResult};
use crate::abi::{MapType, Status};
use crate::headers::HeaderMap;
use crate::state::VmState;

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

pub(super) fn proxy_get_header_map_value(
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

pub(super) fn proxy_get_header_map_pairs(
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

pub(super) fn proxy_set_header_map_pairs(
    mut caller: Ctx<'_>,
    map: i32,
    ptr: i32,
    size: i32,
) -> HostResult {
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

pub(super) fn proxy_get_header_map_size(
    mut caller: Ctx<'_>,
    map: i32,
    size_ptr: i32,
) -> HostResult {
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

pub(super) fn proxy_add_header_map_value(
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

pub(super) fn proxy_replace_header_map_value(
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

pub(super) fn proxy_remove_header_map_value(
    caller: Ctx<'_>,
    map: i32,
    key_ptr: i32,
    key_size: i32,
) -> HostResult {
    edit_header_map(caller, map, key_ptr, key_size, None, |h, k, _| h.remove(k))
}
