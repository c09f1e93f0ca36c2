//! A proxy-wasm filter that does nothing: every hook keeps the SDK's default (continue).
//!
//! It is the floor for overhead measurements: the cost of a request through the host with this
//! filter is the cost of the host and the SDK's dispatch alone.
//!
//! One module serves both filter kinds, as Envoy may load it as an HTTP filter and as a network
//! filter: a root whose `plugin_root_id` ends in `tcp` creates TCP stream contexts, any other
//! root creates HTTP contexts.
#![cfg(target_arch = "wasm32")]

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(NoopRoot { context_type: ContextType::HttpContext })
    });
}}

struct NoopRoot {
    context_type: ContextType,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let root_id = self
            .get_property(vec!["plugin_root_id"])
            .unwrap_or_default();
        if root_id.ends_with(b"tcp") {
            self.context_type = ContextType::StreamContext;
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(self.context_type)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopStream))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(NoopStream))
    }
}

struct NoopStream;

impl Context for NoopStream {}
impl HttpContext for NoopStream {}
impl StreamContext for NoopStream {}
