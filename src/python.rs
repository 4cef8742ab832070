//! Which Python the master starts for work that needs one (the server
//! hooks of a Python configuration file, and reading its settings) while it
//! runs none itself: the application's. That is `RGUN_PYTHON` if set, else
//! the active virtualenv's (`VIRTUAL_ENV`, as the WSGI bridge takes it); in
//! the pip-installed rgun, the interpreter this master runs in; else the one
//! the bridge was built against.

use std::path::PathBuf;

/// The interpreter the WSGI bridge was built against (build.rs); empty
/// when the build found none.
const BUILT_EXECUTABLE: Option<&str> = option_env!("RGUN_PYTHON_EXECUTABLE");
/// Names the application's Python, before anything else.
pub const PYTHON_ENV: &str = "RGUN_PYTHON";
/// What to run when nothing else names an interpreter.
const FALLBACK: &str = "python3";

pub fn interpreter() -> PathBuf {
    if let Some(python) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        return python.into();
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let python = PathBuf::from(venv).join("bin/python");
        if python.exists() {
            return python;
        }
    }
    #[cfg(rgun_hosted)]
    if let Some(python) = crate::hosted::interpreter() {
        return python;
    }
    BUILT_EXECUTABLE
        .filter(|p| !p.is_empty() && std::path::Path::new(p).exists())
        .map(PathBuf::from)
        .unwrap_or_else(|| FALLBACK.into())
}
