//! Where the bridge's messages go: the server's error log through the
//! gateway's `log` callback in a worker, or the master's logger before any
//! worker exists (`--preload`). Python exceptions are logged with their
//! traceback, as Gunicorn does.

use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::prelude::*;
use rgun_gateway::ffi;

/// The server's table, set by the init hook.
static SERVER: AtomicPtr<ffi::Server> = AtomicPtr::new(core::ptr::null_mut());

/// The master's log callback, for `--preload` (before any worker exists).
static MASTER_LOG: std::sync::OnceLock<ffi::LogFn> = std::sync::OnceLock::new();

pub(crate) fn set_master_log(log: ffi::LogFn) {
    let _ = MASTER_LOG.set(log);
}

pub(crate) fn set_server(server: &'static ffi::Server) {
    SERVER.store((server as *const ffi::Server).cast_mut(), Ordering::Release);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

/// One message (it may span lines, as a traceback does) to the error log.
pub(crate) fn line(level: Level, message: &str) {
    let level = match level {
        Level::Error => ffi::LOG_ERROR,
        Level::Warning => ffi::LOG_WARNING,
        Level::Info => ffi::LOG_INFO,
        Level::Debug => ffi::LOG_DEBUG,
    };
    let server = SERVER.load(Ordering::Acquire);
    let log = if server.is_null() {
        MASTER_LOG.get().copied()
    } else {
        // SAFETY: the server keeps its table alive for the life of the
        // process.
        Some(unsafe { (*server).log })
    };
    match log {
        // SAFETY: the server's (or master's) callback, with a message valid
        // for the call.
        Some(log) => unsafe { log(level, ffi::Str::new(message.as_bytes())) },
        None => eprintln!("{message}"),
    }
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
