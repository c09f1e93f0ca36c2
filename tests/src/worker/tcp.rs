//! A TCP connection's steps: the new connection, its events (client and upstream data and
//! FINs, the end of the handshake) delivered to the module, resuming after a callout, and the
//! close.

use std::collections::VecDeque;

use super::streams::Driver;
use super::Worker;
use crate::abi::{Action, PeerType};
use crate::state::TcpStreamState;
use crate::stream::{DataCall, Direction, StreamResult, TcpEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TcpStep {
    Create,
    NewConnection,
    /// Playing the connection's events.
    Event,
    Close,
    Done,
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

impl Worker {
    pub(super) fn tcp_state(&mut self, id: u32) -> Option<&mut TcpStreamState> {
        self.vm.state_mut().contexts.get_mut(&id)?.tcp_mut()
    }

    pub(super) fn tcp_driver(&mut self, id: u32) -> &mut TcpDriver {
        match self.streams.get_mut(&id).map(|s| &mut s.driver) {
            Some(Driver::Tcp(t)) => t,
            _ => unreachable!("TCP steps run only for open TCP streams"),
        }
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
                .and_then(|()| {
                    self.keep_stream_state(id);
                    self.vm.delete_context(id)
                });
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
