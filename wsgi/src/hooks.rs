//! Gunicorn's worker hooks from a `gunicorn.conf.py` (issue 11): the file
//! the master names in `RGUN_PYTHON_HOOKS` is executed in this worker's
//! interpreter (hooks.py), and its hooks run where Gunicorn runs them:
//! `post_fork` before the application is imported, `post_worker_init`
//! after, `pre_request`/`post_request` around each call, `worker_exit` at
//! the end; `worker_int` and `worker_abort` on their signals (see
//! `hook_signals`). The master's hooks are not here: the master runs them
//! in a Python process of its own.

use std::ffi::CString;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyList, PyModule, PyTuple};
use rgun_gateway::ffi;

use crate::logging::{self, Level};

/// The configuration file whose hooks this worker runs (set by the master
/// only for a Python application).
const HOOKS_FILE_ENV: &str = "RGUN_PYTHON_HOOKS";
/// The effective settings, as JSON under Gunicorn's names (`server.cfg`).
const HOOK_SETTINGS_ENV: &str = "RGUN_HOOK_SETTINGS";
/// `AGE,NUM_WORKERS` of this worker, set by the master after fork.
const HOOK_WORKER_ENV: &str = "RGUN_HOOK_WORKER";

/// This worker's hooks (hooks.py's `WorkerHooks`), once loaded.
static HOOKS: OnceLock<Hooks> = OnceLock::new();

pub(crate) struct Hooks {
    object: Py<PyAny>,
    /// Which hooks the file defines, so that a request pays for none it
    /// does not have.
    pub pre_request: bool,
    pub post_request: bool,
}

/// The answer's head as the application gave it, for `post_request`.
pub(crate) struct AnswerHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

pub(crate) fn get() -> Option<&'static Hooks> {
    HOOKS.get()
}

/// hooks.py as a module, made once per interpreter.
fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    static MODULE: OnceLock<Py<PyModule>> = OnceLock::new();
    if let Some(module) = MODULE.get() {
        return Ok(module.bind(py).clone());
    }
    let code = CString::new(include_str!("hooks.py")).expect("hooks.py has no NUL byte");
    let module = PyModule::from_code(py, &code, c"<rgun hooks>", c"_rgun_hooks")?;
    let _ = MODULE.set(module.clone().unbind());
    Ok(module)
}

/// `server.log`/`worker.log` write here: `emit(level, text)`.
fn emitter(py: Python<'_>) -> PyResult<Bound<'_, PyCFunction>> {
    PyCFunction::new_closure(py, None, None, |args: &Bound<'_, PyTuple>, _| {
        let (level, text): (String, String) = args.extract()?;
        let level = match level.as_str() {
            "critical" | "error" => Level::Error,
            "warning" => Level::Warning,
            "debug" => Level::Debug,
            _ => Level::Info,
        };
        logging::line(level, &text);
        PyResult::Ok(())
    })
}

/// Load the file named by the master, if any, and run `post_fork`: after
/// the interpreter is prepared, before the application is imported. An
/// error is logged (with its traceback) and ends the worker's boot, as an
/// exception in Gunicorn's post_fork does.
pub(crate) fn load_and_post_fork(py: Python<'_>) -> Result<(), String> {
    let Some(path) = std::env::var_os(HOOKS_FILE_ENV).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = path.to_string_lossy().into_owned();
    let loaded = load(py, &path).map_err(|err| {
        let kind = err
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        if kind == "HookError" {
            return format!("cannot use the server hooks: {}", err.value(py));
        }
        logging::exception(py, &format!("Failed to read config file: {path}"), &err);
        format!("cannot load the server hooks from {path} (traceback above)")
    })?;
    let hooks = HOOKS.get_or_init(|| loaded);
    crate::hook_signals::install_if_hooked(py, hooks)
        .map_err(|e| format!("cannot set up worker_int/worker_abort: {e}"))?;
    hooks.run_or_exit(py, "post_fork")
}

fn load(py: Python<'_>, path: &str) -> PyResult<Hooks> {
    let module = module(py)?;
    let settings = std::env::var(HOOK_SETTINGS_ENV).unwrap_or_else(|_| "{}".into());
    let settings = py
        .import("json")?
        .call_method1("loads", (settings,))?
        .cast_into::<PyDict>()?;
    let worker = std::env::var(HOOK_WORKER_ENV).unwrap_or_default();
    let mut numbers = worker.split(',').map(|n| n.trim().parse::<u64>().ok());
    let age = numbers.next().flatten().unwrap_or(0);
    let num_workers = numbers.next().flatten().unwrap_or(1);
    let object = module.getattr("WorkerHooks")?.call1((
        path,
        settings,
        emitter(py)?,
        std::process::id(),
        std::os::unix::process::parent_id(),
        age,
        num_workers,
    ))?;
    let defined: Vec<String> = object.call_method0("defined")?.extract()?;
    let has = |name: &str| defined.iter().any(|d| d == name);
    Ok(Hooks {
        pre_request: has("pre_request"),
        post_request: has("post_request"),
        object: object.unbind(),
    })
}

impl Hooks {
    /// Whether the file defines `name`.
    pub fn defines(&self, py: Python<'_>, name: &str) -> bool {
        self.object
            .bind(py)
            .getattr("hooks")
            .and_then(|h| h.contains(name))
            .unwrap_or(false)
    }

    /// A boot hook (`post_fork`, `post_worker_init`): an exception is
    /// logged with its traceback and the worker does not boot (Gunicorn's
    /// worker exits with its boot error); `worker_exit` still runs, as in
    /// Gunicorn's `finally`.
    pub fn run_or_exit(&self, py: Python<'_>, name: &str) -> Result<(), String> {
        match self.object.bind(py).call_method0(name) {
            Ok(_) => Ok(()),
            Err(err) => {
                logging::exception(py, &format!("Exception in worker process ({name}):"), &err);
                self.worker_exit(py);
                Err(format!("the {name} hook raised {}", describe(py, &err)))
            }
        }
    }

    /// `worker_int`, `worker_abort`: an exception is logged; the worker
    /// leaves anyway.
    pub fn run_logged(&self, py: Python<'_>, name: &str) {
        if let Err(err) = self.object.bind(py).call_method0(name) {
            logging::exception(py, &format!("Exception in {name} hook:"), &err);
        }
    }

    /// `worker_exit(server, worker)`: logged as Gunicorn logs it, a warning.
    pub fn worker_exit(&self, py: Python<'_>) {
        if let Err(err) = self.object.bind(py).call_method0("worker_exit") {
            let text = format_traceback(py, &err);
            logging::line(
                Level::Warning,
                &format!("Exception during worker exit:\n{}", text.trim_end()),
            );
        }
    }

    /// `pre_request(worker, req)`: the `req` it was given, for
    /// `post_request`; an exception is the request's failure (a logged
    /// `500`, as in Gunicorn).
    pub fn pre_request<'py>(
        &self,
        py: Python<'py>,
        request: &ffi::Request,
    ) -> (Bound<'py, PyAny>, PyResult<()>) {
        // SAFETY: the request's strings are valid for the call.
        let text = |s: ffi::Str| String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned();
        let headers: Vec<(String, String)> = request_headers(request)
            .map(|h| (text(h.name), latin1(h.value)))
            .collect();
        let args = (
            text(request.method),
            text(request.raw_uri),
            text(request.protocol),
            headers,
            text(request.scheme),
            text(request.remote_addr),
        );
        let hooks = self.object.bind(py);
        match hooks.call_method1("request", args) {
            Ok(req) => {
                let called = hooks.call_method1("pre_request", (&req,)).map(drop);
                (req, called)
            }
            Err(err) => (py.None().into_bound(py), Err(err)),
        }
    }

    /// `post_request(worker, req, environ, resp)`: an exception is logged,
    /// the response is not touched (Gunicorn's rule).
    pub fn post_request(
        &self,
        py: Python<'_>,
        req: &Bound<'_, PyAny>,
        environ: Option<&Bound<'_, PyDict>>,
        head: Option<AnswerHead>,
    ) {
        let environ = match environ {
            Some(e) => e.clone().into_any(),
            None => PyDict::new(py).into_any(),
        };
        let (code, reason, headers) = match head {
            Some(head) => (Some(head.status), head.reason, head.headers),
            None => (None, String::new(), Vec::new()),
        };
        let headers = PyList::new(py, headers).map(|l| l.into_any());
        let called = headers.and_then(|headers| {
            self.object
                .bind(py)
                .call_method1("post_request", (req, environ, code, reason, headers))
        });
        if let Err(err) = called {
            logging::exception(py, "Exception in post_request hook", &err);
        }
    }
}

fn request_headers(request: &ffi::Request) -> impl Iterator<Item = &ffi::Header> {
    let headers: &[ffi::Header] = if request.header_count == 0 {
        &[]
    } else {
        // SAFETY: the server's header array, valid for the call.
        unsafe { std::slice::from_raw_parts(request.headers, request.header_count) }
    };
    headers.iter()
}

/// A header value as WSGI reads it: latin-1.
fn latin1(s: ffi::Str) -> String {
    // SAFETY: valid for the call.
    unsafe { s.as_bytes() }.iter().map(|&b| b as char).collect()
}

fn describe(py: Python<'_>, err: &PyErr) -> String {
    let kind = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    format!("{kind}: {}", err.value(py))
}

fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    py.import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| {
            lines
                .try_iter()?
                .map(|l| l?.extract::<String>())
                .collect::<PyResult<String>>()
        })
        .unwrap_or_else(|_| format!("{err}\n"))
}
