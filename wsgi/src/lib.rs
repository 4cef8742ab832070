//! The Python WSGI bridge: a gateway-interface application, built as a
//! library that rgun opens (RTLD_GLOBAL, so that C extension modules see
//! libpython's symbols) only to serve `module:app`, hosting a PEP 3333
//! callable in embedded CPython. The
//! interpreter starts in each worker's init hook, or once in the master with
//! `--preload`; each request becomes an `environ` and a `start_response`,
//! and what the callable returns goes back to the server piece by piece.
//! HTTP itself (parsing, framing, keep-alive) stays the server's.

mod environ;
mod errors;
mod exchange;
mod file_wrapper;
mod hook_signals;
mod hooks;
mod input;
mod interpreter;
mod logging;
mod reload;
mod response;
mod start_response;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use pyo3::prelude::*;
use rgun_gateway::ffi;

use crate::response::Worker;

/// The bridge's application table, under the symbol rgun looks up:
/// `app_arg` is `module[:callable]`.
#[unsafe(no_mangle)]
pub static rgun_wsgi_app: ffi::App = ffi::App {
    magic: ffi::APP_MAGIC,
    abi_version: ffi::ABI_VERSION,
    flags: ffi::APP_THREAD_SAFE,
    init: Some(init),
    handle: Some(handle),
    shutdown: Some(shutdown),
    reserved: core::ptr::null(),
};

/// This worker's application and environ template, set by `init`.
static WORKER: OnceLock<Worker> = OnceLock::new();

/// `--preload`: initialise the interpreter and import the application in the
/// master, before any fork; lines go to the master's `log`. The worker's
/// init hook then only finishes the set-up. Returns OK, or ERR_LOAD when the
/// application does not load.
///
/// # Safety
/// `spec` must be valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rgun_wsgi_preload(spec: ffi::Str, log: ffi::LogFn) -> i32 {
    logging::set_master_log(log);
    // SAFETY: the caller's promise.
    let spec = String::from_utf8_lossy(unsafe { spec.as_bytes() }).into_owned();
    match guard("preload", || interpreter::preload(&spec)) {
        Ok(Ok(())) => ffi::OK,
        Ok(Err(line)) => {
            logging::error(&line);
            ffi::ERR_LOAD
        }
        Err(_) => ffi::ERR,
    }
}

/// Around each fork of a preloaded interpreter (CPython's PyOS_*Fork calls).
#[unsafe(no_mangle)]
pub extern "C" fn rgun_wsgi_before_fork() {
    interpreter::before_fork();
}

#[unsafe(no_mangle)]
pub extern "C" fn rgun_wsgi_after_fork_parent() {
    interpreter::after_fork_parent();
}

#[unsafe(no_mangle)]
pub extern "C" fn rgun_wsgi_after_fork_child() {
    interpreter::after_fork_child();
}

/// Run `f`, turning a panic into an error line: no unwinding may cross the
/// C ABI.
fn guard<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let line = format!("the WSGI bridge panicked in {what}: {why}");
        logging::error(&line);
        line
    })
}

unsafe extern "C" fn init(server: *const ffi::Server) -> i32 {
    // SAFETY: the server hands its table, alive for the whole process.
    let server: &'static ffi::Server = unsafe { &*server };
    logging::set_server(server);
    let booted = guard("init", || {
        // SAFETY: app_arg is valid for the process.
        let spec = String::from_utf8_lossy(unsafe { server.app_arg.as_bytes() }).into_owned();
        // A server hook that fails is a boot error (exit 3), not a load
        // error, as in Gunicorn.
        let hook_failed = std::cell::Cell::new(false);
        interpreter::load(&spec, |py| {
            hooks::load_and_post_fork(py).inspect_err(|_| hook_failed.set(true))
        })
        .map_err(|line| {
            let code = if hook_failed.get() {
                ffi::ERR
            } else {
                ffi::ERR_LOAD
            };
            (line, code)
        })?;
        let app = interpreter::application()
            .ok_or_else(|| ("the application did not load".to_string(), ffi::ERR_LOAD))?;
        Python::attach(|py| {
            let environ = interpreter::enter_worker(py)
                .and_then(|()| reload::watch_if_asked(py))
                .and_then(|()| environ::Template::new(py, &environ::Concurrency::from_env()))
                .map_err(|err| {
                    logging::exception(py, "Cannot prepare the worker's interpreter:", &err);
                    (
                        "cannot prepare the worker's interpreter".to_string(),
                        ffi::ERR,
                    )
                })?;
            let _ = WORKER.set(Worker {
                app: app.clone_ref(py),
                environ,
            });
            if let Some(hooks) = hooks::get() {
                hooks
                    .run_or_exit(py, "post_worker_init")
                    .map_err(|line| (line, ffi::ERR))?;
            }
            Ok::<(), (String, i32)>(())
        })
    });
    match booted {
        Ok(Ok(())) => ffi::OK,
        Ok(Err((line, code))) => {
            logging::error(&line);
            code
        }
        Err(_) => ffi::ERR,
    }
}

unsafe extern "C" fn handle(
    server: *const ffi::Server,
    call: *mut ffi::Call,
    request: *const ffi::Request,
) -> i32 {
    let Some(worker) = WORKER.get() else {
        logging::error("a request came before the WSGI bridge was initialised");
        return ffi::ERR;
    };
    // SAFETY: the server passes its table, alive for the process, and a
    // request valid for the call.
    let (server, request): (&'static ffi::Server, _) = unsafe { (&*server, &*request) };
    guard("handle", || {
        interpreter::pin_thread_state();
        Python::attach(|py| response::serve(py, worker, server, call, request))
    })
    .unwrap_or(ffi::ERR)
}

/// An object's reference count (to see whether the application kept it).
fn refcount<T>(obj: &Py<T>) -> isize {
    // SAFETY: reading the count of a live object we hold a reference to.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
}

unsafe extern "C" fn shutdown(_server: *const ffi::Server) {
    let _ = guard("shutdown", || {
        if let Some(hooks) = hooks::get() {
            Python::attach(|py| hooks.worker_exit(py));
        }
        interpreter::shutdown();
    });
}
