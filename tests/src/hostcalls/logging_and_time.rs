//! Logging, the clock and the tick timer: `proxy_log`, `proxy_get_log_level`,
//! `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`.

use super::memory::*;
use super::{ok, status, Ctx, HostResult};
use crate::abi::{LogLevel, Status};
use crate::state::Timer;

pub(super) fn proxy_log(mut caller: Ctx<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    let Some(level) = LogLevel::from_raw(level as u32) else {
        return status(Status::BadArgument);
    };
    let Some(message) = read(&caller, ptr, len) else {
        return status(Status::InvalidMemoryAccess);
    };
    caller.data_mut().log(level, text(message));
    ok()
}

pub(super) fn proxy_get_log_level(mut caller: Ctx<'_>, ptr: i32) -> HostResult {
    let level = caller.data().options.log_level as u32;
    if !write_u32(&mut caller, ptr, level) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

pub(super) fn proxy_get_current_time_nanoseconds(mut caller: Ctx<'_>, ptr: i32) -> HostResult {
    let now = caller.data().clock.realtime_nanos();
    if !write_u64(&mut caller, ptr, now) {
        return status(Status::InvalidMemoryAccess);
    }
    ok()
}

pub(super) fn proxy_set_tick_period_milliseconds(mut caller: Ctx<'_>, period: i32) -> HostResult {
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
