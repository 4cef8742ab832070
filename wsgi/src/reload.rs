//! `--reload` for Python applications: the modules the application
//! imported are the files that make it up. A thread looks at their
//! modification times once a second and, when one changed, raises SIGUSR2
//! in its worker, which asks the master to reload every worker (the worker
//! watches a native library itself; this bridge is what knows the modules).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use pyo3::prelude::*;

/// How often the modules are looked at.
const POLL: Duration = Duration::from_secs(1);

/// Start watching the modules imported so far, if the master asked for it
/// (`RGUN_RELOAD=1`).
pub fn watch_if_asked(py: Python<'_>) -> PyResult<()> {
    if std::env::var("RGUN_RELOAD").as_deref() != Ok("1") {
        return Ok(());
    }
    let files = module_files(py)?;
    let stamps: Vec<(PathBuf, Option<SystemTime>)> = files
        .into_iter()
        .map(|f| (f.clone(), modified(&f)))
        .collect();
    std::thread::Builder::new()
        .name("rgun-reload".into())
        .spawn(move || watch(stamps))
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    Ok(())
}

/// `__file__` of every module in `sys.modules` that has one.
fn module_files(py: Python<'_>) -> PyResult<Vec<PathBuf>> {
    let modules = py.import("sys")?.getattr("modules")?;
    let mut files = Vec::new();
    for module in modules.call_method0("values")?.try_iter()? {
        if let Ok(file) = module?.getattr("__file__")
            && let Ok(file) = file.extract::<String>()
        {
            files.push(PathBuf::from(file));
        }
    }
    Ok(files)
}

fn modified(file: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

fn watch(stamps: Vec<(PathBuf, Option<SystemTime>)>) {
    loop {
        std::thread::sleep(POLL);
        if let Some((file, _)) = stamps.iter().find(|(file, was)| modified(file) != *was) {
            crate::logging::line(
                crate::logging::Level::Debug,
                &format!("--reload: {} changed", file.display()),
            );
            // SAFETY: raising a signal in this process; the worker queues
            // USR2 for its loop.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
            return;
        }
    }
}
