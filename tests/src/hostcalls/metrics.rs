//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric`.

use super::memory::*;
use super::{from_result, ok, status, Ctx, HostResult};
use crate::abi::{MetricType, Status};

/// Envoy encodes the metric type in the two low bits of the id.
fn metric_kind_of_id(id: u32) -> Option<MetricType> {
    MetricType::from_raw(id & 0x3)
}

pub(super) fn proxy_define_metric(
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

pub(super) fn proxy_increment_metric(caller: Ctx<'_>, id: i32, offset: i64) -> HostResult {
    let id = id as u32;
    match metric_kind_of_id(id) {
        Some(MetricType::Counter | MetricType::Gauge) => match caller.data().metrics.get(&id) {
            Some(cell) => from_result(cell.increment(offset)),
            None => status(Status::NotFound),
        },
        _ => status(Status::BadArgument),
    }
}

pub(super) fn proxy_record_metric(caller: Ctx<'_>, id: i32, value: i64) -> HostResult {
    match caller.data().metrics.get(&(id as u32)) {
        Some(cell) => {
            cell.record(value as u64);
            ok()
        }
        None => status(Status::NotFound),
    }
}

pub(super) fn proxy_get_metric(mut caller: Ctx<'_>, id: i32, value_ptr: i32) -> HostResult {
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
