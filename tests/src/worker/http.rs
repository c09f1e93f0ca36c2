//! An HTTP stream's steps: request headers and body, the upstream's response or a local reply,
//! and the access-log phase, each settled from what the callback returned and what the module
//! asked for during it.

use super::streams::Driver;
use super::Worker;
use crate::abi::Action;
use crate::headers::HeaderMap;
use crate::state::{HttpStreamState, LocalReplyRequest};
use crate::stream::{HttpRequest, LocalReply, StreamResult};
use crate::vm::Trap;

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

pub(super) struct HttpDriver {
    pub(super) request: HttpRequest,
    pub(super) step: HttpStep,
    pub(super) blocked: bool,
    pub(super) reply: Option<LocalReplyRequest>,
    pub(super) forwarded_headers: Option<Vec<(String, String)>>,
    pub(super) forwarded: Vec<u8>,
}

impl Worker {
    pub(super) fn http_state(&mut self, id: u32) -> Option<&mut HttpStreamState> {
        self.vm.state_mut().contexts.get_mut(&id)?.http_mut()
    }

    pub(super) fn http_driver(&mut self, id: u32) -> &mut HttpDriver {
        match self.streams.get_mut(&id).map(|s| &mut s.driver) {
            Some(Driver::Http(h)) => h,
            _ => unreachable!("HTTP steps run only for open HTTP streams"),
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
                let result = result.and_then(|()| self.vm.done(id)).and_then(|_| {
                    self.keep_stream_state(id);
                    self.vm.delete_context(id)
                });
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
