//! HTTP and gRPC callouts the module made, answered by the test, and foreign function
//! callbacks.

use std::time::{Duration, Instant};

use super::Worker;
use crate::error::HostError;
use crate::headers::HeaderMap;
use crate::state::HttpCallResponseData;
use crate::upstream::{GrpcOutcome, TIMEOUT_MESSAGE};
use crate::vm::{Callback, Trap};

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
    /// The module closed its side of a stream (`proxy_grpc_close` or `end_stream`).
    pub closed_by_module: bool,
    /// Where a real call goes (a cluster of `HostOptions::cluster_endpoints`); `None`: the
    /// caller answers it.
    pub endpoint: Option<std::net::SocketAddr>,
}

/// The answer to a gRPC callout.
///
/// A unary call gets what Envoy's async client hands a unary call: on status 0 its one message
/// (`proxy_on_grpc_receive`, no close callback), on any other status only
/// `proxy_on_grpc_close`; never metadata callbacks (Envoy has none for calls). Status 0 without
/// a message closes with 13 INTERNAL. A stream gets everything, in order, then the close.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcResponse {
    pub initial_metadata: Vec<(String, String)>,
    pub messages: Vec<Vec<u8>>,
    pub trailing_metadata: Vec<(String, String)>,
    pub status: u32,
    pub status_message: String,
}

impl GrpcResponse {
    /// A successful unary answer.
    pub fn message(message: Vec<u8>) -> Self {
        Self {
            messages: vec![message],
            ..Self::default()
        }
    }

    /// A failed call or a closed stream.
    pub fn closed(status: u32, message: &str) -> Self {
        Self {
            status,
            status_message: message.to_string(),
            ..Self::default()
        }
    }

    fn from_outcome(outcome: GrpcOutcome) -> Self {
        match outcome {
            GrpcOutcome::Message(message) => Self::message(message),
            GrpcOutcome::Closed { status, message } => Self::closed(status, &message),
        }
    }
}

/// The longest a run-to-completion stream waits for a real callout that has no timeout.
const MAX_CALLOUT_WAIT: Duration = Duration::from_secs(60);

impl Worker {
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
        let result = self.deliver_http(pending.root_context_id, token, response);
        self.after_out_of_stream_call(result);
        Ok(())
    }

    /// Times an HTTP callout out now, as Envoy's router does: a 504 answer whose body is
    /// `upstream request timeout`, delivered as a response.
    pub fn time_out_http_callout(&mut self, token: u32) -> Result<(), HostError> {
        self.respond_http_callout(token, Some(http_timeout_response()))
    }

    fn deliver_http(
        &mut self,
        root: u32,
        token: u32,
        response: Option<CalloutResponse>,
    ) -> Result<(), Trap> {
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
        result
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

    /// Answers a gRPC callout (see [`GrpcResponse`] for what the module gets), then resumes
    /// streams the module continued.
    pub fn respond_grpc_callout(
        &mut self,
        token: u32,
        response: GrpcResponse,
    ) -> Result<(), HostError> {
        self.check_alive()?;
        let calls = &mut self.vm.state_mut().grpc_calls;
        let unary = !calls
            .get(&token)
            .ok_or(HostError::UnknownCallout(token))?
            .call
            .streaming;
        if unary && !(response.initial_metadata.is_empty() && response.trailing_metadata.is_empty())
        {
            return Err(HostError::MetadataForUnaryCall(token));
        }
        let pending = calls
            .remove(&token)
            .ok_or(HostError::UnknownCallout(token))?;
        let root = pending.root_context_id;
        let streaming = pending.call.streaming;
        let result = self.deliver_grpc(root, token, streaming, response);
        self.after_out_of_stream_call(result);
        Ok(())
    }

    /// Times a gRPC call out now, as Envoy does: `proxy_on_grpc_close` with 14 UNAVAILABLE and
    /// `upstream request timeout` (the router's 504; `deadline_exceeded`: 4, as Envoy answers
    /// behind its `grpc_timeout_returns_deadline_exceeded` runtime guard).
    pub fn time_out_grpc_callout(
        &mut self,
        token: u32,
        deadline_exceeded: bool,
    ) -> Result<(), HostError> {
        let status = if deadline_exceeded { 4 } else { 14 };
        self.respond_grpc_callout(token, GrpcResponse::closed(status, TIMEOUT_MESSAGE))
    }

    /// Real calls still waiting for their answer.
    pub fn callouts_in_flight(&self) -> usize {
        self.vm
            .state()
            .grpc_calls
            .values()
            .filter(|p| p.network.is_some())
            .count()
    }

    /// Delivers the answers of real calls that arrived, and times out the callouts answered by
    /// the caller whose timeout passed on the host clock: what Envoy's event loop does between
    /// other events. Returns how many were delivered.
    pub fn deliver_callouts(&mut self) -> usize {
        if self.failure.is_some() {
            return 0;
        }
        let mut delivered = 0;
        loop {
            let next = self.vm.state().completions.1.try_recv();
            let Ok(completion) = next else { break };
            delivered += self.deliver_completion(completion.token, completion.outcome);
        }
        let now = self.host.clock.monotonic_nanos();
        let due = |deadline: Option<u64>| deadline.is_some_and(|d| d <= now);
        let grpc: Vec<u32> = (self.vm.state().grpc_calls.iter())
            .filter(|(_, p)| p.network.is_none() && due(p.deadline))
            .map(|(token, _)| *token)
            .collect();
        for token in grpc {
            if self.time_out_grpc_callout(token, false).is_ok() {
                delivered += 1;
            }
        }
        let http: Vec<u32> = (self.vm.state().http_calls.iter())
            .filter(|(_, p)| due(p.deadline))
            .map(|(token, _)| *token)
            .collect();
        for token in http {
            if self.time_out_http_callout(token).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }

    /// Waits for real calls to answer (at most `timeout`), then delivers what arrived.
    pub fn wait_for_callouts(&mut self, timeout: Duration) -> usize {
        if self.failure.is_some() || self.callouts_in_flight() == 0 {
            return self.deliver_callouts();
        }
        let first = self.vm.state().completions.1.recv_timeout(timeout);
        let mut delivered = match first {
            Ok(completion) => self.deliver_completion(completion.token, completion.outcome),
            Err(_) => 0,
        };
        delivered += self.deliver_callouts();
        delivered
    }

    /// Waits until the stream no longer waits for a real call of its own (answered, or the
    /// call's own timeout), or [`MAX_CALLOUT_WAIT`] passed.
    pub(super) fn wait_while_blocked(&mut self, id: u32) {
        let give_up = Instant::now() + MAX_CALLOUT_WAIT;
        while self.is_blocked(id) && self.stream_waits_for_network(id) {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.wait_for_callouts(left);
        }
    }

    fn stream_waits_for_network(&self, id: u32) -> bool {
        (self.vm.state().grpc_calls.values()).any(|p| p.caller == id && p.network.is_some())
    }

    /// Whether a callout made from stream `id` is pending (a paused connection waits for it).
    pub(super) fn stream_has_callout(&self, id: u32) -> bool {
        let state = self.vm.state();
        state.grpc_calls.values().any(|p| p.caller == id)
            || state.http_calls.values().any(|p| p.caller == id)
    }

    fn deliver_completion(&mut self, token: u32, outcome: GrpcOutcome) -> usize {
        // A call cancelled meanwhile, or of a VM that was replaced, is no longer in the table.
        let Some(pending) = self.vm.state_mut().grpc_calls.remove(&token) else {
            return 0;
        };
        let response = GrpcResponse::from_outcome(outcome);
        let result = self.deliver_grpc(pending.root_context_id, token, false, response);
        self.after_out_of_stream_call(result);
        1
    }

    pub(super) fn deliver_grpc(
        &mut self,
        root: u32,
        token: u32,
        streaming: bool,
        response: GrpcResponse,
    ) -> Result<(), Trap> {
        let tok = token as i32;
        if !streaming {
            // Envoy's unary callbacks: the message on success, else only the close.
            let message = match (response.status, response.messages.into_iter().next()) {
                (0, Some(message)) => message,
                (0, None) => {
                    return self.deliver_grpc_close(
                        root,
                        token,
                        13,
                        "unary call without a response message".into(),
                    )
                }
                (status, _) => {
                    return self.deliver_grpc_close(root, token, status, response.status_message)
                }
            };
            return self.deliver_grpc_message(root, token, message);
        }
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
            self.deliver_grpc_message(root, token, message)?;
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
        self.deliver_grpc_close(root, token, response.status, response.status_message)
    }

    /// `proxy_on_grpc_receive`: the message is readable in buffer 5 during the callback.
    fn deliver_grpc_message(
        &mut self,
        root: u32,
        token: u32,
        message: Vec<u8>,
    ) -> Result<(), Trap> {
        let len = message.len() as i32;
        if let Some(r) = self.root_state(root) {
            r.grpc_message = message;
        }
        let result = match self.vm.cb.on_grpc_receive.clone() {
            Some(f) => self.vm.call(
                root,
                "proxy_on_grpc_receive",
                &f,
                (root as i32, token as i32, len),
            ),
            None => Ok(()),
        };
        if let Some(r) = self.root_state(root) {
            r.grpc_message.clear();
        }
        result
    }

    /// `proxy_on_grpc_close`, with the status readable through `proxy_get_status`.
    fn deliver_grpc_close(
        &mut self,
        root: u32,
        token: u32,
        status: u32,
        message: String,
    ) -> Result<(), Trap> {
        if let Some(r) = self.root_state(root) {
            r.status = (status, message.into_bytes());
        }
        match self.vm.cb.on_grpc_close.clone() {
            Some(f) => self.vm.call(
                root,
                "proxy_on_grpc_close",
                &f,
                (root as i32, token as i32, status as i32),
            ),
            None => Ok(()),
        }
    }

    /// Initial or trailing gRPC metadata: readable through its header map only while the
    /// module's callback runs, as in Envoy.
    pub(super) fn deliver_grpc_metadata(
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
}

/// The router's answer to a request that timed out.
fn http_timeout_response() -> CalloutResponse {
    let body = TIMEOUT_MESSAGE.as_bytes().to_vec();
    CalloutResponse {
        headers: vec![
            (":status".into(), "504".into()),
            ("content-length".into(), body.len().to_string()),
            ("content-type".into(), "text/plain".into()),
        ],
        body,
        trailers: Vec::new(),
    }
}

/// Pairs the test handed over as a header map (callout answers, gRPC metadata).
fn to_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::other();
    for (k, v) in pairs {
        map.add(k, v);
    }
    map
}
