//! The Python WSGI bridge: a gateway-interface application, linked into the
//! rgun binary, that hosts a PEP 3333 callable in embedded CPython.
//! (Being written: see issue 3.)

use rgun_gateway::ffi;

/// The bridge's application table: `app_arg` is `module[:callable]`.
pub static APP: ffi::App = ffi::App {
    magic: ffi::APP_MAGIC,
    abi_version: ffi::ABI_VERSION,
    flags: ffi::APP_THREAD_SAFE,
    init: None,
    handle: None,
    shutdown: None,
    reserved: core::ptr::null(),
};

/// `--preload`: initialise the interpreter and import the application in the
/// master, before any fork.
pub fn preload(_spec: &str) -> Result<(), String> {
    Err("not yet".into())
}

/// Around each fork of a preloaded interpreter (CPython's PyOS_*Fork calls).
pub fn before_fork() {}
pub fn after_fork_parent() {}
pub fn after_fork_child() {}
