//! HTTP streams and TCP connections, driven through the module's callbacks in Envoy's order
//! (see the module above for the sequences), paused and resumed, and their outcome.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Worker;
use crate::abi::{Action, PeerType};
use crate::config::{FailurePolicy, PluginKind};
use crate::error::HostError;
use crate::hcm::CodecVerdict;
use crate::headers::HeaderMap;
use crate::state::{
    ContextKind, HttpStreamState, LocalReplyRequest, StreamProtocol, StreamRequests, StreamState,
    TcpStreamState,
};
use crate::stream::{
    DataCall, Direction, HttpRequest, LocalReply, LogRecord, StreamKind, StreamOutcome,
    StreamResult, TcpEvent, TcpStream,
};
use crate::vm::Trap;

/// A stream started with [`Worker::begin_http`] or [`Worker::begin_tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamHandle(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HttpStep {
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
pub(super) enum TcpStep {
    Create,
    NewConnection,
    /// Playing the connection's events.
    Event,
    Close,
    Done,
}

pub(super) struct HttpDriver {
    pub(super) request: HttpRequest,
    pub(super) step: HttpStep,
    pub(super) blocked: bool,
    pub(super) reply: Option<LocalReplyRequest>,
    pub(super) forwarded_headers: Option<Vec<(String, String)>>,
    pub(super) forwarded: Vec<u8>,
}

pub(super) struct TcpDriver {
    pub(super) events: VecDeque<TcpEvent>,
    pub(super) upstream_host: std::net::SocketAddr,
    pub(super) step: TcpStep,
    /// tcp_proxy ran and connected upstream (the filters let `on_new_connection` through).
    pub(super) connected: bool,
    /// The client's buffered bytes passed the connection buffer limit: Envoy reads no more.
    pub(super) over_limit: bool,
    pub(super) client_fin: bool,
    pub(super) upstream_fin: bool,
    /// The module closed the connection.
    pub(super) closed: bool,
    pub(super) held_downstream: bool,
    pub(super) held_upstream: bool,
    /// Paused while a callout it made is pending: no further event until it is answered.
    pub(super) blocked: bool,
    pub(super) forwarded: Vec<u8>,
    pub(super) received: Vec<u8>,
    pub(super) data_calls: Vec<DataCall>,
}

impl TcpDriver {
    /// Bytes the module held in either direction at its last callback.
    fn held(&self) -> bool {
        self.held_downstream || self.held_upstream
    }

    /// Whether Envoy reads from the client now.
    fn reads_client(&self) -> bool {
        self.connected && !self.over_limit && !self.client_fin
    }
}

pub(super) enum Driver {
    Http(Box<HttpDriver>),
    Tcp(TcpDriver),
}

pub(super) struct OpenStream {
    pub(super) policy: FailurePolicy,
    pub(super) result: Option<StreamResult>,
    pub(super) logs: Vec<LogRecord>,
    pub(super) driver: Driver,
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

    pub(super) fn stream_requests(&mut self, id: u32) -> StreamRequests {
        self.vm
            .state_mut()
            .contexts
            .get_mut(&id)
            .and_then(|c| c.stream_mut())
            .map(|s| std::mem::take(&mut s.requests))
            .unwrap_or_default()
    }

    pub(super) fn http_state(&mut self, id: u32) -> Option<&mut HttpStreamState> {
        self.vm.state_mut().contexts.get_mut(&id)?.http_mut()
    }

    pub(super) fn tcp_state(&mut self, id: u32) -> Option<&mut TcpStreamState> {
        self.vm.state_mut().contexts.get_mut(&id)?.tcp_mut()
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

    pub(super) fn http_driver(&mut self, id: u32) -> &mut HttpDriver {
        match self.streams.get_mut(&id).map(|s| &mut s.driver) {
            Some(Driver::Http(h)) => h,
            _ => unreachable!("HTTP steps run only for open HTTP streams"),
        }
    }

    pub(super) fn tcp_driver(&mut self, id: u32) -> &mut TcpDriver {
        match self.streams.get_mut(&id).map(|s| &mut s.driver) {
            Some(Driver::Tcp(t)) => t,
            _ => unreachable!("TCP steps run only for open TCP streams"),
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

    pub(super) fn run_http_step(&mut self, id: u32, step: HttpStep) {
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
    pub(super) fn finalize_http(&mut self, id: u32) {
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
    pub(super) fn fail_stream(&mut self, id: u32, trap: Trap) {
        let error = trap.to_string();
        self.fail_vm(trap);
        let policy = self.streams.get(&id).map(|s| s.policy).unwrap_or_default();
        self.end_after_failure(id, failure_result(policy, &error));
    }

    /// Applies what a callback returned and what the module asked for during it. `resumed` is
    /// set when re-checking a blocked stream after a callout.
    pub(super) fn settle_http(&mut self, id: u32, result: Result<Action, Trap>, resumed: bool) {
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

    pub(super) fn set_result(&mut self, id: u32, result: StreamResult) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.result.get_or_insert(result);
        }
    }

    /// The request part of a step is done: forward it and move on.
    pub(super) fn complete_request_step(&mut self, id: u32, step: HttpStep) {
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

    pub(super) fn complete_response_step(&mut self, id: u32, step: HttpStep) {
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

    pub(super) fn run_tcp_step(&mut self, id: u32, step: TcpStep) {
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
                let action = match result {
                    Ok(action) => action,
                    Err(trap) => return self.fail_stream(id, trap),
                };
                let requests = self.stream_requests(id);
                if requests.close.is_some() {
                    return self.module_closed(id);
                }
                // Continue lets the next filter, tcp_proxy, run: it connects upstream at once and
                // then enables reading from the client. After a Pause nothing runs it: reads stay
                // disabled and no data callback ever comes (Envoy `FilterManagerImpl::
                // onContinueReading`, tcp_proxy `initializeReadFilterCallbacks`).
                if action == Action::Continue || requests.continue_downstream {
                    let host = self.tcp_driver(id).upstream_host;
                    if let Some(t) = self.tcp_state(id) {
                        t.upstream_host = Some(host);
                    }
                    let driver = self.tcp_driver(id);
                    driver.connected = true;
                } else if self.stream_has_callout(id) {
                    self.tcp_driver(id).blocked = true;
                }
                self.tcp_driver(id).step = TcpStep::Event;
            }
            TcpStep::Event => {
                let Some(event) = self.tcp_driver(id).events.pop_front() else {
                    self.tcp_driver(id).step = TcpStep::Close;
                    return;
                };
                self.run_tcp_event(id, event);
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
                } else if !driver.connected || driver.held() {
                    StreamResult::Paused
                } else {
                    StreamResult::Continued
                };
                self.set_result(id, result);
            }
            TcpStep::Done => {}
        }
    }

    fn run_tcp_event(&mut self, id: u32, event: TcpEvent) {
        let limit = self.host.options.connection_buffer_limit;
        match event {
            TcpEvent::HandshakeComplete => self.complete_handshake(id),
            TcpEvent::ClientClose => self.tcp_driver(id).step = TcpStep::Close,
            TcpEvent::EarlierFilterDrains(n) => {
                if let Some(t) = self.tcp_state(id) {
                    let n = n.min(t.downstream.len());
                    t.downstream.drain(..n);
                }
            }
            TcpEvent::ClientData(bytes) => {
                if !self.tcp_driver(id).reads_client() {
                    return;
                }
                self.complete_handshake(id);
                let size = self.tcp_state(id).map_or(0, |t| {
                    t.downstream.extend_from_slice(&bytes);
                    t.downstream.len()
                });
                self.deliver(id, Direction::Downstream, size, false);
                // Past the buffer limit Envoy stops reading from the client (read-disable on
                // the high watermark); the connection is not closed.
                if self
                    .tcp_state(id)
                    .is_some_and(|t| t.downstream.len() > limit)
                {
                    self.tcp_driver(id).over_limit = true;
                }
            }
            TcpEvent::ClientFin => {
                if !self.tcp_driver(id).reads_client() {
                    return;
                }
                self.complete_handshake(id);
                self.tcp_driver(id).client_fin = true;
                let size = self.tcp_state(id).map_or(0, |t| t.downstream.len());
                self.deliver(id, Direction::Downstream, size, true);
            }
            TcpEvent::UpstreamData(bytes) => {
                let driver = self.tcp_driver(id);
                if !driver.connected || driver.upstream_fin {
                    return;
                }
                let size = self.tcp_state(id).map_or(0, |t| {
                    t.upstream.extend_from_slice(&bytes);
                    t.upstream.len()
                });
                self.deliver(id, Direction::Upstream, size, false);
            }
            TcpEvent::UpstreamFin => {
                let driver = self.tcp_driver(id);
                if !driver.connected || driver.upstream_fin {
                    return;
                }
                driver.upstream_fin = true;
                let size = self.tcp_state(id).map_or(0, |t| t.upstream.len());
                self.deliver(id, Direction::Upstream, size, true);
                if self.tcp_driver(id).step != TcpStep::Event {
                    return;
                }
                // Envoy raises this on the upstream's end_stream through the write path, with
                // peer Unknown ("registering for the upstream connection event would need the
                // whole TCP proxy", `Context::onWrite`).
                let result = match self.vm.cb.on_upstream_connection_close.clone() {
                    Some(f) => self.vm.call(
                        id,
                        "proxy_on_upstream_connection_close",
                        &f,
                        (id as i32, PeerType::Unknown as i32),
                    ),
                    None => Ok(()),
                };
                if let Err(trap) = result {
                    self.fail_stream(id, trap);
                }
            }
        }
    }

    /// The handshake is over: the peer certificate (if any) becomes visible.
    fn complete_handshake(&mut self, id: u32) {
        if let Some(s) = self
            .vm
            .state_mut()
            .contexts
            .get_mut(&id)
            .and_then(|c| c.stream_mut())
        {
            s.handshake_complete = true;
        }
    }

    /// `proxy_on_downstream_data` or `proxy_on_upstream_data` with that direction's whole buffer.
    /// Continue passes it on (the client's bytes to tcp_proxy, the server's to the client), as
    /// does `proxy_continue_stream(DOWNSTREAM)` for the client's; Pause leaves it buffered for the
    /// next read (the server's is shown again only with the next upstream read:
    /// `proxy_continue_stream(UPSTREAM)` is unimplemented).
    fn deliver(&mut self, id: u32, direction: Direction, size: usize, end_of_stream: bool) {
        let (f, name) = match direction {
            Direction::Downstream => (
                self.vm.cb.on_downstream_data.clone(),
                "proxy_on_downstream_data",
            ),
            Direction::Upstream => (
                self.vm.cb.on_upstream_data.clone(),
                "proxy_on_upstream_data",
            ),
        };
        let action = match self.call_action(id, name, f, size, end_of_stream) {
            Ok(action) => action,
            Err(trap) => return self.fail_stream(id, trap),
        };
        self.tcp_driver(id).data_calls.push(DataCall {
            direction,
            size,
            end_of_stream,
            action,
        });
        let requests = self.stream_requests(id);
        if requests.close.is_some() {
            return self.module_closed(id);
        }
        let go_on = action == Action::Continue
            || (direction == Direction::Downstream && requests.continue_downstream);
        let passed = match self.tcp_state(id) {
            Some(t) if go_on => std::mem::take(match direction {
                Direction::Downstream => &mut t.downstream,
                Direction::Upstream => &mut t.upstream,
            }),
            _ => Vec::new(),
        };
        let held = !go_on && size > 0;
        let driver = self.tcp_driver(id);
        match direction {
            Direction::Downstream => {
                driver.forwarded.extend_from_slice(&passed);
                driver.held_downstream = held;
            }
            Direction::Upstream => {
                driver.received.extend_from_slice(&passed);
                driver.held_upstream = held;
            }
        }
        // Paused for a callout of its own: the module sees nothing new before it answers (the
        // test traffic waits, as a client waits for its first reply).
        if !go_on && self.stream_has_callout(id) {
            self.tcp_driver(id).blocked = true;
        }
    }

    /// A connection paused for a callout, after the callback that answered it: the module
    /// closed it, continued it (`proxy_continue_stream(DOWNSTREAM)`: tcp_proxy connects if it had
    /// not, and the held client bytes go up), or still waits for a callout.
    pub(super) fn resume_tcp(&mut self, id: u32) {
        let requests = self.stream_requests(id);
        if requests.close.is_some() {
            return self.module_closed(id);
        }
        if requests.continue_downstream {
            let host = self.tcp_driver(id).upstream_host;
            let forwarded = match self.tcp_state(id) {
                Some(t) => {
                    t.upstream_host = Some(host);
                    std::mem::take(&mut t.downstream)
                }
                None => Vec::new(),
            };
            let driver = self.tcp_driver(id);
            driver.connected = true;
            driver.forwarded.extend_from_slice(&forwarded);
            driver.held_downstream = false;
        } else if self.stream_has_callout(id) {
            self.tcp_driver(id).blocked = true;
        }
    }

    /// The module closed the connection (`proxy_close_stream`): Envoy closes it after the
    /// callback (`close(FlushWrite)`), and nothing more is read or written.
    fn module_closed(&mut self, id: u32) {
        let driver = self.tcp_driver(id);
        driver.closed = true;
        driver.step = TcpStep::Close;
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

/// Envoy's local reply headers: `:status`, the module's headers (keys lower-cased, appended),
/// and for a body `content-length` and a `content-type` of text/plain unless the module set one.
pub(super) fn local_reply_headers(reply: &LocalReplyRequest) -> HeaderMap {
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
