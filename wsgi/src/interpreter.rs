//! The embedded CPython: started once per process (in a worker's init hook,
//! or in the master for `--preload`) without Python's own signal handlers,
//! as a virtualenv's interpreter when `VIRTUAL_ENV` names one; or, when rgun
//! runs inside a Python process (the pip-installed `rgun`, `python/`), that
//! process's own interpreter, which is then hosting rather than embedded.
//! Also: the application loaded from its spec; per-thread interpreter state
//! for `--threads`; and CPython's fork protocol (with `gc.freeze`) around
//! each fork of a master whose process runs Python. Requests are not handled
//! here.

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::logging;

/// The WSGI callable, once loaded; a preloaded one is inherited by fork.
static APPLICATION: OnceLock<Py<PyAny>> = OnceLock::new();

/// The interpreter this rgun was built against (build.rs).
const BUILT_EXECUTABLE: &str = env!("RGUN_PYTHON_EXECUTABLE");
const BUILT_VERSION: &str = env!("RGUN_PYTHON_VERSION");

pub(crate) fn application() -> Option<&'static Py<PyAny>> {
    APPLICATION.get()
}

/// Start the interpreter unless this process has one, and load the
/// application named by `spec` (`module[:callable]`) unless already loaded.
/// `before_import` runs once the interpreter is prepared, just before the
/// import (or at once, for an application preloaded): the server hooks'
/// `post_fork`. The error is one line; a traceback, when one helps, is
/// logged first.
pub(crate) fn load(
    spec: &str,
    before_import: impl FnOnce(Python<'_>) -> Result<(), String>,
) -> Result<(), String> {
    if APPLICATION.get().is_some() {
        return Python::attach(before_import);
    }
    let (hosted, python) = interpreter()?;
    Python::attach(|py| {
        let loaded = boot(py, spec, hosted, python.as_deref(), before_import)?;
        match loaded {
            Ok(app) => {
                let _ = APPLICATION.set(app);
                Ok(())
            }
            Err(err) => Err(describe_load_error(py, spec, &err)),
        }
    })
}

/// The interpreter of this process, started unless it runs already:
/// whether it is hosting (the process's own, see the module's first lines)
/// and, if not, the Python its children should run.
fn interpreter() -> Result<(bool, Option<PathBuf>), String> {
    if STARTED.load(Ordering::Acquire) {
        return Ok((false, python_for_children()?));
    }
    // SAFETY: a plain query, valid before initialisation.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        // The virtualenv's own interpreter: its sys.executable, sys.argv
        // and sys.path are already right.
        return Ok((true, None));
    }
    let python = python_for_children()?;
    start(python.as_deref()).map_err(|e| format!("cannot start the Python interpreter: {e}"))?;
    Ok((false, python))
}

/// Whether `preload` turned the collector off, for the workers to turn it
/// back on.
static GC_OFF_FOR_FORK: AtomicBool = AtomicBool::new(false);

/// `--preload`: `load` in the master, with the collector off from before
/// the import to every fork, as CPython's gc.freeze documentation advises:
/// a collection in the master would free objects among the application's
/// and leave holes that the workers' new objects fill, copying those pages.
pub(crate) fn preload(spec: &str) -> Result<(), String> {
    interpreter()?;
    Python::attach(|py| {
        let off = py
            .import("gc")
            .and_then(|gc| gc.call_method0("disable"))
            .is_ok();
        GC_OFF_FOR_FORK.store(off, Ordering::Relaxed);
    });
    load(spec, |_| Ok(()))
}

/// Run boot.py's `prepare` and `load`. `hosted`: the interpreter is the
/// process's own (see the module's first lines), not one rgun started.
/// The outer error is `before_import`'s, the inner one the import's.
fn boot(
    py: Python<'_>,
    spec: &str,
    hosted: bool,
    python: Option<&Path>,
    before_import: impl FnOnce(Python<'_>) -> Result<(), String>,
) -> Result<PyResult<Py<PyAny>>, String> {
    let prepared = boot_module(py).and_then(|module| {
        if hosted {
            let pythonpath = std::env::var("PYTHONPATH").unwrap_or_default();
            module.call_method1("prepare_hosted", (pythonpath,))?;
        } else {
            let sys = py.import("sys")?;
            sys.setattr("argv", std::env::args().collect::<Vec<_>>())?;
            let python = python.map(|p| p.to_string_lossy().into_owned());
            module.call_method1("prepare", (python.unwrap_or_default(),))?;
        }
        Ok(module)
    });
    let module = match prepared {
        Ok(module) => module,
        Err(err) => return Ok(Err(err)),
    };
    before_import(py)?;
    Ok(module.call_method1("load", (spec,)).map(Bound::unbind))
}

/// boot.py as a module, made once per interpreter.
fn boot_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    static BOOT: OnceLock<Py<PyModule>> = OnceLock::new();
    if let Some(module) = BOOT.get() {
        return Ok(module.bind(py).clone());
    }
    let code = CString::new(include_str!("boot.py")).expect("boot.py has no NUL byte");
    let module = PyModule::from_code(py, &code, c"<rgun boot>", c"_rgun_boot")?;
    let _ = BOOT.set(module.clone().unbind());
    Ok(module)
}

/// The worker's own set-up of an interpreter it started or inherited
/// (preloaded): see boot.py's `enter_worker`.
pub(crate) fn enter_worker(py: Python<'_>) -> PyResult<()> {
    boot_module(py)?.call_method0("enter_worker").map(drop)
}

/// A load failure as one line. Failures boot.py explains (`AppLoadError`)
/// need no traceback; anything the application's own code raised while it
/// was imported gets its traceback logged.
fn describe_load_error(py: Python<'_>, spec: &str, err: &PyErr) -> String {
    let value = err.value(py);
    let kind = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    if kind == "AppLoadError" {
        return format!("cannot load application {spec:?}: {value}");
    }
    logging::exception(
        py,
        &format!("Exception while loading application {spec:?}:"),
        err,
    );
    format!("cannot load application {spec:?}: {kind}: {value} (traceback above)")
}

/// The interpreter child processes should run (`multiprocessing`'s
/// spawn): the virtualenv's when `VIRTUAL_ENV` names one made from the
/// Python this bridge was built for, else that Python, if it is still there.
///
/// A virtualenv of another Python is refused before the interpreter starts
/// (issue 14): of another version, its compiled packages cannot load into
/// this libpython; of another installation of the same version (Debian's
/// and pyenv's 3.11, say), its standard library does not match this
/// libpython's built-in modules. Either way the app would be half loaded.
fn python_for_children() -> Result<Option<PathBuf>, String> {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let venv = PathBuf::from(venv);
        let python = venv.join("bin/python");
        let lib = venv.join(format!("lib/python{BUILT_VERSION}"));
        let theirs = if python.exists() && lib.is_dir() {
            match virtualenv_base(&venv) {
                Some(base) if !same_file(&base, Path::new(BUILT_EXECUTABLE)) => {
                    format!("a virtualenv of {}", base.display())
                }
                _ => return Ok(Some(python)),
            }
        } else {
            virtualenv_version(&venv)
                .map(|v| format!("a virtualenv of Python {v}"))
                .unwrap_or_else(|| format!("not a virtualenv of Python {BUILT_VERSION}"))
        };
        return Err(format!(
            "VIRTUAL_ENV={} is {theirs}, but this rgun's Python bridge was built for \
             Python {BUILT_VERSION} ({BUILT_EXECUTABLE}): install rgun into that virtualenv \
             (`pip install rgun`), or rebuild the bridge with its interpreter \
             (`PYO3_PYTHON={}/bin/python cargo build --release -p rgun-wsgi`)",
            venv.display(),
            venv.display()
        ));
    }
    Ok(Some(PathBuf::from(BUILT_EXECUTABLE)).filter(|p| p.is_file()))
}

/// The interpreter a virtualenv was made from: `home` in its pyvenv.cfg.
fn virtualenv_base(venv: &Path) -> Option<PathBuf> {
    let home = pyvenv_cfg(venv, &["home"])?;
    [format!("python{BUILT_VERSION}"), "python3".into()]
        .iter()
        .map(|name| Path::new(&home).join(name))
        .find(|p| p.is_file())
}

/// Whether two paths name the same file once links are followed; `true`
/// when either cannot be resolved (no verdict, no refusal).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    }
}

fn pyvenv_cfg(venv: &Path, keys: &[&str]) -> Option<String> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        keys.contains(&key.trim()).then(|| value.trim().to_string())
    })
}

/// `major.minor` of the Python a virtualenv was made from (its pyvenv.cfg).
fn virtualenv_version(venv: &Path) -> Option<String> {
    let version = pyvenv_cfg(venv, &["version", "version_info"])?;
    let mut parts = version.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// Whether this process started the interpreter.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Initialise CPython: no signal handlers of its own (rgun keeps its
/// signals), and `executable` as `sys.executable`, from which CPython finds
/// its prefix and, next to it, a virtualenv's `pyvenv.cfg`.
fn start(executable: Option<&Path>) -> Result<(), String> {
    // SAFETY: plain interpreter set-up calls, in the order the C API wants
    // them (InitPythonConfig, set fields, InitializeFromConfig, Clear), on
    // a config that lives on this stack frame until it is cleared.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        let cfg = config.as_mut_ptr();
        ffi::PyConfig_InitPythonConfig(cfg);
        (*cfg).install_signal_handlers = 0;
        if let Some(exe) = executable {
            let exe = CString::new(exe.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            let status =
                ffi::PyConfig_SetBytesString(cfg, &raw mut (*cfg).executable, exe.as_ptr());
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(cfg);
                return Err(status_message(&status));
            }
        }
        let status = ffi::Py_InitializeFromConfig(cfg);
        ffi::PyConfig_Clear(cfg);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(status_message(&status));
        }
        // Initialisation leaves this thread holding the GIL; every later
        // use takes it through Python::attach.
        ffi::PyEval_SaveThread();
    }
    STARTED.store(true, Ordering::Release);
    Ok(())
}

fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "unknown error".into();
    }
    // SAFETY: a non-null err_msg is a static C string (CPython's contract).
    unsafe { CStr::from_ptr(status.err_msg) }
        .to_string_lossy()
        .into_owned()
}

thread_local! {
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

/// Give this thread a Python thread state that lives as long as the
/// thread. Without it, each Python::attach on a thread CPython did not
/// start creates and destroys one, which is slow and loses thread-locals.
pub(crate) fn pin_thread_state() {
    if PINNED.get() {
        return;
    }
    // SAFETY: the interpreter is running (the init hook succeeded before
    // any request) and this thread does not hold the GIL (the server calls
    // the app without it). The ensure is never released: the state stays
    // attached to the thread, and SaveThread lets the GIL go.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::PyEval_SaveThread();
    }
    PINNED.set(true);
}

/// Whether the GIL was held before `before_fork` took it.
static FORK_GIL_WAS_HELD: AtomicBool = AtomicBool::new(false);

/// Whether this process runs an interpreter (started here, or hosting).
fn runs_python() -> bool {
    // SAFETY: a plain query, valid at any time.
    STARTED.load(Ordering::Acquire) || unsafe { ffi::Py_IsInitialized() } != 0
}

/// Before fork(2) in a master that runs Python (`--preload`, or rgun hosted
/// by a Python process): take the GIL and CPython's fork locks, so that the
/// child starts with a consistent interpreter. Every object made so far
/// goes out of the collector's reach first (`gc.freeze`, CPython bpo-31558):
/// a collection in a worker would otherwise write to each of them and copy
/// the pages the workers share with the master.
pub(crate) fn before_fork() {
    if !runs_python() {
        return;
    }
    // SAFETY: the interpreter runs in this process; Ensure takes the GIL for
    // this (the master's only) thread, as PyOS_BeforeFork requires.
    unsafe {
        let state = ffi::PyGILState_Ensure();
        FORK_GIL_WAS_HELD.store(
            matches!(state, ffi::PyGILState_STATE::PyGILState_LOCKED),
            Ordering::Relaxed,
        );
    }
    // SAFETY: the GIL is held (just above).
    let py = unsafe { Python::assume_attached() };
    freeze_heap(py);
    // SAFETY: GIL held, as PyOS_BeforeFork requires.
    unsafe { ffi::PyOS_BeforeFork() };
}

/// `gc.freeze()`; a failure only costs memory, so it is a warning.
fn freeze_heap(py: Python<'_>) {
    let frozen = py.import("gc").and_then(|gc| gc.call_method0("freeze"));
    if let Err(err) = frozen {
        logging::line(
            logging::Level::Warning,
            &format!("gc.freeze() before fork failed: {err}"),
        );
    }
}

pub(crate) fn after_fork_parent() {
    if !runs_python() {
        return;
    }
    // SAFETY: pairs with before_fork in this process, GIL held.
    unsafe {
        ffi::PyOS_AfterFork_Parent();
        ffi::PyGILState_Release(gil_state());
    }
}

/// In the new worker: CPython resets its locks and threads (only this
/// thread survives a fork), then the GIL is let go so that requests take it.
pub(crate) fn after_fork_child() {
    if !runs_python() {
        return;
    }
    // SAFETY: the child's only thread holds the GIL it inherited from
    // before_fork, which PyOS_AfterFork_Child requires.
    unsafe { ffi::PyOS_AfterFork_Child() };
    if GC_OFF_FOR_FORK.load(Ordering::Relaxed) {
        // SAFETY: the GIL is still held (released just below).
        let py = unsafe { Python::assume_attached() };
        if let Err(err) = py.import("gc").and_then(|gc| gc.call_method0("enable")) {
            logging::line(
                logging::Level::Warning,
                &format!("gc.enable() in a new worker failed: {err}"),
            );
        }
    }
    // SAFETY: pairs with the Ensure of before_fork.
    unsafe { ffi::PyGILState_Release(gil_state()) };
}

fn gil_state() -> ffi::PyGILState_STATE {
    if FORK_GIL_WAS_HELD.load(Ordering::Relaxed) {
        ffi::PyGILState_STATE::PyGILState_LOCKED
    } else {
        ffi::PyGILState_STATE::PyGILState_UNLOCKED
    }
}

/// At worker exit: run the application's `atexit` functions (the worker
/// never finalises the interpreter: non-daemon threads could hold it up)
/// and flush Python's standard streams.
pub(crate) fn shutdown() {
    if !STARTED.load(Ordering::Acquire) && APPLICATION.get().is_none() {
        return;
    }
    Python::attach(|py| {
        let result = py
            .import("atexit")
            .and_then(|atexit| atexit.call_method0("_run_exitfuncs"));
        if let Err(err) = result {
            logging::exception(py, "Exception in an atexit function:", &err);
        }
        if let Ok(sys) = py.import("sys") {
            for stream in ["stdout", "stderr"] {
                if let Ok(s) = sys.getattr(stream) {
                    let _ = s.call_method0("flush");
                }
            }
        }
    });
}
