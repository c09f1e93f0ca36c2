//! What Envoy's event loop runs between streams: due tick timers, `proxy_on_queue_ready`, and
//! the answers and timeouts of callouts.

use super::Worker;

impl Worker {
    /// Runs what Envoy's event loop would run between streams: due tick timers,
    /// `proxy_on_queue_ready` for items enqueued since, and callout answers (real ones that
    /// arrived, timeouts due on the host clock). Streams call it when they start.
    pub fn poll(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let now = self.host.clock.monotonic_nanos();
        let due: Vec<u32> = self
            .vm
            .state()
            .timers
            .iter()
            .filter(|(_, t)| t.next_due <= now)
            .map(|(root, _)| *root)
            .collect();
        for root in due {
            // Envoy re-arms the timer after the tick: a jump of several periods fires once.
            if let Some(timer) = self.vm.state_mut().timers.get_mut(&root) {
                timer.next_due = now.saturating_add(timer.period_nanos);
            }
            if let Some(f) = self.vm.cb.on_tick.clone() {
                if let Err(trap) = self.vm.call(root, "proxy_on_tick", &f, root as i32) {
                    self.fail_vm(trap);
                    return;
                }
            }
        }
        let ready = self
            .host
            .shared
            .queues
            .take_ready(self.vm.state().vm_instance);
        for (root, token) in ready {
            if !self.vm.state().contexts.contains_key(&root) {
                continue;
            }
            if let Some(f) = self.vm.cb.on_queue_ready.clone() {
                if let Err(trap) = self.vm.call(
                    root,
                    "proxy_on_queue_ready",
                    &f,
                    (root as i32, token as i32),
                ) {
                    self.fail_vm(trap);
                    return;
                }
            }
        }
        self.deliver_callouts();
        self.collect_logs();
    }
}
