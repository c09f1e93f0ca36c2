//! The host's process-wide side: one compiled module, the shared state, the clock, and Envoy's
//! start-up sequence (canary, then one configured VM per worker: a [`Deployment`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::{Engine, ExternType, InstancePre, Linker, Module};

use crate::clock::SimClock;
use crate::config::{HostOptions, PluginConfig, VmConfig};
use crate::error::HostError;
use crate::shared::SharedState;
use crate::state::VmState;
use crate::stream::LogRecord;
use crate::vm::Vm;
use crate::worker::Worker;

/// One engine per process, as Envoy has one Wasm runtime. Built with the `profiling` feature,
/// `EGRESS_SIM_PERFMAP=1` writes `/tmp/perf-<pid>.map` so `perf report` names Wasm functions.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        #[cfg(feature = "profiling")]
        if std::env::var_os("EGRESS_SIM_PERFMAP").is_some() {
            let mut config = wasmtime::Config::new();
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            if let Ok(engine) = Engine::new(&config) {
                return engine;
            }
        }
        Engine::default()
    })
}

/// Compiled modules by content, so tests that start many hosts from one file compile it once.
fn compile(bytes: &[u8]) -> Result<Module, HostError> {
    type Cache = Mutex<HashMap<Vec<u8>, Module>>;
    static MODULES: OnceLock<Cache> = OnceLock::new();
    let cache = MODULES.get_or_init(Default::default);
    if let Some(module) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(bytes) {
        return Ok(module.clone());
    }
    let module = Module::new(engine(), bytes).map_err(|e| HostError::Compile(format!("{e:#}")))?;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(bytes.to_vec(), module.clone());
    Ok(module)
}

/// What the host shares with its workers.
pub(crate) struct HostInner {
    pre: InstancePre<VmState>,
    pub shared: Arc<SharedState>,
    pub clock: Arc<SimClock>,
    pub vm_config: Arc<VmConfig>,
    pub options: Arc<HostOptions>,
    pub upstreams: Arc<crate::upstream::Upstreams>,
    next_vm_instance: AtomicU64,
    next_connection_id: AtomicU64,
    next_request_id: AtomicU64,
}

impl HostInner {
    pub fn instantiate(&self) -> Result<Vm, HostError> {
        let vm_instance = self.next_vm_instance.fetch_add(1, Ordering::Relaxed);
        let state = VmState::new(
            self.shared.clone(),
            self.clock.clone(),
            self.vm_config.clone(),
            self.options.clone(),
            self.upstreams.clone(),
            vm_instance,
        );
        Vm::instantiate(&self.pre, state)
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A UUID-shaped `x-request-id`, deterministic for a given host.
    pub fn next_request_id(&self) -> String {
        let n = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

/// A loaded proxy-wasm module and everything process-wide around it. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

/// The module's log lines while the canary accepted its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanaryReport {
    pub logs: Vec<LogRecord>,
}

impl Host {
    /// Loads a module from a file. A missing file says how to build it.
    pub fn from_file(
        path: &Path,
        vm_config: VmConfig,
        options: HostOptions,
    ) -> Result<Host, HostError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                HostError::WasmNotFound {
                    path: path.to_path_buf(),
                    hint: build_hint(path),
                }
            } else {
                HostError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Host::new(&bytes, vm_config, options)
    }

    /// Loads a module (binary Wasm). Checks what Envoy checks before running it: the ABI
    /// version export, the allocator, and that every import is one the host provides.
    pub fn new(wasm: &[u8], vm_config: VmConfig, options: HostOptions) -> Result<Host, HostError> {
        Host::load(
            wasm,
            vm_config,
            options,
            Arc::new(SharedState::default()),
            Arc::new(SimClock::default()),
        )
    }

    /// Another module in the same Envoy process: it shares this host's shared data, queues,
    /// metrics and clock. Shared data is process-wide and keyed by `vm_id` only, so a second
    /// build of a filter (a rollout, where the old VM drains while the new one serves) reads
    /// and writes the same keys (proxy-wasm-cpp-host `getGlobalSharedData`).
    pub fn alongside(
        &self,
        wasm: &[u8],
        vm_config: VmConfig,
        options: HostOptions,
    ) -> Result<Host, HostError> {
        Host::load(
            wasm,
            vm_config,
            options,
            self.inner.shared.clone(),
            self.inner.clock.clone(),
        )
    }

    fn load(
        wasm: &[u8],
        vm_config: VmConfig,
        options: HostOptions,
        shared: Arc<SharedState>,
        clock: Arc<SimClock>,
    ) -> Result<Host, HostError> {
        let module = compile(wasm)?;
        check_abi_version(&module)?;
        let mut linker = Linker::new(engine());
        let defined =
            crate::hostcalls::link(&mut linker).map_err(|e| HostError::Link(format!("{e:#}")))?;
        check_imports(&module, &defined)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| HostError::Link(format!("{e:#}")))?;
        Ok(Host {
            inner: Arc::new(HostInner {
                pre,
                shared,
                clock,
                vm_config: Arc::new(vm_config),
                options: Arc::new(options),
                upstreams: Arc::default(),
                next_vm_instance: AtomicU64::new(1),
                next_connection_id: AtomicU64::new(1),
                next_request_id: AtomicU64::new(1),
            }),
        })
    }

    /// The host clock (shared by every VM of this host).
    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    /// Shared data, queues and metrics.
    pub fn shared(&self) -> &SharedState {
        &self.inner.shared
    }

    pub fn vm_config(&self) -> &VmConfig {
        &self.inner.vm_config
    }

    pub fn options(&self) -> &HostOptions {
        &self.inner.options
    }

    /// Envoy's configuration canary: a fresh VM starts and configures the plugin, then is
    /// thrown away. `proxy_on_vm_start` or `proxy_on_configure` returning false (or a trap)
    /// rejects the configuration; the error carries the module's log lines.
    pub fn canary(&self, plugin: &PluginConfig) -> Result<CanaryReport, HostError> {
        let (mut vm, _) = crate::worker::build_vm(&self.inner, &[Arc::new(plugin.clone())])?;
        let logs = std::mem::take(&mut vm.state_mut().logs);
        self.inner.shared.queues.forget_vm(vm.state().vm_instance);
        Ok(CanaryReport { logs })
    }

    /// Starts like Envoy: a canary per plugin, then (with `main_thread_vm`) the main thread's
    /// VM and `workers` VMs, each with every plugin started and configured.
    pub fn start(
        &self,
        plugins: Vec<PluginConfig>,
        workers: usize,
    ) -> Result<Deployment, HostError> {
        if workers == 0 {
            return Err(HostError::NoWorkers);
        }
        let mut names = HashSet::new();
        for plugin in &plugins {
            if !names.insert(&plugin.name) {
                return Err(HostError::DuplicatePlugin(plugin.name.clone()));
            }
        }
        let mut canary_logs = Vec::new();
        for plugin in &plugins {
            canary_logs.extend(self.canary(plugin)?.logs);
        }
        let plugins: Vec<Arc<PluginConfig>> = plugins.into_iter().map(Arc::new).collect();
        // Envoy sets the plugin's thread-local slot on the main thread too: a VM there is
        // configured and ticks, and never sees a stream.
        let main_thread = if self.inner.options.main_thread_vm {
            Some(Worker::new_main_thread(self.inner.clone(), &plugins)?)
        } else {
            None
        };
        let workers = (0..workers)
            .map(|index| Worker::new(self.inner.clone(), index, &plugins))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Deployment {
            host: self.clone(),
            canary_logs,
            main_thread,
            workers,
        })
    }

    /// One more worker VM with these plugins (no canary).
    pub fn worker(&self, index: usize, plugins: &[PluginConfig]) -> Result<Worker, HostError> {
        let plugins: Vec<Arc<PluginConfig>> = plugins.iter().cloned().map(Arc::new).collect();
        Worker::new(self.inner.clone(), index, &plugins)
    }
}

/// Workers started together, as one Envoy process.
pub struct Deployment {
    host: Host,
    pub canary_logs: Vec<LogRecord>,
    main_thread: Option<Worker>,
    workers: Vec<Worker>,
}

impl Deployment {
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn workers(&mut self) -> &mut [Worker] {
        &mut self.workers
    }

    /// The main thread's VM (configured, ticking, serving no streams), if the host runs one.
    pub fn main_thread(&mut self) -> Option<&mut Worker> {
        self.main_thread.as_mut()
    }

    /// Runs due ticks and queue callbacks on the main thread and every worker.
    pub fn poll(&mut self) {
        for worker in self.main_thread.iter_mut().chain(self.workers.iter_mut()) {
            worker.poll();
        }
    }

    /// The worker at `index` modulo the number of workers.
    pub fn worker(&mut self, index: usize) -> &mut Worker {
        let n = self.workers.len();
        &mut self.workers[index % n]
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The workers, e.g. to move each to its own thread.
    pub fn into_workers(self) -> Vec<Worker> {
        self.workers
    }

    /// A configuration update (xDS/ECDS): the canary checks it first; a rejected update is
    /// refused (NACK) and changes nothing, the old configuration keeps serving. If accepted,
    /// every VM adds a root context for it and new streams use it; streams already open finish
    /// on the old root, which is retired after them.
    pub fn update_plugin(&mut self, plugin: PluginConfig) -> Result<CanaryReport, HostError> {
        let report = self.host.canary(&plugin)?;
        for worker in self.main_thread.iter_mut().chain(self.workers.iter_mut()) {
            worker.update_plugin(plugin.clone())?;
        }
        Ok(report)
    }
}

/// The command that builds a module of this workspace, from its file name.
fn build_hint(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    match stem {
        "egress_filter" | "noop_filter" => format!(
            "cargo build --release --target wasm32-wasip1 -p {}",
            stem.replace('_', "-")
        ),
        _ => "the command that builds this module, or check the path".to_string(),
    }
}

fn check_abi_version(module: &Module) -> Result<(), HostError> {
    let exports: HashSet<&str> = module.exports().map(|e| e.name()).collect();
    if exports.contains("proxy_abi_version_0_2_1") || exports.contains("proxy_abi_version_0_2_0") {
        Ok(())
    } else if exports.contains("proxy_abi_version_0_1_0") {
        Err(HostError::AbiVersionUnsupported)
    } else {
        Err(HostError::AbiVersion)
    }
}

/// Envoy fails a module that imports anything it does not provide, naming the import.
fn check_imports(module: &Module, defined: &HashSet<String>) -> Result<(), HostError> {
    for import in module.imports() {
        let known = matches!(import.ty(), ExternType::Func(_))
            && defined.contains(&format!("{}.{}", import.module(), import.name()));
        if !known {
            return Err(HostError::MissingImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    Ok(())
}
