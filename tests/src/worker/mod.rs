//! A worker: one VM running streams the way an Envoy worker thread does.
//!
//! HTTP stream (Envoy HTTP filter, `Context::decodeHeaders` and friends):
//! `proxy_on_context_create(stream, root)`, `proxy_on_request_headers`, `proxy_on_request_body`
//! (if there is a body), `proxy_on_response_headers`/`_body` (for the upstream's response, or
//! for a local reply, which Envoy sends through the encoder filters too), then at the end of the
//! stream `proxy_on_log` (access-log phase), `proxy_on_done`, `proxy_on_delete`.
//!
//! TCP connection (Envoy network filter): `proxy_on_context_create`, `proxy_on_new_connection`,
//! `proxy_on_downstream_data` per chunk, `proxy_on_downstream_connection_close` (local when the
//! module closed it, remote otherwise), then `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
//!
//! A trap fails the VM (`FailState::RuntimeError`): the stream fails closed (503 / close) or
//! open, no further callback runs on that VM, and later streams fail the same way unless the
//! plugin's policy is `FailReload`, which builds a new VM for the next stream.

mod callouts;
mod http;
mod lifecycle;
mod streams;
mod tcp;
mod timers;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::abi::Action;
use crate::config::{PluginConfig, PluginKind};
use crate::deployment::HostInner;
use crate::error::HostError;
use crate::state::IdMap;
use crate::stream::LogRecord;
use crate::vm::{Trap, Vm};

pub use callouts::{CalloutResponse, GrpcCallout, GrpcResponse, HttpCallout};
pub(crate) use lifecycle::build_vm;
pub use streams::StreamHandle;
use streams::{Driver, OpenStream};

/// The index of the main thread's VM.
const MAIN_THREAD: usize = usize::MAX;

/// Log lines kept from outside any stream (root contexts, ticks): the newest are kept.
const ROOT_LOG_CAP: usize = 10_000;

struct ActivePlugin {
    config: Arc<PluginConfig>,
    root: u32,
}

#[derive(Debug, Clone)]
struct VmFailure {
    error: String,
    /// A runtime error (trap) rather than a failure to start: only these are reloaded.
    runtime: bool,
}

pub struct Worker {
    index: usize,
    host: Arc<HostInner>,
    plugins: Vec<ActivePlugin>,
    vm: Vm,
    failure: Option<VmFailure>,
    last_reload_nanos: Option<u64>,
    streams: IdMap<OpenStream>,
    root_logs: VecDeque<LogRecord>,
    /// Roots replaced by a configuration update, waiting for their last stream to end.
    draining_roots: Vec<u32>,
}

impl Worker {
    /// Creates the VM and starts and configures every plugin in it.
    pub(crate) fn new(
        host: Arc<HostInner>,
        index: usize,
        plugins: &[Arc<PluginConfig>],
    ) -> Result<Worker, HostError> {
        let (vm, roots) = build_vm(&host, plugins)?;
        let mut worker = Worker {
            index,
            host,
            plugins: plugins
                .iter()
                .zip(roots)
                .map(|(config, root)| ActivePlugin {
                    config: config.clone(),
                    root,
                })
                .collect(),
            vm,
            failure: None,
            last_reload_nanos: None,
            streams: IdMap::default(),
            root_logs: VecDeque::new(),
            draining_roots: Vec::new(),
        };
        worker.collect_logs();
        Ok(worker)
    }

    /// The main thread's VM: plugins started and configured, no streams.
    pub(crate) fn new_main_thread(
        host: Arc<HostInner>,
        plugins: &[Arc<PluginConfig>],
    ) -> Result<Worker, HostError> {
        let mut worker = Worker::new(host, MAIN_THREAD, plugins)?;
        worker.index = MAIN_THREAD;
        Ok(worker)
    }

    /// Position of this worker in its deployment (`usize::MAX` for the main thread).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether this is the main thread's VM, which serves no streams.
    pub fn is_main_thread(&self) -> bool {
        self.index == MAIN_THREAD
    }

    /// Why the VM failed, if it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.error.as_str())
    }

    /// Log lines from outside streams (configuration, ticks, queue and callout callbacks).
    pub fn take_root_logs(&mut self) -> Vec<LogRecord> {
        self.collect_logs();
        self.root_logs.drain(..).collect()
    }

    /// Number of contexts alive in the VM, the VM context included (a leak check: after all
    /// streams ended it is 1 + the number of plugins).
    pub fn live_contexts(&self) -> usize {
        self.vm.state().contexts.len()
    }

    fn check_alive(&self) -> Result<(), HostError> {
        match &self.failure {
            Some(f) => Err(HostError::VmFailed(f.error.clone())),
            None => Ok(()),
        }
    }

    fn plugin_of_kind(&self, kind: PluginKind) -> Result<usize, HostError> {
        if self.is_main_thread() {
            return Err(HostError::MainThreadServesNoStreams);
        }
        self.plugins
            .iter()
            .position(|p| p.config.kind == kind)
            .ok_or(HostError::NoPluginOfKind(kind))
    }

    fn plugin_named(&self, name: &str) -> Result<&ActivePlugin, HostError> {
        self.plugins
            .iter()
            .find(|p| p.config.name == name)
            .ok_or_else(|| HostError::UnknownPlugin(name.to_string()))
    }

    fn root_state(&mut self, root: u32) -> Option<&mut crate::state::RootState> {
        self.vm
            .state_mut()
            .contexts
            .get_mut(&root)
            .and_then(|c| c.root_mut())
    }

    /// After a callback outside any stream: fail the VM on a trap, pick up logs, and resume
    /// streams the module continued from it.
    fn after_out_of_stream_call(&mut self, result: Result<(), Trap>) {
        if let Err(trap) = result {
            self.fail_vm(trap);
        }
        self.collect_logs();
        let blocked: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| match &s.driver {
                Driver::Http(h) => h.blocked,
                Driver::Tcp(t) => t.blocked,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in blocked {
            match self.streams.get_mut(&id).map(|s| &mut s.driver) {
                Some(Driver::Http(_)) => self.settle_http(id, Ok(Action::Pause), true),
                Some(Driver::Tcp(t)) => {
                    // Resumed (`proxy_continue_stream(DOWNSTREAM)`: the held bytes go up),
                    // closed, or still waiting for its callout.
                    t.blocked = false;
                    self.resume_tcp(id);
                }
                None => continue,
            }
            self.advance(id);
        }
    }

    /// Moves the VM's new log lines to their streams (or to the root log).
    fn collect_logs(&mut self) {
        let logs = std::mem::take(&mut self.vm.state_mut().logs);
        for record in logs {
            match self.streams.get_mut(&record.context_id) {
                Some(stream) => stream.logs.push(record),
                None => {
                    if self.root_logs.len() == ROOT_LOG_CAP {
                        self.root_logs.pop_front();
                    }
                    self.root_logs.push_back(record);
                }
            }
        }
    }
}
