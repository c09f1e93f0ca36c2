//! The filter's side of the ABI: the proxy-wasm host functions the module imports (module
//! `env`), without the SDK wrappers that panic on an unexpected status or on non-UTF-8 bytes: a
//! panic would kill the VM, a failure here must only deny the stream.
#![allow(unsafe_code)]

use std::ptr::null_mut;

use crate::gather::{encode_header_map, HeaderList, HostStatus, ProxyFacts};
use crate::ratelimit::{CasMismatch, CasStore};

const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;

const MAP_HTTP_REQUEST_HEADERS: u32 = 0;
const BUFFER_DOWNSTREAM_DATA: u32 = 2;
const BUFFER_GRPC_RECEIVE: u32 = 5;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_HTTP_REQUEST: u32 = 0;
const STREAM_DOWNSTREAM: u32 = 2;
const METRIC_COUNTER: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_metric_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    // ABI 0.2.1 names the unary gRPC callout `proxy_grpc_call` (the SDKs call it
    // `dispatch_grpc_call`).
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        request_data: *const u8,
        request_size: usize,
        timeout_milliseconds: u32,
        return_callout_id: *mut u32,
    ) -> u32;
    fn proxy_grpc_cancel(callout_id: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_get_status(
        return_status_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
}

/// Takes ownership of a buffer the host filled through `proxy_on_memory_allocate`.
fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated exactly `size` bytes through `proxy_on_memory_allocate`, which
    // allocates them with the layout of a `Vec<u8>` of that capacity; ownership passes to us.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length describe a live string for the duration of the call.
    unsafe {
        proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

/// The host's log level (0 trace, 1 debug, 2 info, ...); `None` if the host cannot tell.
pub fn log_level() -> Option<u32> {
    let mut level: u32 = 0;
    // SAFETY: the out-pointer is a valid local.
    let status = unsafe { proxy_get_log_level(&mut level) };
    (status == STATUS_OK).then_some(level)
}

/// Reads a property; `path` is its segments joined by NUL (`"source\0address"`).
pub fn get_property(path: &str) -> Result<Option<Vec<u8>>, HostStatus> {
    let serialized = path.as_bytes();
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: in-pointers describe live memory; out-pointers are valid locals.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(Some(take_buffer(data, size))),
        STATUS_NOT_FOUND => Ok(None),
        other => Err(HostStatus(other)),
    }
}

/// Sets a property of the stream: Envoy keeps it in filter state as `wasm.` + `path`.
pub fn set_property(path: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: pointers and lengths describe live memory for the duration of the call.
    let status =
        unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
    match status {
        STATUS_OK => Ok(()),
        other => Err(HostStatus(other)),
    }
}

pub fn get_request_headers() -> Result<HeaderList, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-pointers are valid locals.
    let status =
        unsafe { proxy_get_header_map_pairs(MAP_HTTP_REQUEST_HEADERS, &mut data, &mut size) };
    if status != STATUS_OK {
        return Err(HostStatus(status));
    }
    // A map that does not decode is reported with the ABI's SerializationFailure code.
    HeaderList::decode(take_buffer(data, size)).ok_or(HostStatus(3))
}

pub fn get_plugin_configuration() -> Result<Vec<u8>, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-pointers are valid locals.
    let status = unsafe {
        proxy_get_buffer_bytes(
            BUFFER_PLUGIN_CONFIGURATION,
            0,
            usize::MAX,
            &mut data,
            &mut size,
        )
    };
    match status {
        STATUS_OK => Ok(take_buffer(data, size)),
        STATUS_NOT_FOUND => Ok(Vec::new()),
        other => Err(HostStatus(other)),
    }
}

/// Host time in Unix nanoseconds; `None` if the host cannot tell.
pub fn current_time_ns() -> Option<u64> {
    let mut time: u64 = 0;
    // SAFETY: the out-pointer is a valid local.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut time) };
    (status == STATUS_OK).then_some(time)
}

/// `size` bytes of the downstream data buffer from `start` (the buffer Envoy holds while the
/// connection is paused, so earlier bytes are handed over again).
pub fn get_downstream_data(start: usize, size: usize) -> Result<Vec<u8>, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    // SAFETY: out-pointers are valid locals.
    let status =
        unsafe { proxy_get_buffer_bytes(BUFFER_DOWNSTREAM_DATA, start, size, &mut data, &mut len) };
    match status {
        STATUS_OK => Ok(take_buffer(data, len)),
        STATUS_NOT_FOUND => Ok(Vec::new()),
        other => Err(HostStatus(other)),
    }
}

/// Starts a unary gRPC call to `cluster` (an Envoy cluster name); the token identifies its
/// answer, delivered later to the root context.
pub fn grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout_ms: u32,
) -> Result<u32, HostStatus> {
    let mut token: u32 = 0;
    // SAFETY: every pointer/length pair describes live memory for the duration of the call;
    // the out-pointer is a valid local. No initial metadata (size 0).
    let status = unsafe {
        proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            null_mut(),
            0,
            message.as_ptr(),
            message.len(),
            timeout_ms,
            &mut token,
        )
    };
    if status == STATUS_OK {
        Ok(token)
    } else {
        Err(HostStatus(status))
    }
}

/// Cancels a call; no callback follows. A failure only means it had ended.
pub fn grpc_cancel(token: u32) {
    // SAFETY: plain value arguments.
    unsafe {
        proxy_grpc_cancel(token);
    }
}

/// Makes the following host calls act on the stream `context_id` (callout answers arrive on the
/// root context). Fails when that stream is gone.
pub fn set_effective_context(context_id: u32) -> Result<(), HostStatus> {
    // SAFETY: plain value arguments.
    let status = unsafe { proxy_set_effective_context(context_id) };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

/// The message of the gRPC answer being delivered.
pub fn grpc_message(size: usize) -> Result<Vec<u8>, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    // SAFETY: out-pointers are valid locals.
    let status =
        unsafe { proxy_get_buffer_bytes(BUFFER_GRPC_RECEIVE, 0, size, &mut data, &mut len) };
    match status {
        STATUS_OK => Ok(take_buffer(data, len)),
        STATUS_NOT_FOUND => Ok(Vec::new()),
        other => Err(HostStatus(other)),
    }
}

/// Code and message of the gRPC call being closed.
pub fn grpc_status() -> (u32, Vec<u8>) {
    let mut code: u32 = 0;
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    // SAFETY: out-pointers are valid locals.
    let status = unsafe { proxy_get_status(&mut code, &mut data, &mut len) };
    let message = take_buffer(data, len);
    if status == STATUS_OK {
        (code, message)
    } else {
        (code, Vec::new())
    }
}

/// Resumes the paused HTTP request of the effective context.
pub fn continue_http_request() -> Result<(), HostStatus> {
    continue_stream(STREAM_HTTP_REQUEST)
}

/// Resumes reading the paused connection of the effective context.
pub fn continue_downstream() -> Result<(), HostStatus> {
    continue_stream(STREAM_DOWNSTREAM)
}

fn continue_stream(stream_type: u32) -> Result<(), HostStatus> {
    // SAFETY: plain value arguments.
    let status = unsafe { proxy_continue_stream(stream_type) };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

/// Rate-limit buckets in proxy-wasm shared data (shared by every worker VM of the plugin's VM
/// id). Any host failure reads as "absent" or as a lost race: the limiter retries, then denies.
pub struct SharedData;

impl CasStore for SharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: the key is live for the call; out-pointers are valid locals.
        let status = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        let value = take_buffer(data, size);
        (status == STATUS_OK).then_some((value, cas))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        // SAFETY: key and value are live for the call.
        let status = unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        };
        // CasMismatch (8) is the race the limiter retries; any other failure is treated the
        // same way, so a failing host ends in a denial, never in an unlimited pass.
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(CasMismatch)
        }
    }
}

pub fn send_local_response(
    status_code: u32,
    details: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HostStatus> {
    let headers = encode_header_map(headers);
    // SAFETY: every pointer/length pair describes live memory for the duration of the call.
    let status = unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

pub fn close_downstream() -> Result<(), HostStatus> {
    // SAFETY: plain value arguments.
    let status = unsafe { proxy_close_stream(STREAM_DOWNSTREAM) };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

/// Resets the HTTP stream (no reply reaches the client, nothing reaches the upstream).
pub fn reset_http_request() -> Result<(), HostStatus> {
    // SAFETY: plain value arguments.
    let status = unsafe { proxy_close_stream(STREAM_HTTP_REQUEST) };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

pub fn define_counter(name: &str) -> Result<u32, HostStatus> {
    let mut id: u32 = 0;
    // SAFETY: the name is live for the call; the out-pointer is a valid local.
    let status = unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
    if status == STATUS_OK {
        Ok(id)
    } else {
        Err(HostStatus(status))
    }
}

pub fn increment_counter(id: u32) {
    // SAFETY: plain value arguments. A failed increment only loses a count.
    unsafe {
        proxy_increment_metric(id, 1);
    }
}

/// Attribute gathering against the live host.
pub struct Host;

impl ProxyFacts for Host {
    fn property(&self, path: &str) -> Result<Option<Vec<u8>>, HostStatus> {
        get_property(path)
    }

    fn request_headers(&self) -> Result<HeaderList, HostStatus> {
        get_request_headers()
    }
}
