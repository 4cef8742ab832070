//! The pip-installed `rgun`: the master runs inside the virtualenv's own
//! Python process (`python -m rgun`, or the `rgun` script pip writes), and
//! its workers are forks of that process. The WSGI bridge is linked in and
//! hosts the interpreter that is already running, so no libpython is needed
//! (a Python built without a shared one serves too) and the interpreter is
//! the virtualenv's by construction. The command line, the arbiter and the
//! workers are the same as the `rgun` binary's; only where the bridge comes
//! from differs. Nothing here serves requests.

use std::ffi::OsString;

use anyhow::anyhow;
use pyo3::prelude::*;

use rgun_gateway::ffi;
use rgun_worker::AppSource;

use crate::arbiter::ForkHooks;
use crate::cli::Cli;

/// `rgun._rgun`, the module maturin builds.
#[pymodule]
fn _rgun(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(serve, module)?)?;
    module.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// Run the master with `argv` (its first item names the program) and
/// return its exit code. The GIL is let go for the master's whole life: the
/// master runs no Python, and takes the GIL only around each fork.
#[pyfunction]
fn serve(py: Python<'_>, argv: Vec<OsString>) -> i32 {
    // The process's own command line (`python .../rgun APP ...`): what a
    // re-executed master (HUP with --preload, USR2) runs again.
    crate::proctitle::save_args();
    if let Ok(exe) = py
        .import("sys")
        .and_then(|sys| sys.getattr("executable"))
        .and_then(|exe| exe.extract::<std::path::PathBuf>())
    {
        let _ = PYTHON.set(exe);
    }
    i32::from(py.detach(|| crate::serve_args(argv)))
}

/// This process's interpreter (`sys.executable`, the virtualenv's), for
/// the server hooks' process (`crate::python`).
static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

pub(crate) fn interpreter() -> Option<std::path::PathBuf> {
    PYTHON.get().cloned().filter(|p| !p.as_os_str().is_empty())
}

/// The bridge in this process: the workers use its table directly, and
/// every fork goes through CPython's fork protocol, since the master runs
/// an interpreter even without `--preload`. Always `Some` (an `Option` so
/// that the embedding path stays compiled in both builds of the master).
pub(crate) fn python_app(
    cli: &Cli,
    module: &str,
) -> Option<anyhow::Result<(AppSource, Option<ForkHooks>)>> {
    let hooks = ForkHooks {
        before: rgun_wsgi::rgun_wsgi_before_fork,
        after_parent: rgun_wsgi::rgun_wsgi_after_fork_parent,
        after_child: rgun_wsgi::rgun_wsgi_after_fork_child,
    };
    if cli.preload {
        // SAFETY: the bridge's preload entry point, with a spec valid for
        // the call and this process's log callback.
        let rc = unsafe {
            rgun_wsgi::rgun_wsgi_preload(
                ffi::Str::new(module.as_bytes()),
                rgun_worker::log_callback,
            )
        };
        if rc != ffi::OK {
            return Some(Err(anyhow!(
                "cannot load the Python application {module:?} (see above)"
            )));
        }
    }
    let app = AppSource::Table {
        table: &rgun_wsgi::rgun_wsgi_app,
        arg: module.to_string(),
    };
    Some(Ok((app, Some(hooks))))
}
