//! Plugin lifecycle on a worker: starting and configuring plugins in a VM, configuration
//! updates, shutdown, and failing and reloading the VM after a trap.

use std::sync::Arc;

use super::{ActivePlugin, VmFailure, Worker};
use crate::abi::LogLevel;
use crate::config::{FailurePolicy, PluginConfig};
use crate::deployment::HostInner;
use crate::error::HostError;
use crate::stream::LogRecord;
use crate::vm::{Trap, Vm};

impl Worker {
    /// Applies a new configuration for a plugin in this VM: a new root context is started and
    /// configured; if it accepts, new streams use it and the old root is done and deleted
    /// (Envoy keeps one VM and adds a root context per plugin configuration). On rejection the
    /// old configuration stays.
    /// A failed VM only records the new configuration: the VM that replaces it starts with it.
    pub fn update_plugin(&mut self, config: PluginConfig) -> Result<(), HostError> {
        let index = self
            .plugins
            .iter()
            .position(|p| p.config.name == config.name)
            .ok_or_else(|| HostError::UnknownPlugin(config.name.clone()))?;
        let config = Arc::new(config);
        if self.failure.is_some() {
            self.plugins[index].config = config;
            return Ok(());
        }
        let started = start_plugin(&mut self.vm, config.clone());
        self.collect_logs();
        let new_root = match started {
            Ok(root) => root,
            Err(error) => {
                if let HostError::StartTrap { trap, .. } = &error {
                    self.fail_vm(trap.clone());
                }
                return Err(error);
            }
        };
        let old_root = std::mem::replace(
            &mut self.plugins[index],
            ActivePlugin {
                config,
                root: new_root,
            },
        )
        .root;
        let retired = self.vm.retire_root(old_root);
        self.after_out_of_stream_call(retired);
        Ok(())
    }

    /// Shuts the plugins down like Envoy draining a worker: `proxy_on_done` for every root
    /// context, `proxy_on_delete` for those that are done; the others wait for `proxy_done`
    /// (from a later tick or queue callback). No new stream starts afterwards.
    pub fn shutdown(&mut self) {
        if self.failure.is_none() {
            let roots: Vec<u32> = self.plugins.iter().map(|p| p.root).collect();
            for root in roots {
                let result = self.vm.retire_root(root);
                if let Err(trap) = result {
                    self.fail_vm(trap);
                    break;
                }
            }
        }
        self.plugins.clear();
        self.collect_logs();
    }

    /// Root contexts waiting for `proxy_done` after returning false from `proxy_on_done`.
    pub fn pending_done(&self) -> Vec<u32> {
        self.vm.state().pending_done.clone()
    }

    /// `FailReload`: a runtime failure gets a fresh VM, at most once per backoff interval.
    pub(super) fn reload_if_due(&mut self, policy: FailurePolicy) {
        let due = match &self.failure {
            Some(f) if f.runtime && policy == FailurePolicy::FailReload => {
                let now = self.host.clock.monotonic_nanos();
                let backoff = self.host.options.reload_backoff.as_nanos() as u64;
                self.last_reload_nanos
                    .is_none_or(|last| now.saturating_sub(last) >= backoff)
            }
            _ => false,
        };
        if !due {
            return;
        }
        self.last_reload_nanos = Some(self.host.clock.monotonic_nanos());
        let configs: Vec<Arc<PluginConfig>> =
            self.plugins.iter().map(|p| p.config.clone()).collect();
        match build_vm(&self.host, &configs) {
            Ok((vm, roots)) => {
                let old = std::mem::replace(&mut self.vm, vm);
                self.host.shared.queues.forget_vm(old.state().vm_instance);
                for (plugin, root) in self.plugins.iter_mut().zip(roots) {
                    plugin.root = root;
                }
                self.failure = None;
                self.collect_logs();
            }
            Err(error) => {
                self.failure = Some(VmFailure {
                    error: format!("reloading the VM failed: {error}"),
                    runtime: false,
                });
            }
        }
    }

    pub(super) fn fail_vm(&mut self, trap: Trap) {
        let error = trap.to_string();
        self.root_logs.push_back(LogRecord {
            level: LogLevel::Critical,
            message: format!("VM failed: {error}"),
            context_id: 0,
        });
        self.failure = Some(VmFailure {
            error,
            runtime: true,
        });
    }
}

/// Starts and configures one plugin in a VM; returns its root context id.
fn start_plugin(vm: &mut Vm, plugin: Arc<PluginConfig>) -> Result<u32, HostError> {
    let name = plugin.name.clone();
    let take_logs = |vm: &mut Vm| std::mem::take(&mut vm.state_mut().logs);
    let trap = |vm: &mut Vm, trap: Trap| HostError::StartTrap {
        plugin: name.clone(),
        trap,
        logs: take_logs(vm),
    };
    let (root, started) = match vm.start_root(plugin) {
        Ok(r) => r,
        Err(t) => return Err(trap(vm, t)),
    };
    if !started {
        return Err(HostError::VmStartFailed {
            plugin: name.clone(),
            logs: take_logs(vm),
        });
    }
    match vm.configure_root(root) {
        Ok(true) => Ok(root),
        Ok(false) => Err(HostError::ConfigRejected {
            plugin: name.clone(),
            logs: take_logs(vm),
        }),
        Err(t) => Err(trap(vm, t)),
    }
}

/// A new VM with every plugin started and configured.
pub(crate) fn build_vm(
    host: &Arc<HostInner>,
    plugins: &[Arc<PluginConfig>],
) -> Result<(Vm, Vec<u32>), HostError> {
    let mut vm = host.instantiate()?;
    let mut roots = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        roots.push(start_plugin(&mut vm, plugin.clone())?);
    }
    Ok((vm, roots))
}
