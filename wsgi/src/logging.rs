//! Where the bridge's messages go: the server's error log through the
//! gateway's `log` callback in a worker, or the master's logger before any
//! worker exists (`--preload`). Python exceptions are logged with their
//! traceback, as Gunicorn does.

use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::prelude::*;
use rgun_gateway::ffi;

/// The server's table, set by the init hook.
static SERVER: AtomicPtr<ffi::Server> = AtomicPtr::new(core::ptr::null_mut());

pub(crate) fn set_server(server: &'static ffi::Server) {
    SERVER.store((server as *const ffi::Server).cast_mut(), Ordering::Release);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Error,
    Warning,
    Debug,
}

/// One message (it may span lines, as a traceback does) to the error log.
pub(crate) fn line(level: Level, message: &str) {
    let server = SERVER.load(Ordering::Acquire);
    if server.is_null() {
        let level = match level {
            Level::Error => log::Level::Error,
            Level::Warning => log::Level::Warn,
            Level::Debug => log::Level::Debug,
        };
        log::log!(level, "{message}");
        return;
    }
    let level = match level {
        Level::Error => ffi::LOG_ERROR,
        Level::Warning => ffi::LOG_WARNING,
        Level::Debug => ffi::LOG_DEBUG,
    };
    // SAFETY: the server keeps its table alive for the life of the process;
    // the message is valid for the call.
    unsafe { ((*server).log)(level, ffi::Str::new(message.as_bytes())) }
}

pub(crate) fn error(message: &str) {
    line(Level::Error, message);
}

/// `context`, then the exception's traceback as Python prints it.
pub(crate) fn exception(py: Python<'_>, context: &str, err: &PyErr) {
    let text = format_exception(py, err).unwrap_or_else(|_| format!("{err}\n"));
    error(&format!("{context}\n{}", text.trim_end()));
}

fn format_exception(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    let lines = py.import("traceback")?.call_method1(
        "format_exception",
        (err.get_type(py), err.value(py), err.traceback(py)),
    )?;
    let mut text = String::new();
    for line in lines.try_iter()? {
        text.push_str(&line?.extract::<String>()?);
    }
    Ok(text)
}
