//! Shared data (with Envoy's CAS rules) and shared queues, process-wide per `vm_id`.

use super::memory::*;
use super::{from_result, ok, status, Ctx, HostResult};
use crate::abi::Status;

pub(super) fn proxy_get_shared_data(
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

pub(super) fn proxy_set_shared_data(
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

pub(super) fn proxy_register_shared_queue(
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

pub(super) fn proxy_resolve_shared_queue(
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

pub(super) fn proxy_enqueue_shared_queue(
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

pub(super) fn proxy_dequeue_shared_queue(
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
