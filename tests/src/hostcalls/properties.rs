//! Properties: `proxy_get_property` (encoded as Envoy encodes them) and `proxy_set_property`.

use super::memory::*;
use super::{from_result, ok, status, Ctx, HostResult};
use crate::abi::Status;
use crate::properties;

pub(super) fn proxy_get_property(
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
        node_id: &state.options.node_id,
        node_metadata: &state.options.node_metadata,
    };
    let value = properties::get(state.active(), &env, path);
    if state.options.record_property_reads {
        let path: Vec<u8> = path
            .iter()
            .map(|&b| if b == 0 { b'.' } else { b })
            .collect();
        let path = String::from_utf8_lossy(&path).into_owned();
        if let Some(stream) = caller.data_mut().active_mut().stream_mut() {
            stream.properties_read.push(path);
        }
    }
    let value = match value {
        Ok(v) => v,
        Err(s) => return status(s),
    };
    if !copy_out(&mut caller, &value, value_ptr_ptr, value_size_ptr)? {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

pub(super) fn proxy_set_property(
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
