//! What the caller configures: the VM (Envoy `VmConfig`), the plugins loaded into it (Envoy
//! `PluginConfig`, Istio `WasmPlugin`) and host options.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::abi::{LogLevel, Status};

/// Envoy `VmConfig`: one VM per worker is created from it; shared data and queues are scoped by
/// its `vm_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmConfig {
    /// Istio leaves it empty for WasmPlugins, so every plugin of the same module shares data.
    pub vm_id: String,
    /// Bytes handed to `proxy_on_vm_start` (buffer `VM_CONFIGURATION`).
    pub configuration: Vec<u8>,
    /// Environment variables the module sees through WASI (Istio `vmConfig.env`).
    pub environment: Vec<(String, String)>,
}

/// Whether Envoy loads the plugin as an HTTP filter or as a network (L4) filter
/// (Istio `WasmPlugin.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    Http,
    Network,
}

/// What happens to traffic when the VM has failed (Istio `failStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailurePolicy {
    /// Requests fail: HTTP gets 503, connections are closed (Istio `FAIL_CLOSE`, the default).
    #[default]
    FailClose,
    /// The filter is skipped (Istio `FAIL_OPEN`).
    FailOpen,
    /// A new VM is created for the next stream after a runtime error; until then, and for other
    /// failures, as `FailClose` (Istio `FAIL_RELOAD`).
    FailReload,
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailurePolicy::FailClose => "FAIL_CLOSE",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        })
    }
}

/// One plugin: a root context in every VM, configured with `configuration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// Envoy plugin name (Istio: `<namespace>.<WasmPlugin name>`); the `plugin_name` property.
    pub name: String,
    /// Selects the root context in the module (Istio `pluginName`); the `plugin_root_id`
    /// property.
    pub root_id: String,
    pub kind: PluginKind,
    /// Bytes handed to `proxy_on_configure` (Istio `pluginConfig` as JSON).
    pub configuration: Vec<u8>,
    pub failure_policy: FailurePolicy,
}

impl PluginConfig {
    pub fn http(name: &str, root_id: &str, configuration: impl Into<Vec<u8>>) -> PluginConfig {
        PluginConfig {
            name: name.to_string(),
            root_id: root_id.to_string(),
            kind: PluginKind::Http,
            configuration: configuration.into(),
            failure_policy: FailurePolicy::FailClose,
        }
    }

    pub fn network(name: &str, root_id: &str, configuration: impl Into<Vec<u8>>) -> PluginConfig {
        PluginConfig {
            kind: PluginKind::Network,
            ..PluginConfig::http(name, root_id, configuration)
        }
    }

    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> PluginConfig {
        self.failure_policy = policy;
        self
    }
}

/// Istio's mesh `pathNormalization.normalization`: what the connection manager does to `:path`
/// before any filter (Istio `listener_builder.go`, "Setup normalization").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PathNormalization {
    /// `NONE`: the path as the client sent it (only a `#fragment` is cut).
    None,
    /// `BASE` / `DEFAULT`, Istio's default: `normalize_path` (RFC 3986 dot segments, unreserved
    /// escapes decoded, `\` to `/`); `merge_slashes` off; escaped slashes kept.
    #[default]
    Base,
    /// `MERGE_SLASHES`: `BASE` and `merge_slashes`.
    MergeSlashes,
    /// `DECODE_AND_MERGE_SLASHES`: `%2F`/`%5C` decoded first (`UNESCAPE_AND_FORWARD`), then as
    /// `MERGE_SLASHES`.
    DecodeAndMergeSlashes,
}

/// A host-provided function the module can call with `proxy_call_foreign_function`.
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// Host behaviour that Envoy takes from its own configuration.
#[derive(Clone)]
pub struct HostOptions {
    /// Envoy's log level for the `wasm` logger: `proxy_get_log_level` returns it and lower
    /// messages are dropped.
    pub log_level: LogLevel,
    /// Upstream clusters known to the host: `proxy_http_call`/`proxy_grpc_*` to other names fail
    /// as they do in Envoy.
    pub clusters: Vec<String>,
    /// Clusters reachable over the network: a unary `proxy_grpc_call` to one of these names is
    /// a real gRPC call over HTTP/2 (plaintext) to the address, answered when the worker next
    /// processes events (see `upstream`). Other calls are answered by the caller
    /// (`Worker::respond_grpc_callout`).
    pub cluster_endpoints: BTreeMap<String, SocketAddr>,
    /// Seed for `random_get`, so runs are reproducible.
    pub random_seed: u64,
    /// The gateway's own identity (`connection.uri_san_local_certificate` on mTLS connections).
    pub local_principal: String,
    /// Add the request headers Envoy's HTTP connection manager adds before any filter runs
    /// (`x-forwarded-proto`, `x-request-id`) when the request lacks them.
    pub connection_manager_headers: bool,
    /// Minimum time between two VM reloads under `FailReload` (Envoy `ReloadConfig.backoff`,
    /// 1 s by default).
    pub reload_backoff: Duration,
    /// Foreign functions by name. `clear_route_cache` is always present.
    pub foreign_functions: HashMap<String, ForeignFunction>,
    /// The mesh's path normalisation, applied to `:path` before any filter.
    pub path_normalization: PathNormalization,
    /// Envoy `http_protocol_options.accept_http_10`: off by default, so HTTP/1.0 requests get a
    /// 426 from the codec and never reach a filter.
    pub accept_http_10: bool,
    /// Envoy's per-connection buffer limit (`per_connection_buffer_limit_bytes`, 1 MiB by
    /// default): once a connection holds more unforwarded client bytes, Envoy stops reading from
    /// it and no further data callback comes.
    pub connection_buffer_limit: usize,
    /// Envoy's main thread runs the plugins too (configured, ticking, never serving streams):
    /// [`crate::Deployment`] starts such a VM next to the workers.
    pub main_thread_vm: bool,
    /// Node metadata (`xds.node.metadata.<key>`), as Istio's bootstrap sets it.
    pub node_metadata: Vec<(String, String)>,
    /// The node id (`xds.node.id`).
    pub node_id: String,
    /// Keep the path of every property a stream's context reads, in order
    /// ([`crate::StreamOutcome::properties_read`]); off by default, as it costs time per read.
    pub record_property_reads: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            log_level: LogLevel::Info,
            clusters: Vec::new(),
            cluster_endpoints: BTreeMap::new(),
            random_seed: 0x5eed,
            local_principal: "cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
                .to_string(),
            connection_manager_headers: true,
            reload_backoff: Duration::from_secs(1),
            foreign_functions: HashMap::new(),
            path_normalization: PathNormalization::Base,
            accept_http_10: false,
            connection_buffer_limit: 1024 * 1024,
            main_thread_vm: true,
            node_metadata: vec![
                ("CLUSTER_ID".to_string(), "Kubernetes".to_string()),
                ("ISTIO_VERSION".to_string(), "1.24.0".to_string()),
            ],
            node_id:
                "router~10.0.0.2~istio-egressgateway-0.istio-system~istio-system.svc.cluster.local"
                    .to_string(),
            record_property_reads: false,
        }
    }
}

impl fmt::Debug for HostOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut foreign: Vec<&String> = self.foreign_functions.keys().collect();
        foreign.sort();
        f.debug_struct("HostOptions")
            .field("log_level", &self.log_level)
            .field("clusters", &self.clusters)
            .field("cluster_endpoints", &self.cluster_endpoints)
            .field("random_seed", &self.random_seed)
            .field("local_principal", &self.local_principal)
            .field(
                "connection_manager_headers",
                &self.connection_manager_headers,
            )
            .field("reload_backoff", &self.reload_backoff)
            .field("foreign_functions", &foreign)
            .field("path_normalization", &self.path_normalization)
            .field("accept_http_10", &self.accept_http_10)
            .field("connection_buffer_limit", &self.connection_buffer_limit)
            .field("main_thread_vm", &self.main_thread_vm)
            .field("node_metadata", &self.node_metadata)
            .field("node_id", &self.node_id)
            .finish()
    }
}
