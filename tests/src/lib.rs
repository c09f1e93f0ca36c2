//! egress-sim: a proxy-wasm ABI v0.2.1 host on wasmtime that runs a filter the way Envoy does.
//!
//! - [`Host`] loads a module once (one engine, one compiled module per process) and holds what
//!   Envoy keeps process-wide: shared data and queues per `vm_id`, metrics, and a clock the
//!   caller sets.
//! - [`Host::start`] follows Envoy's start-up: a configuration canary per plugin, then one VM
//!   per worker ([`Worker`]), each with every plugin started and configured. Workers are `Send`:
//!   each can run on its own thread, sharing the process-wide state.
//! - [`Worker::http`] and [`Worker::tcp`] run streams through the module's callbacks in Envoy's
//!   order and report what happened ([`StreamOutcome`]).
//!
//! The host knows the module only through the ABI.

pub mod abi;
pub mod accesslog;
pub mod client_hello;
pub mod clock;
pub mod config;
mod deployment;
pub mod error;
pub mod explain;
mod hcm;
pub mod headers;
mod hostcalls;
pub mod insights;
pub mod limits;
pub mod pairs;
pub mod plaintext;
pub mod properties;
pub mod replay;
pub mod shared;
mod state;
pub mod stream;
pub mod synthetic;
pub mod upstream;
mod vm;
mod worker;

pub use abi::{LogLevel, Status};
pub use clock::SimClock;
pub use config::{
    FailurePolicy, HostOptions, PathNormalization, PluginConfig, PluginKind, VmConfig,
};
pub use deployment::{CanaryReport, Deployment, Host};
pub use error::HostError;
pub use headers::HeaderMap;
pub use stream::{
    Connection, DataCall, Direction, HttpRequest, HttpResponse, LocalReply, LogRecord, StreamKind,
    StreamOutcome, StreamResult, TcpEvent, TcpStream, WAYPOINT_PEER_PRINCIPAL_KEY,
};
pub use vm::Trap;
pub use worker::{CalloutResponse, GrpcCallout, GrpcResponse, HttpCallout, StreamHandle, Worker};
