//! Streams on a worker: HTTP streams and TCP connections started, run step by step through
//! the module's callbacks in Envoy's order (see the module above for the sequences) until they
//! end or pause, and their outcome. The steps themselves are in `http` and `tcp`.

use std::sync::Arc;

use super::http::{HttpDriver, HttpStep};
use super::tcp::{TcpDriver, TcpStep};
use super::Worker;
use crate::abi::Action;
use crate::config::{FailurePolicy, PluginKind};
use crate::error::HostError;
use crate::hcm::CodecVerdict;
use crate::state::{
    ContextKind, HttpStreamState, StreamProtocol, StreamRequests, StreamState, TcpStreamState,
};
use crate::stream::{
    HttpRequest, LocalReply, LogRecord, StreamKind, StreamOutcome, StreamResult, TcpStream,
};
use crate::vm::Trap;

/// A stream started with [`Worker::begin_http`] or [`Worker::begin_tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamHandle(pub u32);

pub(super) enum Driver {
    Http(Box<HttpDriver>),
    Tcp(TcpDriver),
}

pub(super) struct OpenStream {
    pub(super) policy: FailurePolicy,
    pub(super) result: Option<StreamResult>,
    pub(super) logs: Vec<LogRecord>,
    pub(super) driver: Driver,
    /// The stream's filter state when it ended, as Envoy's access log reads it.
    pub(super) filter_state: Vec<(String, Vec<u8>)>,
    pub(super) properties_read: Vec<String>,
}

impl Worker {
    /// Runs one HTTP stream to its end on the first HTTP plugin. A stream paused for a real
    /// callout (see `upstream`) waits for its answer first.
    pub fn http(&mut self, request: &HttpRequest) -> Result<StreamOutcome, HostError> {
        let handle = self.begin_http(request)?;
        self.wait_while_blocked(handle.0);
        Ok(self.finish(handle))
    }

    /// Runs one TCP connection to its end on the first network plugin, waiting as
    /// [`Worker::http`] does.
    pub fn tcp(&mut self, connection: &TcpStream) -> Result<StreamOutcome, HostError> {
        let handle = self.begin_tcp(connection)?;
        self.wait_while_blocked(handle.0);
        Ok(self.finish(handle))
    }

    /// Starts an HTTP stream and runs it as far as it goes: to its end, or until the module
    /// pauses it (e.g. waiting for a callout). Finish it with [`Worker::finish`].
    pub fn begin_http(&mut self, request: &HttpRequest) -> Result<StreamHandle, HostError> {
        let plugin = self.plugin_of_kind(PluginKind::Http)?;
        self.poll();
        let host = self.host.clone();
        let request_headers =
            match crate::hcm::request_headers(request, &host.options, || host.next_request_id()) {
                CodecVerdict::Accepted(headers) => headers,
                CodecVerdict::Refused { status } => return Ok(self.refused_by_codec(status)),
            };
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
            request_headers,
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
            events: connection.events().into(),
            upstream_host: connection.upstream_host,
            step: TcpStep::Create,
            connected: false,
            over_limit: false,
            client_fin: false,
            upstream_fin: false,
            closed: false,
            held_downstream: false,
            held_upstream: false,
            blocked: false,
            forwarded: Vec::new(),
            received: Vec::new(),
            data_calls: Vec::new(),
        });
        let state = StreamProtocol::Tcp(TcpStreamState {
            downstream: Vec::new(),
            upstream: Vec::new(),
            upstream_host: None,
        });
        let handle = self.open(plugin, &connection.connection, state, driver);
        self.advance(handle.0);
        Ok(handle)
    }

    /// Ends a stream (a paused one is abandoned by its client) and reports what happened.
    pub fn finish(&mut self, handle: StreamHandle) -> StreamOutcome {
        let id = handle.0;
        if let Some(stream) = self.streams.get_mut(&id) {
            match &mut stream.driver {
                Driver::Http(h) if h.blocked => {
                    h.blocked = false;
                    h.step = HttpStep::Log;
                    stream.result.get_or_insert(StreamResult::Paused);
                }
                Driver::Tcp(t) if t.blocked => {
                    // The client gives up and closes.
                    t.blocked = false;
                    t.events.clear();
                    t.step = TcpStep::Close;
                }
                _ => {}
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
        self.retire_drained_roots();
        let (kind, forwarded_request_headers, forwarded_bytes, received_bytes, data_calls) =
            match stream.driver {
                Driver::Http(h) => (
                    StreamKind::Http,
                    h.forwarded_headers,
                    h.forwarded,
                    Vec::new(),
                    Vec::new(),
                ),
                Driver::Tcp(t) => (StreamKind::Tcp, None, t.forwarded, t.received, t.data_calls),
            };
        StreamOutcome {
            kind,
            context_id: id,
            result: stream.result.unwrap_or(StreamResult::Continued),
            logs: stream.logs,
            forwarded_request_headers,
            forwarded_bytes,
            received_bytes,
            data_calls,
            filter_state: stream.filter_state,
            properties_read: stream.properties_read,
        }
    }

    /// Keeps what the stream's filter state holds (and the properties it read) before its
    /// context goes: the access log is written at the end of the stream.
    pub(super) fn keep_stream_state(&mut self, id: u32) {
        let kept = self
            .vm
            .state_mut()
            .contexts
            .get_mut(&id)
            .and_then(|c| c.stream_mut())
            .map(|s| {
                let state = s
                    .filter_state
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                    .collect();
                (state, std::mem::take(&mut s.properties_read))
            });
        if let (Some((state, read)), Some(stream)) = (kept, self.streams.get_mut(&id)) {
            stream.filter_state = state;
            stream.properties_read = read;
        }
    }

    /// Whether a stream is waiting for the module to resume it.
    pub fn is_paused(&self, handle: StreamHandle) -> bool {
        self.is_blocked(handle.0)
    }

    pub(super) fn is_blocked(&self, id: u32) -> bool {
        match self.streams.get(&id).map(|s| &s.driver) {
            Some(Driver::Http(h)) => h.blocked,
            Some(Driver::Tcp(t)) => t.blocked,
            None => false,
        }
    }

    /// A request the codec answered itself: no filter chain is built, so the module never
    /// hears of it.
    fn refused_by_codec(&mut self, status: u32) -> StreamHandle {
        let s = self.vm.state_mut();
        let id = s.next_context_id;
        s.next_context_id += 1;
        self.streams.insert(
            id,
            OpenStream {
                policy: FailurePolicy::default(),
                result: Some(StreamResult::LocalReply(LocalReply {
                    status,
                    headers: Vec::new(),
                    body: Vec::new(),
                    details: String::new(),
                    grpc_status: None,
                })),
                logs: Vec::new(),
                driver: Driver::Http(Box::new(HttpDriver {
                    request: HttpRequest::default(),
                    step: HttpStep::Done,
                    blocked: false,
                    reply: None,
                    forwarded_headers: None,
                    forwarded: Vec::new(),
                })),
                filter_state: Vec::new(),
                properties_read: Vec::new(),
            },
        );
        StreamHandle(id)
    }

    /// Registers a stream. When the VM has failed (and is not reloaded) the stream gets its
    /// failure result at once, without a context in the VM.
    pub(super) fn open(
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
        // HTTP streams start after the handshake; a TCP connection on terminated TLS starts
        // before it (the filter chain is built when the connection is accepted).
        let handshake_complete = !(connection.tls() && matches!(protocol, StreamProtocol::Tcp(_)));
        let state = StreamState {
            connection: Arc::new(connection.clone()),
            handshake_complete,
            tls_version: std::cell::OnceCell::new(),
            connection_id: self.host.next_connection_id(),
            start_unix_nanos: self.host.clock.realtime_nanos(),
            filter_state: Vec::new(),
            properties_read: Vec::new(),
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
                filter_state: Vec::new(),
                properties_read: Vec::new(),
            },
        );
        StreamHandle(id)
    }

    pub(super) fn stream_requests(&mut self, id: u32) -> StreamRequests {
        self.vm
            .state_mut()
            .contexts
            .get_mut(&id)
            .and_then(|c| c.stream_mut())
            .map(|s| std::mem::take(&mut s.requests))
            .unwrap_or_default()
    }

    /// Runs a stream until it ends or blocks.
    pub(super) fn advance(&mut self, id: u32) {
        loop {
            let Some(stream) = self.streams.get(&id) else {
                return;
            };
            let (done, blocked) = match &stream.driver {
                Driver::Http(h) => (h.step == HttpStep::Done, h.blocked),
                Driver::Tcp(t) => (t.step == TcpStep::Done, t.blocked),
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

    pub(super) fn end_after_failure(&mut self, id: u32, result: StreamResult) {
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

    pub(super) fn root_of(&self, id: u32) -> u32 {
        self.vm.state().contexts.get(&id).map_or(0, |c| c.root_id)
    }

    /// Calls a stream callback that returns an action; a missing export continues.
    pub(super) fn call_action(
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

    /// A trap in a stream callback: the VM fails and the stream fails closed or open.
    pub(super) fn fail_stream(&mut self, id: u32, trap: Trap) {
        let error = trap.to_string();
        self.fail_vm(trap);
        let policy = self.streams.get(&id).map(|s| s.policy).unwrap_or_default();
        self.end_after_failure(id, failure_result(policy, &error));
    }

    pub(super) fn set_result(&mut self, id: u32, result: StreamResult) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.result.get_or_insert(result);
        }
    }
}

/// What a stream gets from a failed VM.
pub(super) fn failure_result(policy: FailurePolicy, error: &str) -> StreamResult {
    let error = error.to_string();
    match policy {
        FailurePolicy::FailOpen => StreamResult::FailedOpen { error },
        FailurePolicy::FailClose | FailurePolicy::FailReload => {
            StreamResult::FailedClosed { error }
        }
    }
}
