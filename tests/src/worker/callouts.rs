//! HTTP and gRPC callouts the module made, answered by the test, and foreign function
//! callbacks.

use super::Worker;
use crate::error::HostError;
use crate::headers::HeaderMap;
use crate::state::HttpCallResponseData;
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

    pub(super) fn deliver_grpc(
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

/// Pairs the test handed over as a header map (callout answers, gRPC metadata).
fn to_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::other();
    for (k, v) in pairs {
        map.add(k, v);
    }
    map
}
