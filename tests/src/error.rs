//! Errors of the host.

use std::path::PathBuf;

use crate::stream::LogRecord;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{} not found: build it with `{hint}`", path.display())]
    WasmNotFound { path: PathBuf, hint: String },

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid Wasm module: {0}")]
    Compile(String),

    /// Envoy refuses a module that imports something it does not provide.
    #[error("Failed to load Wasm module due to a missing import: {module}.{name}")]
    MissingImport { module: String, name: String },

    #[error("Failed to load Wasm module: {0}")]
    Link(String),

    #[error("Missing or unknown Proxy-Wasm ABI version (the module exports none of proxy_abi_version_0_2_0, proxy_abi_version_0_2_1)")]
    AbiVersion,

    #[error("Proxy-Wasm ABI 0.1.0 is not supported by this host (use 0.2.0 or 0.2.1)")]
    AbiVersionUnsupported,

    #[error("Wasm module is missing its allocator: it exports neither proxy_on_memory_allocate nor malloc")]
    MissingAllocator,

    #[error("Wasm module does not export its memory as \"memory\"")]
    MissingMemory,

    #[error("Bad function signature for: {0}")]
    BadSignature(String),

    #[error("cannot instantiate the Wasm module: {0}")]
    Instantiate(String),

    #[error("Wasm module failed while initializing: {0}")]
    Initialize(String),

    #[error("plugin {plugin}: proxy_on_vm_start returned false")]
    VmStartFailed {
        plugin: String,
        logs: Vec<LogRecord>,
    },

    /// `proxy_on_configure` returned false: Envoy rejects the configuration.
    #[error("plugin {plugin}: the configuration was rejected (proxy_on_configure returned false)")]
    ConfigRejected {
        plugin: String,
        logs: Vec<LogRecord>,
    },

    #[error("plugin {plugin}: {trap}")]
    StartTrap {
        plugin: String,
        trap: crate::vm::Trap,
        logs: Vec<LogRecord>,
    },

    #[error("plugins must have distinct names: {0:?} is used twice")]
    DuplicatePlugin(String),

    #[error("no plugin named {0:?}")]
    UnknownPlugin(String),

    #[error("no plugin of kind {0:?} is loaded")]
    NoPluginOfKind(crate::config::PluginKind),

    #[error("no pending callout with token {0}")]
    UnknownCallout(u32),

    /// Envoy's unary gRPC handler has no metadata callbacks: only the message, or the close on
    /// failure, reach the module.
    #[error("gRPC call {0} is unary: Envoy delivers no initial or trailing metadata for it")]
    MetadataForUnaryCall(u32),

    #[error("the VM has failed: {0}")]
    VmFailed(String),

    #[error("a deployment needs at least one worker")]
    NoWorkers,

    /// Envoy's main thread runs the plugins' roots (configuration, ticks) but no streams.
    #[error("the main thread's VM serves no streams")]
    MainThreadServesNoStreams,
}

impl HostError {
    /// The module's log lines that came with the error (why a configuration was rejected).
    pub fn logs(&self) -> &[LogRecord] {
        match self {
            HostError::VmStartFailed { logs, .. }
            | HostError::ConfigRejected { logs, .. }
            | HostError::StartTrap { logs, .. } => logs,
            _ => &[],
        }
    }
}
