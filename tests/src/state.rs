//! The per-VM state behind the host calls: contexts, streams, timers, callouts, metric ids.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use wasmtime::{Memory, TypedFunc};

use crate::abi::{LogLevel, StreamType};
use crate::clock::SimClock;
use crate::config::{HostOptions, PluginConfig, VmConfig};
use crate::headers::HeaderMap;
use crate::shared::{MetricCell, SharedState};
use crate::stream::{Connection, LogRecord};
use crate::upstream::{CallHandle, GrpcOutcome, Upstreams};

/// Hashes small integer ids (context ids, metric ids) with one multiplication: they are looked
/// up on every host call, where SipHash showed in profiles.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by context or metric id.
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Everything a VM's host calls need. It is the data of the VM's wasmtime `Store`.
pub(crate) struct VmState {
    pub shared: Arc<SharedState>,
    pub clock: Arc<SimClock>,
    pub vm_config: Arc<VmConfig>,
    pub options: Arc<HostOptions>,
    /// Unique per VM in the process (queue notifications are addressed to it).
    pub vm_instance: u64,
    pub memory: Option<Memory>,
    /// `proxy_on_memory_allocate` (or `malloc`): how the host returns data to the module.
    pub malloc: Option<Arc<TypedFunc<i32, i32>>>,
    pub contexts: IdMap<Context>,
    /// The context of the callback that is running (0: the VM itself).
    pub current_context: u32,
    /// Set by `proxy_set_effective_context` for the rest of the callback (0: none).
    pub effective_context: u32,
    pub next_context_id: u32,
    pub logs: Vec<LogRecord>,
    /// Tick timers per root context.
    pub timers: BTreeMap<u32, Timer>,
    pub http_calls: BTreeMap<u32, PendingHttpCall>,
    pub last_http_call: u32,
    pub grpc_calls: BTreeMap<u32, PendingGrpcCall>,
    pub last_grpc_call: u32,
    /// Real callouts (see `upstream`): their tasks send the outcome here; the worker delivers
    /// it the next time it processes events.
    pub upstreams: Arc<Upstreams>,
    pub completions: (
        std::sync::mpsc::Sender<GrpcCompletion>,
        std::sync::mpsc::Receiver<GrpcCompletion>,
    ),
    pub metrics: IdMap<Arc<MetricCell>>,
    /// Next metric id per type; ids carry their type in the low bits as in Envoy.
    pub next_metric_ids: [u32; 3],
    pub rng_state: u64,
    /// Root contexts whose `proxy_on_done` returned false, waiting for `proxy_done`.
    pub pending_done: Vec<u32>,
    /// Roots released by `proxy_done`, deleted once the call returns.
    pub done_released: Vec<u32>,
    /// Arguments of `proxy_on_foreign_function` (buffer `CALL_DATA`).
    pub call_data: Vec<u8>,
    /// A fatal error raised by a host call (e.g. `proc_exit`), reported with the trap.
    pub fatal: Option<String>,
    /// While set, only these host calls are allowed (module start, the module's allocator).
    pub restricted: Option<&'static [&'static str]>,
}

impl VmState {
    pub fn new(
        shared: Arc<SharedState>,
        clock: Arc<SimClock>,
        vm_config: Arc<VmConfig>,
        options: Arc<HostOptions>,
        upstreams: Arc<Upstreams>,
        vm_instance: u64,
    ) -> VmState {
        let mut contexts = IdMap::default();
        contexts.insert(
            0,
            Context {
                root_id: 0,
                plugin: None,
                kind: ContextKind::Vm,
            },
        );
        let rng_state = options.random_seed ^ vm_instance.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        VmState {
            shared,
            clock,
            vm_config,
            options,
            vm_instance,
            memory: None,
            malloc: None,
            contexts,
            current_context: 0,
            effective_context: 0,
            next_context_id: 1,
            logs: Vec::new(),
            timers: BTreeMap::new(),
            http_calls: BTreeMap::new(),
            last_http_call: 0,
            grpc_calls: BTreeMap::new(),
            last_grpc_call: 0,
            upstreams,
            completions: std::sync::mpsc::channel(),
            metrics: IdMap::default(),
            // Envoy: counters 0, 4, 8...; gauges 1, 5...; histograms 2, 6...
            next_metric_ids: [0, 1, 2],
            rng_state,
            pending_done: Vec::new(),
            done_released: Vec::new(),
            call_data: Vec::new(),
            fatal: None,
            restricted: None,
        }
    }

    /// The context host calls act on: the effective context if one was set and still exists,
    /// else the running callback's context (proxy-wasm-cpp-host `ContextOrEffectiveContext`).
    pub fn active_id(&self) -> u32 {
        if self.effective_context != 0 && self.contexts.contains_key(&self.effective_context) {
            self.effective_context
        } else {
            self.current_context
        }
    }

    pub fn active(&self) -> &Context {
        let id = self.active_id();
        // The running context always exists: it is removed only after its last callback.
        &self.contexts[&id]
    }

    pub fn active_mut(&mut self) -> &mut Context {
        let id = self.active_id();
        self.contexts
            .get_mut(&id)
            .expect("the running context exists while its callback runs")
    }

    /// Root context of the active context (itself for a root; the VM context has none).
    pub fn active_root_id(&self) -> u32 {
        self.active().root_id
    }

    pub fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn log(&mut self, level: LogLevel, message: String) {
        if level >= self.options.log_level {
            let context_id = self.active_id();
            self.logs.push(LogRecord {
                level,
                message,
                context_id,
            });
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    pub period_nanos: u64,
    /// Monotonic time of the next tick.
    pub next_due: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct PendingHttpCall {
    /// The context whose effective root made the call (`proxy_on_http_call_response` goes to
    /// the root; the SDK routes it to the stream that asked).
    pub root_context_id: u32,
    /// The context that was active when the call was made (a stream waits for it).
    pub caller: u32,
    /// Monotonic host time at which the call times out (`None`: timeout 0, none).
    pub deadline: Option<u64>,
    pub call: crate::worker::HttpCallout,
}

#[derive(Debug)]
pub(crate) struct PendingGrpcCall {
    pub root_context_id: u32,
    pub caller: u32,
    /// Monotonic host time at which a call answered by the caller times out; a real call
    /// times out on its own.
    pub deadline: Option<u64>,
    /// A real call in flight; cancelled when dropped from the table.
    pub network: Option<CallHandle>,
    pub call: crate::worker::GrpcCallout,
}

/// A real unary call that ended.
#[derive(Debug)]
pub(crate) struct GrpcCompletion {
    pub token: u32,
    pub outcome: GrpcOutcome,
}

pub(crate) struct Context {
    /// The root context this context belongs to (its own id for a root, 0 for the VM context).
    pub root_id: u32,
    pub plugin: Option<Arc<PluginConfig>>,
    pub kind: ContextKind,
}

pub(crate) enum ContextKind {
    /// Context 0: calls made outside any context (e.g. from `_initialize`).
    Vm,
    Root(Box<RootState>),
    Stream(Box<StreamState>),
}

#[derive(Default)]
pub(crate) struct RootState {
    /// Set while `proxy_on_configure` runs: the only time the plugin configuration is readable.
    pub configuring: Option<Arc<Vec<u8>>>,
    pub http_call_response: Option<HttpCallResponseData>,
    pub grpc_initial_metadata: Option<HeaderMap>,
    pub grpc_trailing_metadata: Option<HeaderMap>,
    pub grpc_message: Vec<u8>,
    /// `proxy_get_status`: code and message of the last callout completion.
    pub status: (u32, Vec<u8>),
}

pub(crate) struct HttpCallResponseData {
    pub headers: HeaderMap,
    pub trailers: HeaderMap,
    pub body: Vec<u8>,
}

/// What a stream context sees and what the module asked of it.
pub(crate) struct StreamState {
    pub connection: Arc<Connection>,
    /// Whether the client's TLS handshake is over (always, for plaintext and for HTTP streams,
    /// which start after it); before that no peer certificate is visible.
    pub handshake_complete: bool,
    /// Envoy caches `connection.tls_version` on its first read (`ConnectionInfoImplBase::
    /// tlsVersion`); read before the handshake it stays "unknown" for the connection.
    pub tls_version: std::cell::OnceCell<&'static str>,
    pub connection_id: u64,
    pub start_unix_nanos: u64,
    /// Values set with `proxy_set_property`, keyed "wasm." + path (Envoy filter state).
    pub filter_state: Vec<(Vec<u8>, Vec<u8>)>,
    /// With `HostOptions::record_property_reads`: the paths read, segments joined by `.`.
    pub properties_read: Vec<String>,
    pub protocol: StreamProtocol,
    /// Deferred requests from the module, applied when its callback returns (Envoy runs them as
    /// after-VM-call actions).
    pub requests: StreamRequests,
}

#[derive(Default)]
pub(crate) struct StreamRequests {
    pub local_reply: Option<LocalReplyRequest>,
    pub close: Option<StreamType>,
    pub continue_request: bool,
    pub continue_response: bool,
    pub continue_downstream: bool,
    /// `proxy_send_local_response` makes the next iteration stop whatever the module returned.
    pub stop_iteration: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct LocalReplyRequest {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub grpc_status: Option<u32>,
}

pub(crate) enum StreamProtocol {
    Http(HttpStreamState),
    Tcp(TcpStreamState),
}

pub(crate) struct HttpStreamState {
    /// "HTTP/1.1" etc.
    pub protocol: String,
    pub request_headers: HeaderMap,
    /// Envoy keeps the request header map reachable only while the headers callback runs, while
    /// the request is paused from it, and in the access-log phase.
    pub request_headers_live: bool,
    pub request_trailers: Option<HeaderMap>,
    /// The request body Envoy offers: the current chunk, or everything buffered while paused.
    pub request_body: Vec<u8>,
    /// Whether the body callback is running with end_of_stream (trailers may be added then).
    pub request_end_of_stream: bool,
    pub response_headers: Option<HeaderMap>,
    pub response_headers_live: bool,
    pub response_trailers: Option<HeaderMap>,
    pub response_body: Vec<u8>,
    pub response_end_of_stream: bool,
    pub access_log_phase: bool,
    /// Envoy response code details, once a reply is decided.
    pub response_details: Option<String>,
}

impl HttpStreamState {
    /// The request headers as the module may read them (Envoy `getConstMap`).
    pub fn visible_request_headers(&self) -> Option<&HeaderMap> {
        (self.request_headers_live || self.access_log_phase).then_some(&self.request_headers)
    }

    /// The response headers as the module may read them.
    pub fn visible_response_headers(&self) -> Option<&HeaderMap> {
        if self.response_headers_live || self.access_log_phase {
            self.response_headers.as_ref()
        } else {
            None
        }
    }
}

pub(crate) struct TcpStreamState {
    /// Client bytes Envoy holds for the filter chain (the connection's read buffer).
    pub downstream: Vec<u8>,
    /// Server bytes held in the upstream connection's read buffer.
    pub upstream: Vec<u8>,
    /// The upstream host, once tcp_proxy connected (`upstream.*` properties).
    pub upstream_host: Option<std::net::SocketAddr>,
}

impl Context {
    pub fn stream(&self) -> Option<&StreamState> {
        match &self.kind {
            ContextKind::Stream(s) => Some(s),
            _ => None,
        }
    }

    pub fn stream_mut(&mut self) -> Option<&mut StreamState> {
        match &mut self.kind {
            ContextKind::Stream(s) => Some(s),
            _ => None,
        }
    }

    pub fn http(&self) -> Option<&HttpStreamState> {
        match &self.stream()?.protocol {
            StreamProtocol::Http(h) => Some(h),
            StreamProtocol::Tcp(_) => None,
        }
    }

    pub fn http_mut(&mut self) -> Option<&mut HttpStreamState> {
        match &mut self.stream_mut()?.protocol {
            StreamProtocol::Http(h) => Some(h),
            StreamProtocol::Tcp(_) => None,
        }
    }

    pub fn tcp_mut(&mut self) -> Option<&mut TcpStreamState> {
        match &mut self.stream_mut()?.protocol {
            StreamProtocol::Tcp(t) => Some(t),
            StreamProtocol::Http(_) => None,
        }
    }

    pub fn root(&self) -> Option<&RootState> {
        match &self.kind {
            ContextKind::Root(r) => Some(r),
            _ => None,
        }
    }

    pub fn root_mut(&mut self) -> Option<&mut RootState> {
        match &mut self.kind {
            ContextKind::Root(r) => Some(r),
            _ => None,
        }
    }
}
