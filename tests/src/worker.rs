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

use std::collections::VecDeque;
use std::sync::Arc;

use crate::abi::{Action, LogLevel, PeerType};
use crate::config::{FailurePolicy, PluginConfig, PluginKind};
use crate::error::HostError;
use crate::headers::HeaderMap;
use crate::host::HostInner;
use crate::state::{
    ContextKind, HttpCallResponseData, HttpStreamState, IdMap, LocalReplyRequest, StreamProtocol,
    StreamRequests, StreamState, TcpStreamState,
};
use crate::stream::{
    HttpRequest, LocalReply, LogRecord, StreamKind, StreamOutcome, StreamResult, TcpStream,
};
use crate::vm::{Callback, Trap, Vm};

/// Log lines kept from outside any stream (root contexts, ticks): the newest are kept.
const ROOT_LOG_CAP: usize = 10_000;

/// An HTTP callout the module made with `proxy_http_call`, waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallout {
    pub token: u32,
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub timeout_ms: u32,
}

/// The answer to an HTTP callout; `None` in [`Worker::respond_http_callout`] means the call
/// failed (the module sees zero headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalloutResponse {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

/// A gRPC call or stream the module opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCallout {
    pub token: u32,
    pub upstream: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: Vec<(String, String)>,
    /// The request message of a call, or the messages sent on a stream.
    pub messages: Vec<Vec<u8>>,
    pub streaming: bool,
    pub timeout_ms: Option<u32>,
    /// The module closed its side (`proxy_grpc_close` or `end_stream`).
    pub closed_by_module: bool,
}

/// The answer to a gRPC callout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcResponse {
    pub initial_metadata: Vec<(String, String)>,
    pub messages: Vec<Vec<u8>>,
    pub trailing_metadata: Vec<(String, String)>,
    /// gRPC status; a unary call that succeeds (0) gets no close callback, as in Envoy.
    pub status: u32,
    pub status_message: String,
}

/// A stream started with [`Worker::begin_http`] or [`Worker::begin_tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamHandle(pub u32);

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpStep {
    Create,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    ReplyHeaders,
    ReplyBody,
    Log,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpStep {
    Create,
    NewConnection,
    Data,
    UpstreamData,
    Close,
    Done,
}

struct HttpDriver {
    request: HttpRequest,
    step: HttpStep,
    blocked: bool,
    reply: Option<LocalReplyRequest>,
    forwarded_headers: Option<Vec<(String, String)>>,
    forwarded: Vec<u8>,
}

struct TcpDriver {
    chunks: VecDeque<Vec<u8>>,
    upstream_chunks: VecDeque<Vec<u8>>,
    upstream_seen: bool,
    step: TcpStep,
    closed: bool,
    paused: bool,
    forwarded: Vec<u8>,
}

enum Driver {
    Http(Box<HttpDriver>),
    Tcp(TcpDriver),
}

struct OpenStream {
    policy: FailurePolicy,
    result: Option<StreamResult>,
    logs: Vec<LogRecord>,
    driver: Driver,
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
        };
        worker.collect_logs();
        Ok(worker)
    }

    /// Position of this worker in its deployment.
    pub fn index(&self) -> usize {
        self.index
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

    /// Runs one HTTP stream to its end on the first HTTP plugin.
    pub fn http(&mut self, request: &HttpRequest) -> Result<StreamOutcome, HostError> {
        let handle = self.begin_http(request)?;
        Ok(self.finish(handle))
    }

    /// Runs one TCP connection to its end on the first network plugin.
    pub fn tcp(&mut self, connection: &TcpStream) -> Result<StreamOutcome, HostError> {
        let handle = self.begin_tcp(connection)?;
        Ok(self.finish(handle))
    }

    /// Starts an HTTP stream and runs it as far as it goes: to its end, or until the module
    /// pauses it (e.g. waiting for a callout). Finish it with [`Worker::finish`].
    pub fn begin_http(&mut self, request: &HttpRequest) -> Result<StreamHandle, HostError> {
        let plugin = self.plugin_of_kind(PluginKind::Http)?;
        self.poll();
        let driver = Driver::Http(Box::new(HttpDriver {
            request: request.clone(),
            step: HttpStep::Create,
            blocked: false,
            reply: None,
            forwarded_headers: None,
            forwarded: Vec::new(),
        }));
        let state = StreamProtocol::Http(HttpStreamState {
            protocol: request.protocol.clone(),
            request_headers: self.request_headers(request),
            request_headers_live: false,
            request_trailers: None,
            request_body: Vec::new(),
            request_end_of_stream: false,
            response_headers: None,
            response_headers_live: false,
            response_trailers: None,
            response_body: Vec::new(),
            response_end_of_stream: false,
            access_log_phase: false,
            response_details: None,
        });
        let handle = self.open(plugin, &request.connection, state, driver);
        self.advance(handle.0);
        Ok(handle)
    }

    /// Starts a TCP connection and runs it to its end.
    pub fn begin_tcp(&mut self, connection: &TcpStream) -> Result<StreamHandle, HostError> {
        let plugin = self.plugin_of_kind(PluginKind::Network)?;
        self.poll();
        let driver = Driver::Tcp(TcpDriver {
            chunks: connection.downstream.iter().cloned().collect(),
            upstream_chunks: connection.upstream.iter().cloned().collect(),
            upstream_seen: false,
            step: TcpStep::Create,
            closed: false,
            paused: false,
            forwarded: Vec::new(),
        });
        let state = StreamProtocol::Tcp(TcpStreamState {
            downstream: Vec::new(),
            upstream: Vec::new(),
        });
        let handle = self.open(plugin, &connection.connection, state, driver);
        self.advance(handle.0);
        Ok(handle)
    }

    /// Ends a stream (a paused one is abandoned by its client) and reports what happened.
    pub fn finish(&mut self, handle: StreamHandle) -> StreamOutcome {
        let id = handle.0;
        if let Some(stream) = self.streams.get_mut(&id) {
            if let Driver::Http(h) = &mut stream.driver {
                if h.blocked {
                    h.blocked = false;
                    h.step = HttpStep::Log;
                    stream.result.get_or_insert(StreamResult::Paused);
                }
            }
        }
        self.advance(id);
        self.collect_logs();
        let stream = self
            .streams
            .remove(&id)
            .expect("finish is called with a handle from begin_http/begin_tcp");
        // A stream cut short by a VM failure leaves its context behind; drop it.
        self.vm.state_mut().contexts.remove(&id);
        let (kind, forwarded_request_headers, forwarded_bytes) = match stream.driver {
            Driver::Http(h) => (StreamKind::Http, h.forwarded_headers, h.forwarded),
            Driver::Tcp(t) => (StreamKind::Tcp, None, t.forwarded),
        };
        StreamOutcome {
            kind,
            context_id: id,
            result: stream.result.unwrap_or(StreamResult::Continued),
            logs: stream.logs,
            forwarded_request_headers,
            forwarded_bytes,
        }
    }

    /// Whether a stream is waiting for the module to resume it.
    pub fn is_paused(&self, handle: StreamHandle) -> bool {
        matches!(
            self.streams.get(&handle.0).map(|s| &s.driver),
            Some(Driver::Http(h)) if h.blocked
        )
    }

    /// Runs what Envoy's event loop would run between streams: due tick timers and
    /// `proxy_on_queue_ready` for items enqueued since. Streams call it when they start.
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
        self.collect_logs();
    }

    /// HTTP callouts waiting for an answer.
    pub fn http_callouts(&self) -> Vec<HttpCallout> {
        self.vm
            .state()
            .http_calls
            .values()
            .map(|p| p.call.clone())
            .collect()
    }

    /// Answers an HTTP callout (`proxy_on_http_call_response` on the root that made it), then
    /// resumes streams the module continued.
    pub fn respond_http_callout(
        &mut self,
        token: u32,
        response: Option<CalloutResponse>,
    ) -> Result<(), HostError> {
        self.check_alive()?;
        let pending = self
            .vm
            .state_mut()
            .http_calls
            .remove(&token)
            .ok_or(HostError::UnknownCallout(token))?;
        let root = pending.root_context_id;
        let response = response.unwrap_or_default();
        let failed = response.headers.is_empty();
        let (n_headers, body_len, n_trailers) = (
            response.headers.len(),
            response.body.len(),
            response.trailers.len(),
        );
        if let Some(r) = self.root_state(root) {
            r.http_call_response = Some(HttpCallResponseData {
                headers: to_map(&response.headers),
                trailers: to_map(&response.trailers),
                body: response.body,
            });
            r.status = if failed {
                (11, b"reset".to_vec())
            } else {
                (0, Vec::new())
            };
        }
        let result = match self.vm.cb.on_http_call_response.clone() {
            Some(f) => self.vm.call(
                root,
                "proxy_on_http_call_response",
                &f,
                (
                    root as i32,
                    token as i32,
                    n_headers as i32,
                    body_len as i32,
                    n_trailers as i32,
                ),
            ),
            None => Ok(()),
        };
        if let Some(r) = self.root_state(root) {
            r.http_call_response = None;
        }
        self.after_out_of_stream_call(result);
        Ok(())
    }

    /// gRPC calls and streams waiting for an answer.
    pub fn grpc_callouts(&self) -> Vec<GrpcCallout> {
        self.vm
            .state()
            .grpc_calls
            .values()
            .map(|p| p.call.clone())
            .collect()
    }

    /// Answers a gRPC callout: initial metadata, messages, trailing metadata, then close.
    pub fn respond_grpc_callout(
        &mut self,
        token: u32,
        response: GrpcResponse,
    ) -> Result<(), HostError> {
        self.check_alive()?;
        let pending = self
            .vm
            .state_mut()
            .grpc_calls
            .remove(&token)
            .ok_or(HostError::UnknownCallout(token))?;
        let root = pending.root_context_id;
        let streaming = pending.call.streaming;
        let result = self.deliver_grpc(root, token, streaming, response);
        self.after_out_of_stream_call(result);
        Ok(())
    }

    fn deliver_grpc(
        &mut self,
        root: u32,
        token: u32,
        streaming: bool,
        response: GrpcResponse,
    ) -> Result<(), Trap> {
        let (id, tok) = (root as i32, token as i32);
        let callback = self.vm.cb.on_grpc_receive_initial_metadata.clone();
        self.deliver_grpc_metadata(
            root,
            tok,
            &response.initial_metadata,
            |r| &mut r.grpc_initial_metadata,
            callback,
            "proxy_on_grpc_receive_initial_metadata",
        )?;
        for message in response.messages {
            let len = message.len() as i32;
            if let Some(r) = self.root_state(root) {
                r.grpc_message = message;
            }
            if let Some(f) = self.vm.cb.on_grpc_receive.clone() {
                self.vm
                    .call(root, "proxy_on_grpc_receive", &f, (id, tok, len))?;
            }
        }
        if let Some(r) = self.root_state(root) {
            r.grpc_message.clear();
        }
        let callback = self.vm.cb.on_grpc_receive_trailing_metadata.clone();
        self.deliver_grpc_metadata(
            root,
            tok,
            &response.trailing_metadata,
            |r| &mut r.grpc_trailing_metadata,
            callback,
            "proxy_on_grpc_receive_trailing_metadata",
        )?;
        if streaming || response.status != 0 {
            if let Some(r) = self.root_state(root) {
                r.status = (response.status, response.status_message.into_bytes());
            }
            if let Some(f) = self.vm.cb.on_grpc_close.clone() {
                self.vm.call(
                    root,
                    "proxy_on_grpc_close",
                    &f,
                    (id, tok, response.status as i32),
                )?;
            }
        }
        Ok(())
    }

    /// Initial or trailing gRPC metadata: readable through its header map only while the
    /// module's callback runs, as in Envoy.
    fn deliver_grpc_metadata(
        &mut self,
        root: u32,
        token: i32,
        metadata: &[(String, String)],
        slot: fn(&mut crate::state::RootState) -> &mut Option<HeaderMap>,
        callback: Callback<(i32, i32, i32), ()>,
        name: &'static str,
    ) -> Result<(), Trap> {
        if metadata.is_empty() {
            return Ok(());
        }
        if let Some(r) = self.root_state(root) {
            *slot(r) = Some(to_map(metadata));
        }
        if let Some(f) = callback {
            let n = metadata.len() as i32;
            self.vm.call(root, name, &f, (root as i32, token, n))?;
        }
        if let Some(r) = self.root_state(root) {
            *slot(r) = None;
        }
        Ok(())
    }

    /// Calls `proxy_on_foreign_function` on a plugin's root with `arguments` in `CALL_DATA`.
    pub fn call_foreign_callback(
        &mut self,
        plugin_name: &str,
        function_id: u32,
        arguments: &[u8],
    ) -> Result<(), HostError> {
        self.check_alive()?;
        let root = self.plugin_named(plugin_name)?.root;
        self.vm.state_mut().call_data = arguments.to_vec();
        let result = match self.vm.cb.on_foreign_function.clone() {
            Some(f) => self.vm.call(
                root,
                "proxy_on_foreign_function",
                &f,
                (root as i32, function_id as i32, arguments.len() as i32),
            ),
            None => Ok(()),
        };
        self.vm.state_mut().call_data.clear();
        self.after_out_of_stream_call(result);
        Ok(())
    }

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

    // -----------------------------------------------------------------------------------------
    // Internals
    // -----------------------------------------------------------------------------------------

    fn check_alive(&self) -> Result<(), HostError> {
        match &self.failure {
            Some(f) => Err(HostError::VmFailed(f.error.clone())),
            None => Ok(()),
        }
    }

    fn plugin_of_kind(&self, kind: PluginKind) -> Result<usize, HostError> {
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
            .filter(|(_, s)| matches!(&s.driver, Driver::Http(h) if h.blocked))
            .map(|(id, _)| *id)
            .collect();
        for id in blocked {
            self.settle_http(id, Ok(Action::Pause), true);
            self.advance(id);
        }
    }

    /// Envoy's HTTP connection manager adds these before any filter sees the request.
    fn request_headers(&self, request: &HttpRequest) -> HeaderMap {
        let mut headers = HeaderMap::request();
        for (name, value) in [
            (":authority", &request.authority),
            (":path", &request.path),
            (":method", &request.method),
            (":scheme", &request.scheme),
        ] {
            if let Some(value) = value {
                headers.add(name, value);
            }
        }
        for (name, value) in &request.headers {
            headers.add(name, value);
        }
        if self.host.options.connection_manager_headers {
            if headers.get("x-forwarded-proto").is_none() {
                let scheme = request.scheme.as_deref().unwrap_or("http");
                headers.add("x-forwarded-proto", scheme);
            }
            if headers.get("x-request-id").is_none() {
                let id = self.host.next_request_id();
                headers.add("x-request-id", id);
            }
        }
        headers
    }

    /// Registers a stream. When the VM has failed (and is not reloaded) the stream gets its
    /// failure result at once, without a context in the VM.
    fn open(
        &mut self,
        plugin_index: usize,
        connection: &crate::stream::Connection,
        protocol: StreamProtocol,
        driver: Driver,
    ) -> StreamHandle {
        let policy = self.plugins[plugin_index].config.failure_policy;
        self.reload_if_due(policy);
        let plugin = &self.plugins[plugin_index];
        let (config, root) = (plugin.config.clone(), plugin.root);
        let state = StreamState {
            connection: Arc::new(connection.clone()),
            connection_id: self.host.next_connection_id(),
            start_unix_nanos: self.host.clock.realtime_nanos(),
            filter_state: Vec::new(),
            protocol,
            requests: StreamRequests::default(),
        };
        let id = match &self.failure {
            None => self
                .vm
                .new_context(Some(root), config, ContextKind::Stream(Box::new(state))),
            Some(_) => {
                // Keep ids unique without creating a context in a failed VM.
                let s = self.vm.state_mut();
                s.next_context_id += 1;
                s.next_context_id - 1
            }
        };
        let result = self
            .failure
            .as_ref()
            .map(|f| failure_result(policy, &f.error));
        let mut driver = driver;
        if result.is_some() {
            match &mut driver {
                Driver::Http(h) => h.step = HttpStep::Done,
                Driver::Tcp(t) => t.step = TcpStep::Done,
            }
        }
        self.streams.insert(
            id,
            OpenStream {
                policy,
                result,
                logs: Vec::new(),
                driver,
            },
        );
        StreamHandle(id)
    }

    /// `FailReload`: a runtime failure gets a fresh VM, at most once per backoff interval.
    fn reload_if_due(&mut self, policy: FailurePolicy) {
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

    fn fail_vm(&mut self, trap: Trap) {
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

    fn stream_requests(&mut self, id: u32) -> StreamRequests {
        self.vm
            .state_mut()
            .contexts
            .get_mut(&id)
            .and_then(|c| c.stream_mut())
            .map(|s| std::mem::take(&mut s.requests))
            .unwrap_or_default()
    }

    fn http_state(&mut self, id: u32) -> Option<&mut HttpStreamState> {
        self.vm.state_mut().contexts.get_mut(&id)?.http_mut()
    }

    fn tcp_state(&mut self, id: u32) -> Option<&mut TcpStreamState> {
        self.vm.state_mut().contexts.get_mut(&id)?.tcp_mut()
    }

    /// Runs a stream until it ends or blocks.
    fn advance(&mut self, id: u32) {
        loop {
            let Some(stream) = self.streams.get(&id) else {
                return;
            };
            let (done, blocked) = match &stream.driver {
                Driver::Http(h) => (h.step == HttpStep::Done, h.blocked),
                Driver::Tcp(t) => (t.step == TcpStep::Done, false),
            };
            if done {
                self.collect_logs();
                return;
            }
            if let Some(f) = &self.failure {
                // The VM failed (in this stream, another one, or a tick): no more callbacks.
                let result = match &stream.result {
                    None | Some(StreamResult::Paused) => failure_result(stream.policy, &f.error),
                    Some(other) => other.clone(),
                };
                self.end_after_failure(id, result);
                continue;
            }
            if blocked {
                self.collect_logs();
                return;
            }
            match &stream.driver {
                Driver::Http(h) => {
                    let step = h.step;
                    self.run_http_step(id, step);
                }
                Driver::Tcp(t) => {
                    let step = t.step;
                    self.run_tcp_step(id, step);
                }
            }
        }
    }

    fn end_after_failure(&mut self, id: u32, result: StreamResult) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.result = Some(result);
            match &mut stream.driver {
                Driver::Http(h) => {
                    h.step = HttpStep::Done;
                    h.blocked = false;
                }
                Driver::Tcp(t) => t.step = TcpStep::Done,
            }
        }
    }

    fn http_driver(&mut self, id: u32) -> &mut HttpDriver {
        match self.streams.get_mut(&id).map(|s| &mut s.driver) {
            Some(Driver::Http(h)) => h,
            _ => unreachable!("HTTP steps run only for open HTTP streams"),
        }
    }

    fn tcp_driver(&mut self, id: u32) -> &mut TcpDriver {
        match self.streams.get_mut(&id).map(|s| &mut s.driver) {
            Some(Driver::Tcp(t)) => t,
            _ => unreachable!("TCP steps run only for open TCP streams"),
        }
    }

    fn root_of(&self, id: u32) -> u32 {
        self.vm.state().contexts.get(&id).map_or(0, |c| c.root_id)
    }

    /// Calls a stream callback that returns an action; a missing export continues.
    fn call_action(
        &mut self,
        id: u32,
        name: &'static str,
        f: crate::vm::Callback<(i32, i32, i32), i32>,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, Trap> {
        match f {
            Some(f) => self
                .vm
                .call(
                    id,
                    name,
                    &f,
                    (id as i32, size as i32, i32::from(end_of_stream)),
                )
                .map(|r| Action::from_raw(r as u32)),
            None => Ok(Action::Continue),
        }
    }

    fn run_http_step(&mut self, id: u32, step: HttpStep) {
        match step {
            HttpStep::Create => {
                let root = self.root_of(id);
                let result = self.vm.context_create(id, root).map(|()| Action::Continue);
                self.settle_http(id, result, false);
            }
            HttpStep::RequestHeaders => {
                let has_body = self.http_driver(id).request.body.is_some();
                let count = self.http_state(id).map_or(0, |h| {
                    h.request_headers_live = true;
                    h.request_headers.len()
                });
                let f = self.vm.cb.on_request_headers.clone();
                let result = self.call_action(id, "proxy_on_request_headers", f, count, !has_body);
                self.settle_http(id, result, false);
            }
            HttpStep::RequestBody => {
                let body = self.http_driver(id).request.body.take().unwrap_or_default();
                let size = self.http_state(id).map_or(0, |h| {
                    h.request_body.extend_from_slice(&body);
                    h.request_end_of_stream = true;
                    h.request_body.len()
                });
                let f = self.vm.cb.on_request_body.clone();
                let result = self.call_action(id, "proxy_on_request_body", f, size, true);
                if let Some(h) = self.http_state(id) {
                    h.request_end_of_stream = false;
                }
                self.settle_http(id, result, false);
            }
            HttpStep::ResponseHeaders => {
                let response = self.http_driver(id).request.response.clone();
                let response = response.expect("the response step runs only with a response");
                let mut headers = HeaderMap::other();
                headers.add(":status", response.status.to_string());
                for (k, v) in &response.headers {
                    headers.add(k, v);
                }
                let count = headers.len();
                if let Some(h) = self.http_state(id) {
                    h.response_headers = Some(headers);
                    h.response_headers_live = true;
                }
                let f = self.vm.cb.on_response_headers.clone();
                let end = response.body.is_none();
                let result = self.call_action(id, "proxy_on_response_headers", f, count, end);
                self.settle_http(id, result, false);
            }
            HttpStep::ResponseBody => {
                let body = self
                    .http_driver(id)
                    .request
                    .response
                    .as_mut()
                    .and_then(|r| r.body.take())
                    .unwrap_or_default();
                let size = self.http_state(id).map_or(0, |h| {
                    h.response_body.extend_from_slice(&body);
                    h.response_end_of_stream = true;
                    h.response_body.len()
                });
                let f = self.vm.cb.on_response_body.clone();
                let result = self.call_action(id, "proxy_on_response_body", f, size, true);
                if let Some(h) = self.http_state(id) {
                    h.response_end_of_stream = false;
                }
                self.settle_http(id, result, false);
            }
            HttpStep::ReplyHeaders => {
                let reply = self
                    .http_driver(id)
                    .reply
                    .clone()
                    .expect("the reply step runs only with a local reply");
                let headers = local_reply_headers(&reply);
                let count = headers.len();
                if let Some(h) = self.http_state(id) {
                    h.request_headers_live = false;
                    h.response_headers = Some(headers);
                    h.response_headers_live = true;
                    h.response_body.clear();
                    h.response_details = Some(reply.details.clone());
                }
                let f = self.vm.cb.on_response_headers.clone();
                let end = reply.body.is_empty();
                let result = self.call_action(id, "proxy_on_response_headers", f, count, end);
                self.settle_http(id, result, false);
            }
            HttpStep::ReplyBody => {
                let body = self
                    .http_driver(id)
                    .reply
                    .as_ref()
                    .map(|r| r.body.clone())
                    .unwrap_or_default();
                let size = self.http_state(id).map_or(0, |h| {
                    h.response_body = body;
                    h.response_end_of_stream = true;
                    h.response_body.len()
                });
                let f = self.vm.cb.on_response_body.clone();
                let result = self.call_action(id, "proxy_on_response_body", f, size, true);
                if let Some(h) = self.http_state(id) {
                    h.response_end_of_stream = false;
                }
                self.settle_http(id, result, false);
            }
            HttpStep::Log => {
                // The result is known now; the context is gone after proxy_on_delete.
                self.finalize_http(id);
                if let Some(h) = self.http_state(id) {
                    h.request_headers_live = false;
                    h.response_headers_live = false;
                    h.access_log_phase = true;
                }
                let result = self.vm.log(id);
                if let Some(h) = self.http_state(id) {
                    h.access_log_phase = false;
                }
                let result = result
                    .and_then(|()| self.vm.done(id))
                    .and_then(|_| self.vm.delete_context(id));
                if let Err(trap) = result {
                    self.fail_stream(id, trap);
                }
                self.http_driver(id).step = HttpStep::Done;
            }
            HttpStep::Done => {}
        }
    }

    /// Sets the final result of an HTTP stream that ran to its end.
    fn finalize_http(&mut self, id: u32) {
        let final_response = self
            .http_state(id)
            .map(|h| (h.response_headers.clone(), h.response_body.clone()));
        let stream = self.streams.get_mut(&id).expect("open stream");
        if stream.result.is_some() {
            return;
        }
        let Driver::Http(driver) = &stream.driver else {
            return;
        };
        stream.result = Some(match (&driver.reply, final_response) {
            (Some(reply), Some((Some(headers), body))) => {
                let status = headers
                    .get_str(":status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(reply.status);
                StreamResult::LocalReply(LocalReply {
                    status,
                    headers: headers
                        .entries()
                        .iter()
                        .filter(|(k, _)| !k.starts_with(':'))
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                    body,
                    details: reply.details.clone(),
                    grpc_status: reply.grpc_status,
                })
            }
            _ => StreamResult::Continued,
        });
    }

    /// A trap in a stream callback: the VM fails and the stream fails closed or open.
    fn fail_stream(&mut self, id: u32, trap: Trap) {
        let error = trap.to_string();
        self.fail_vm(trap);
        let policy = self.streams.get(&id).map(|s| s.policy).unwrap_or_default();
        self.end_after_failure(id, failure_result(policy, &error));
    }

    /// Applies what a callback returned and what the module asked for during it. `resumed` is
    /// set when re-checking a blocked stream after a callout.
    fn settle_http(&mut self, id: u32, result: Result<Action, Trap>, resumed: bool) {
        let action = match result {
            Ok(a) => a,
            Err(trap) => {
                self.fail_stream(id, trap);
                return;
            }
        };
        let requests = self.stream_requests(id);
        let driver = self.http_driver(id);
        let step = driver.step;
        let paused = action != Action::Continue || requests.stop_iteration;
        match step {
            HttpStep::Create => driver.step = HttpStep::RequestHeaders,
            HttpStep::RequestHeaders | HttpStep::RequestBody => {
                if let Some(reply) = requests.local_reply {
                    driver.reply = Some(reply);
                    driver.blocked = false;
                    driver.step = HttpStep::ReplyHeaders;
                } else if requests.close.is_some() {
                    self.set_result(id, StreamResult::Reset);
                    let driver = self.http_driver(id);
                    driver.blocked = false;
                    driver.step = HttpStep::Log;
                } else if !paused || requests.continue_request {
                    self.complete_request_step(id, step);
                } else if !resumed {
                    driver.blocked = true;
                }
            }
            HttpStep::ResponseHeaders | HttpStep::ResponseBody => {
                if let (Some(reply), HttpStep::ResponseHeaders) = (requests.local_reply, step) {
                    // A local reply replaces a response whose headers were not sent yet.
                    driver.reply = Some(reply);
                    driver.blocked = false;
                    driver.step = HttpStep::ReplyHeaders;
                } else if requests.close.is_some() {
                    self.set_result(id, StreamResult::Reset);
                    let driver = self.http_driver(id);
                    driver.blocked = false;
                    driver.step = HttpStep::Log;
                } else if !paused || requests.continue_response {
                    self.complete_response_step(id, step);
                } else if !resumed {
                    driver.blocked = true;
                }
            }
            HttpStep::ReplyHeaders | HttpStep::ReplyBody => {
                // The local reply goes out whatever the module returns; a reset still wins.
                if requests.close.is_some() {
                    self.set_result(id, StreamResult::Reset);
                    self.http_driver(id).step = HttpStep::Log;
                } else {
                    let has_body = driver.reply.as_ref().is_some_and(|r| !r.body.is_empty());
                    driver.step = if step == HttpStep::ReplyHeaders && has_body {
                        HttpStep::ReplyBody
                    } else {
                        HttpStep::Log
                    };
                    if let Some(h) = self.http_state(id) {
                        h.response_headers_live = false;
                    }
                }
            }
            HttpStep::Log | HttpStep::Done => {}
        }
    }

    fn set_result(&mut self, id: u32, result: StreamResult) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.result.get_or_insert(result);
        }
    }

    /// The request part of a step is done: forward it and move on.
    fn complete_request_step(&mut self, id: u32, step: HttpStep) {
        let mut forwarded_headers = None;
        let mut forwarded_body = Vec::new();
        if let Some(h) = self.http_state(id) {
            match step {
                HttpStep::RequestHeaders => {
                    h.request_headers_live = false;
                    forwarded_headers = Some(
                        h.request_headers
                            .entries()
                            .iter()
                            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                            .collect::<Vec<_>>(),
                    );
                }
                _ => forwarded_body = std::mem::take(&mut h.request_body),
            }
        }
        let driver = self.http_driver(id);
        driver.blocked = false;
        if forwarded_headers.is_some() {
            driver.forwarded_headers = forwarded_headers;
        }
        driver.forwarded.extend_from_slice(&forwarded_body);
        driver.step = if step == HttpStep::RequestHeaders && driver.request.body.is_some() {
            HttpStep::RequestBody
        } else if driver.request.response.is_some() {
            HttpStep::ResponseHeaders
        } else {
            HttpStep::Log
        };
    }

    fn complete_response_step(&mut self, id: u32, step: HttpStep) {
        if let Some(h) = self.http_state(id) {
            h.response_headers_live = false;
            if step == HttpStep::ResponseBody {
                h.response_body.clear();
            }
        }
        let driver = self.http_driver(id);
        driver.blocked = false;
        let body_pending = driver
            .request
            .response
            .as_ref()
            .is_some_and(|r| r.body.is_some());
        driver.step = if step == HttpStep::ResponseHeaders && body_pending {
            HttpStep::ResponseBody
        } else {
            HttpStep::Log
        };
    }

    fn run_tcp_step(&mut self, id: u32, step: TcpStep) {
        match step {
            TcpStep::Create => {
                let root = self.root_of(id);
                match self.vm.context_create(id, root) {
                    Ok(()) => self.tcp_driver(id).step = TcpStep::NewConnection,
                    Err(trap) => self.fail_stream(id, trap),
                }
            }
            TcpStep::NewConnection => {
                let result = match self.vm.cb.on_new_connection.clone() {
                    Some(f) => self
                        .vm
                        .call(id, "proxy_on_new_connection", &f, id as i32)
                        .map(|r| Action::from_raw(r as u32)),
                    None => Ok(Action::Continue),
                };
                self.settle_tcp(id, result, false);
            }
            TcpStep::Data => {
                let Some(chunk) = self.tcp_driver(id).chunks.pop_front() else {
                    self.tcp_driver(id).step = TcpStep::UpstreamData;
                    return;
                };
                let size = self.tcp_state(id).map_or(0, |t| {
                    t.downstream.extend_from_slice(&chunk);
                    t.downstream.len()
                });
                let f = self.vm.cb.on_downstream_data.clone();
                let result = self.call_action(id, "proxy_on_downstream_data", f, size, false);
                self.settle_tcp(id, result, true);
            }
            TcpStep::UpstreamData => {
                let Some(chunk) = self.tcp_driver(id).upstream_chunks.pop_front() else {
                    let driver = self.tcp_driver(id);
                    driver.step = TcpStep::Close;
                    if driver.upstream_seen {
                        // The upstream closed after its data.
                        let result = match self.vm.cb.on_upstream_connection_close.clone() {
                            Some(f) => self.vm.call(
                                id,
                                "proxy_on_upstream_connection_close",
                                &f,
                                (id as i32, PeerType::Remote as i32),
                            ),
                            None => Ok(()),
                        };
                        if let Err(trap) = result {
                            self.fail_stream(id, trap);
                        }
                    }
                    return;
                };
                self.tcp_driver(id).upstream_seen = true;
                let size = self.tcp_state(id).map_or(0, |t| {
                    t.upstream.extend_from_slice(&chunk);
                    t.upstream.len()
                });
                let f = self.vm.cb.on_upstream_data.clone();
                let result = self.call_action(id, "proxy_on_upstream_data", f, size, false);
                match result {
                    Err(trap) => self.fail_stream(id, trap),
                    Ok(action) => {
                        let requests = self.stream_requests(id);
                        if action == Action::Continue {
                            if let Some(t) = self.tcp_state(id) {
                                t.upstream.clear();
                            }
                        }
                        if requests.close.is_some() {
                            let driver = self.tcp_driver(id);
                            driver.closed = true;
                            driver.step = TcpStep::Close;
                        }
                    }
                }
            }
            TcpStep::Close => {
                let closed = self.tcp_driver(id).closed;
                let peer = if closed {
                    PeerType::Local
                } else {
                    PeerType::Remote
                };
                let result = match self.vm.cb.on_downstream_connection_close.clone() {
                    Some(f) => self.vm.call(
                        id,
                        "proxy_on_downstream_connection_close",
                        &f,
                        (id as i32, peer as i32),
                    ),
                    None => Ok(()),
                }
                .and_then(|()| self.vm.done(id))
                .and_then(|_| self.vm.log(id))
                .and_then(|()| self.vm.delete_context(id));
                if let Err(trap) = result {
                    self.fail_stream(id, trap);
                    return;
                }
                let driver = self.tcp_driver(id);
                driver.step = TcpStep::Done;
                let result = if driver.closed {
                    StreamResult::Closed
                } else if driver.paused {
                    StreamResult::Paused
                } else {
                    StreamResult::Continued
                };
                self.set_result(id, result);
            }
            TcpStep::Done => {}
        }
    }

    fn settle_tcp(&mut self, id: u32, result: Result<Action, Trap>, data: bool) {
        let action = match result {
            Ok(a) => a,
            Err(trap) => {
                self.fail_stream(id, trap);
                return;
            }
        };
        let requests = self.stream_requests(id);
        let paused = action != Action::Continue && !requests.continue_downstream;
        let mut forwarded = Vec::new();
        if data && !paused && requests.close.is_none() {
            if let Some(t) = self.tcp_state(id) {
                forwarded = std::mem::take(&mut t.downstream);
            }
        }
        let driver = self.tcp_driver(id);
        driver.forwarded.extend_from_slice(&forwarded);
        if requests.close.is_some() {
            driver.closed = true;
            driver.step = TcpStep::Close;
            return;
        }
        driver.paused = paused;
        driver.step = TcpStep::Data;
    }
}

/// What a stream gets from a failed VM.
fn failure_result(policy: FailurePolicy, error: &str) -> StreamResult {
    let error = error.to_string();
    match policy {
        FailurePolicy::FailOpen => StreamResult::FailedOpen { error },
        FailurePolicy::FailClose | FailurePolicy::FailReload => {
            StreamResult::FailedClosed { error }
        }
    }
}

/// Envoy's local reply headers: `:status`, the module's headers (keys lower-cased, appended),
/// and for a body `content-length` and a `content-type` of text/plain unless the module set one.
fn local_reply_headers(reply: &LocalReplyRequest) -> HeaderMap {
    let mut headers = HeaderMap::other();
    headers.add(":status", reply.status.to_string());
    for (k, v) in &reply.headers {
        headers.add(k, v);
    }
    if !reply.body.is_empty() {
        headers.replace("content-length", reply.body.len().to_string());
        if headers.get("content-type").is_none() {
            headers.add("content-type", "text/plain");
        }
    }
    headers
}

fn to_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::other();
    for (k, v) in pairs {
        map.add(k, v);
    }
    map
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
