//! What the Python WSGI tests add to the harness: where this project's
//! Python test applications live (`tests/python`) and a virtualenv with
//! Flask, made on first use. The test application contract as WSGI,
//! `examples/testapp/testapp_wsgi.py`, is the harness's `App::Wsgi`: the
//! core suite runs against it as against the native one (`test_each_app!`).
//! That file is the repository's copy of `shared/spec/testapp_wsgi.py`, so
//! that a clone with nothing beside it runs every test; `spec_copy` checks
//! the two are the same where `../shared/spec` is there.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::{manifest_dir, target_dir};

/// `tests/python`, home of this project's Python test applications.
pub fn python_dir() -> PathBuf {
    manifest_dir().join("tests/python")
}

/// The Python the bridge is built against (as PyO3's build finds it).
fn python() -> String {
    std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A virtualenv with Flask (and prometheus_client, for the server hooks'
/// tests), at `target/test-venv`: made (with network access to PyPI) the
/// first time a test needs it, unless it is there.
/// `.ci/run` makes it ahead of the tests.
///
/// `RGUN_TEST_VENV` names another one instead: the virtualenv the rgun under
/// test is installed in (`RGUN_TEST_BIN`), whose Python it runs.
pub fn test_venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        if let Some(venv) = std::env::var_os("RGUN_TEST_VENV") {
            return PathBuf::from(venv);
        }
        let venv = target_dir()
            .parent()
            .expect("the target directory")
            .join("test-venv");
        let venv_python = venv.join("bin/python");
        let has_packages = |python: &PathBuf| {
            Command::new(python)
                .args(["-c", "import flask, markupsafe, prometheus_client"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has_packages(&venv_python) {
            let run = |program: &str, args: &[&str]| {
                let status = Command::new(program)
                    .args(args)
                    .status()
                    .unwrap_or_else(|e| panic!("run {program}: {e}"));
                assert!(
                    status.success(),
                    "`{program} {}` failed: make the test virtualenv by hand with\n  \
                     {} -m venv {} && {}/bin/pip install flask markupsafe prometheus_client",
                    args.join(" "),
                    python(),
                    venv.display(),
                    venv.display()
                );
            };
            run(&python(), &["-m", "venv", venv.to_str().unwrap()]);
            run(
                venv.join("bin/pip").to_str().unwrap(),
                &[
                    "install",
                    "--quiet",
                    "flask",
                    "markupsafe",
                    "prometheus_client",
                ],
            );
        }
        venv
    })
    .clone()
}
