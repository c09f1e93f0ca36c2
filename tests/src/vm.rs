//! One VM: a wasmtime `Store` and `Instance` of the shared module, its exported callbacks, and
//! the bookkeeping around each call into it (running context, effective context reset,
//! deferred deletes).

use std::sync::Arc;

use wasmtime::{Instance, InstancePre, Store, TypedFunc, WasmParams, WasmResults};

use crate::config::PluginConfig;
use crate::error::HostError;
use crate::state::{Context, ContextKind, VmState};

/// A trap (or a fatal host-call error) while the module ran: Envoy's `FailState::RuntimeError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// The callback that failed, e.g. `proxy_on_request_headers`.
    pub callback: &'static str,
    pub message: String,
}

impl std::fmt::Display for Trap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.callback, self.message)
    }
}

/// An exported callback, if the module has it.
pub(crate) type Callback<P, R> = Option<Arc<TypedFunc<P, R>>>;

/// The callbacks a proxy-wasm module may export; all optional. Shared handles, so that taking
/// one for a call costs a reference count rather than a copy of its type.
pub(crate) struct Callbacks {
    pub on_context_create: Callback<(i32, i32), ()>,
    pub on_vm_start: Callback<(i32, i32), i32>,
    pub on_configure: Callback<(i32, i32), i32>,
    pub on_tick: Callback<i32, ()>,
    pub on_queue_ready: Callback<(i32, i32), ()>,
    pub on_done: Callback<i32, i32>,
    pub on_log: Callback<i32, ()>,
    pub on_delete: Callback<i32, ()>,
    pub on_new_connection: Callback<i32, i32>,
    pub on_downstream_data: Callback<(i32, i32, i32), i32>,
    pub on_upstream_data: Callback<(i32, i32, i32), i32>,
    pub on_downstream_connection_close: Callback<(i32, i32), ()>,
    pub on_upstream_connection_close: Callback<(i32, i32), ()>,
    pub on_request_headers: Callback<(i32, i32, i32), i32>,
    pub on_request_body: Callback<(i32, i32, i32), i32>,
    pub on_response_headers: Callback<(i32, i32, i32), i32>,
    pub on_response_body: Callback<(i32, i32, i32), i32>,
    pub on_http_call_response: Callback<(i32, i32, i32, i32, i32), ()>,
    pub on_grpc_receive_initial_metadata: Callback<(i32, i32, i32), ()>,
    pub on_grpc_receive: Callback<(i32, i32, i32), ()>,
    pub on_grpc_receive_trailing_metadata: Callback<(i32, i32, i32), ()>,
    pub on_grpc_close: Callback<(i32, i32, i32), ()>,
    pub on_foreign_function: Callback<(i32, i32, i32), ()>,
}

fn typed<P: WasmParams, R: WasmResults>(
    store: &mut Store<VmState>,
    instance: &Instance,
    name: &str,
) -> Result<Callback<P, R>, HostError> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => f
            .typed::<P, R>(&*store)
            .map(|f| Some(Arc::new(f)))
            .map_err(|_| HostError::BadSignature(name.to_string())),
    }
}

pub(crate) struct Vm {
    pub store: Store<VmState>,
    pub cb: Callbacks,
}

impl Vm {
    /// Instantiates the module and runs its start functions (`_initialize` then `main`, or
    /// `_start`), as proxy-wasm-cpp-host does before any context exists.
    pub fn instantiate(pre: &InstancePre<VmState>, state: VmState) -> Result<Vm, HostError> {
        let mut store = Store::new(pre.module().engine(), state);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or(HostError::MissingMemory)?;
        let malloc = match typed::<i32, i32>(&mut store, &instance, "proxy_on_memory_allocate")? {
            Some(f) => f,
            None => typed::<i32, i32>(&mut store, &instance, "malloc")?
                .ok_or(HostError::MissingAllocator)?,
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().malloc = Some(malloc);

        let s = &mut store;
        let i = &instance;
        let cb = Callbacks {
            on_context_create: typed(s, i, "proxy_on_context_create")?,
            on_vm_start: typed(s, i, "proxy_on_vm_start")?,
            on_configure: typed(s, i, "proxy_on_configure")?,
            on_tick: typed(s, i, "proxy_on_tick")?,
            on_queue_ready: typed(s, i, "proxy_on_queue_ready")?,
            on_done: typed(s, i, "proxy_on_done")?,
            on_log: typed(s, i, "proxy_on_log")?,
            on_delete: typed(s, i, "proxy_on_delete")?,
            on_new_connection: typed(s, i, "proxy_on_new_connection")?,
            on_downstream_data: typed(s, i, "proxy_on_downstream_data")?,
            on_upstream_data: typed(s, i, "proxy_on_upstream_data")?,
            on_downstream_connection_close: typed(s, i, "proxy_on_downstream_connection_close")?,
            on_upstream_connection_close: typed(s, i, "proxy_on_upstream_connection_close")?,
            on_request_headers: typed(s, i, "proxy_on_request_headers")?,
            on_request_body: typed(s, i, "proxy_on_request_body")?,
            on_response_headers: typed(s, i, "proxy_on_response_headers")?,
            on_response_body: typed(s, i, "proxy_on_response_body")?,
            on_http_call_response: typed(s, i, "proxy_on_http_call_response")?,
            on_grpc_receive_initial_metadata: typed(
                s,
                i,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            on_grpc_receive: typed(s, i, "proxy_on_grpc_receive")?,
            on_grpc_receive_trailing_metadata: typed(
                s,
                i,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
            on_grpc_close: typed(s, i, "proxy_on_grpc_close")?,
            on_foreign_function: typed(s, i, "proxy_on_foreign_function")?,
        };

        let initialize = typed::<(), ()>(&mut store, &instance, "_initialize")?;
        let mut vm = Vm { store, cb };
        let start_error = |t: Trap| HostError::Initialize(t.to_string());
        // Only a few host calls are allowed while the start functions run.
        vm.state_mut().restricted = Some(crate::hostcalls::ALLOWED_WHILE_STARTING);
        let started = (|| -> Result<(), HostError> {
            if let Some(init) = initialize {
                vm.call(0, "_initialize", &init, ()).map_err(start_error)?;
                if let Some(main) = typed::<(i32, i32), i32>(&mut vm.store, &instance, "main")? {
                    vm.call(0, "main", &main, (0, 0)).map_err(start_error)?;
                }
            } else if let Some(start) = typed::<(), ()>(&mut vm.store, &instance, "_start")? {
                vm.call(0, "_start", &start, ()).map_err(start_error)?;
            }
            Ok(())
        })();
        vm.state_mut().restricted = None;
        started?;
        Ok(vm)
    }

    pub fn state(&self) -> &VmState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut VmState {
        self.store.data_mut()
    }

    /// Calls into the module with `context_id` as the running context.
    pub fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        context_id: u32,
        callback: &'static str,
        f: &Arc<TypedFunc<P, R>>,
        params: P,
    ) -> Result<R, Trap> {
        {
            let state = self.store.data_mut();
            state.current_context = context_id;
            state.effective_context = 0;
        }
        let result = f.call(&mut self.store, params);
        let state = self.store.data_mut();
        state.current_context = 0;
        state.effective_context = 0;
        match result {
            Ok(r) => {
                self.release_done_roots()?;
                Ok(r)
            }
            Err(e) => {
                let message = self
                    .store
                    .data_mut()
                    .fatal
                    .take()
                    .unwrap_or_else(|| describe(&e));
                Err(Trap { callback, message })
            }
        }
    }

    /// Roots released with `proxy_done` are deleted after the call that released them.
    fn release_done_roots(&mut self) -> Result<(), Trap> {
        while let Some(root) = self.store.data_mut().done_released.pop() {
            self.delete_context(root)?;
        }
        Ok(())
    }

    /// Creates a context id and registers the context (no module call yet).
    pub fn new_context(
        &mut self,
        root_id: Option<u32>,
        plugin: Arc<PluginConfig>,
        kind: ContextKind,
    ) -> u32 {
        let state = self.store.data_mut();
        let id = state.next_context_id;
        state.next_context_id += 1;
        state.contexts.insert(
            id,
            Context {
                root_id: root_id.unwrap_or(id),
                plugin: Some(plugin),
                kind,
            },
        );
        id
    }

    /// `proxy_on_context_create`.
    pub fn context_create(&mut self, id: u32, parent: u32) -> Result<(), Trap> {
        match self.cb.on_context_create.clone() {
            Some(f) => self.call(
                id,
                "proxy_on_context_create",
                &f,
                (id as i32, parent as i32),
            ),
            None => Ok(()),
        }
    }

    /// Creates a root context for a plugin and starts it: `proxy_on_context_create(root, 0)` then
    /// `proxy_on_vm_start` (proxy-wasm-cpp-host `ContextBase::onStart`).
    pub fn start_root(&mut self, plugin: Arc<PluginConfig>) -> Result<(u32, bool), Trap> {
        let id = self.new_context(None, plugin, ContextKind::Root(Box::default()));
        self.context_create(id, 0)?;
        let size = self.state().vm_config.configuration.len() as i32;
        let started = match self.cb.on_vm_start.clone() {
            Some(f) => self.call(id, "proxy_on_vm_start", &f, (id as i32, size))? != 0,
            None => true,
        };
        Ok((id, started))
    }

    /// `proxy_on_configure` with the plugin configuration readable for the duration of the call.
    pub fn configure_root(&mut self, root: u32) -> Result<bool, Trap> {
        let Some(f) = self.cb.on_configure.clone() else {
            return Ok(true);
        };
        let configuration = {
            let ctx = self
                .store
                .data_mut()
                .contexts
                .get_mut(&root)
                .expect("configure_root is called for a live root");
            let config = Arc::new(
                ctx.plugin
                    .as_ref()
                    .map(|p| p.configuration.clone())
                    .unwrap_or_default(),
            );
            if let Some(r) = ctx.root_mut() {
                r.configuring = Some(config.clone());
            }
            config
        };
        let result = self.call(
            root,
            "proxy_on_configure",
            &f,
            (root as i32, configuration.len() as i32),
        );
        if let Some(r) = self
            .store
            .data_mut()
            .contexts
            .get_mut(&root)
            .and_then(Context::root_mut)
        {
            r.configuring = None;
        }
        Ok(result? != 0)
    }

    /// `proxy_on_delete`, then forgets the context.
    pub fn delete_context(&mut self, id: u32) -> Result<(), Trap> {
        let result = match self.cb.on_delete.clone() {
            Some(f) => self.call(id, "proxy_on_delete", &f, id as i32),
            None => Ok(()),
        };
        let state = self.store.data_mut();
        state.contexts.remove(&id);
        state.timers.remove(&id);
        result
    }

    /// `proxy_on_done`; true when the module is done with the context.
    /// Ends a root context as Envoy does: `proxy_on_done`, then `proxy_on_delete` when it is
    /// done; otherwise it waits in `pending_done` for `proxy_done`.
    pub fn retire_root(&mut self, root: u32) -> Result<(), Trap> {
        if self.done(root)? {
            self.delete_context(root)
        } else {
            self.state_mut().pending_done.push(root);
            Ok(())
        }
    }

    pub fn done(&mut self, id: u32) -> Result<bool, Trap> {
        match self.cb.on_done.clone() {
            Some(f) => Ok(self.call(id, "proxy_on_done", &f, id as i32)? != 0),
            None => Ok(true),
        }
    }

    /// `proxy_on_log`.
    pub fn log(&mut self, id: u32) -> Result<(), Trap> {
        match self.cb.on_log.clone() {
            Some(f) => self.call(id, "proxy_on_log", &f, id as i32),
            None => Ok(()),
        }
    }
}

/// A readable description of a wasmtime error: the trap code or message with its causes.
fn describe(error: &wasmtime::Error) -> String {
    let mut text = format!("{error:#}");
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        let code = trap.to_string();
        if !text.contains(&code) {
            text = format!("{code}: {text}");
        }
    }
    text
}
