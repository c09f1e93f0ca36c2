//! The proxy-wasm ABI (0.2.1) entry points the filter exports, dispatching to its contexts.
//!
//! Only the callbacks the filter acts on are exported; a host treats a missing one as
//! "continue". A small dispatcher of its own, rather than the SDK's, keeps the `.wasm` small:
//! the SDK links every callback of the ABI.
#![allow(unsafe_code)]

use std::cell::RefCell;

use crate::matchers::{fast_map, FastMap};

use super::{imports, take_waiting_stream, Answer, EgressHttp, EgressRoot, EgressStream};

/// What a stream callback tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

enum Ctx {
    Root(EgressRoot),
    /// A stream whose kind is not known yet: proxy-wasm does not say at creation whether it
    /// belongs to an HTTP or a network filter; its first callback (`on_request_headers` or
    /// `on_new_connection`) does, at no cost.
    New(EgressRoot),
    Http(EgressHttp),
    // Boxed: a connection waiting for inspection carries its attributes and inspector.
    Stream(Box<EgressStream>),
}

/// The HTTP context of `id`, made from a new stream on its first HTTP callback.
fn http_ctx(contexts: &mut Contexts, id: u32) -> Option<&mut EgressHttp> {
    let ctx = contexts.get_mut(&id)?;
    if let Ctx::New(root) = ctx {
        *ctx = Ctx::Http(root.create_http_context(id));
    }
    match ctx {
        Ctx::Http(http) => Some(http),
        _ => None,
    }
}

/// The TCP context of `id`, made from a new stream on its first network callback.
fn stream_ctx(contexts: &mut Contexts, id: u32) -> Option<&mut EgressStream> {
    let ctx = contexts.get_mut(&id)?;
    if let Ctx::New(root) = ctx {
        *ctx = Ctx::Stream(Box::new(root.create_stream_context(id)));
    }
    match ctx {
        Ctx::Stream(stream) => Some(stream),
        _ => None,
    }
}

type Contexts = FastMap<u32, Ctx>;

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(fast_map());
}

fn with<R>(f: impl FnOnce(&mut Contexts) -> R) -> R {
    CONTEXTS.with(|c| f(&mut c.borrow_mut()))
}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: runs the module's static constructors once, as the host calls `_initialize` once.
    #[cfg(target_os = "wasi")]
    unsafe {
        __wasm_call_ctors();
    }
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory the host fills and hands over (`take_buffer` in `host` takes ownership back).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    match std::alloc::Layout::array::<u8>(size) {
        // SAFETY: a non-zero size; the block has the layout of a `Vec<u8>` of capacity `size`,
        // which is how `take_buffer` takes it back. Null (no memory) fails the host call.
        Ok(layout) if size > 0 => unsafe { std::alloc::alloc(layout) },
        // Nothing to hold: a dangling, well-aligned pointer, as an empty `Vec` has.
        Ok(_) => std::ptr::NonNull::<u8>::dangling().as_ptr(),
        Err(_) => std::ptr::null_mut(),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    with(|contexts| {
        let ctx = if parent_id == 0 {
            Ctx::Root(EgressRoot::default())
        } else {
            match contexts.get(&parent_id) {
                Some(Ctx::Root(root)) => Ctx::New(root.clone()),
                // No root: a stream without configuration, denied by the contexts themselves.
                _ => Ctx::New(EgressRoot::default()),
            }
        };
        contexts.insert(context_id, ctx);
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> u32 {
    with(|contexts| match contexts.get_mut(&context_id) {
        Some(Ctx::Root(root)) => u32::from(root.on_configure()),
        _ => 0,
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    with(|contexts| match http_ctx(contexts, context_id) {
        Some(http) => http.on_http_request_headers() as u32,
        None => Action::Pause as u32,
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_new_connection(context_id: u32) -> u32 {
    with(|contexts| match stream_ctx(contexts, context_id) {
        Some(stream) => stream.on_new_connection() as u32,
        None => Action::Pause as u32,
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_data(
    context_id: u32,
    data_size: usize,
    end_of_stream: u32,
) -> u32 {
    with(|contexts| match stream_ctx(contexts, context_id) {
        Some(stream) => stream.on_downstream_data(data_size, end_of_stream != 0) as u32,
        None => Action::Pause as u32,
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_data(
    context_id: u32,
    _data_size: usize,
    _end_of_stream: u32,
) -> u32 {
    with(|contexts| match stream_ctx(contexts, context_id) {
        Some(stream) => stream.on_upstream_data() as u32,
        None => Action::Pause as u32,
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_connection_close(context_id: u32, _peer_type: u32) {
    with(|contexts| {
        if let Some(Ctx::Stream(stream)) = contexts.get_mut(&context_id) {
            stream.on_downstream_close();
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    let ctx = with(|contexts| contexts.remove(&context_id));
    match ctx {
        Some(Ctx::Http(mut http)) => http.on_delete(),
        Some(Ctx::Stream(mut stream)) => stream.cancel_pending(),
        _ => {}
    }
}

/// Hands a gRPC answer to the stream waiting for it. Envoy calls back on the root context;
/// the stream's host calls (continue, local reply) act on it only once it is the effective
/// context. A token no stream waits for (it was cancelled, or its stream is gone) is ignored.
fn deliver(token: u32, answer: impl FnOnce() -> Answer) {
    let Some(stream) = take_waiting_stream(token) else {
        return;
    };
    if imports::set_effective_context(stream).is_err() {
        return;
    }
    let answer = answer();
    with(|contexts| match contexts.get_mut(&stream) {
        Some(Ctx::Http(http)) => http.on_rls_answer(answer),
        Some(Ctx::Stream(tcp)) => tcp.on_rls_answer(answer),
        _ => {}
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_root_id: u32, token: u32, response_size: usize) {
    deliver(token, || {
        imports::grpc_message(response_size).map_err(|s| {
            (
                u32::MAX,
                format!("cannot read the answer (status {})", s.0).into_bytes(),
            )
        })
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_root_id: u32, token: u32, status_code: u32) {
    deliver(token, || {
        let (_, message) = imports::grpc_status();
        // A unary call that ends without its message is a failure whatever the code says.
        let code = if status_code == 0 { 13 } else { status_code };
        Err((code, message))
    });
}
