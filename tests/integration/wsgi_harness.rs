//! What the Python WSGI tests add to the harness: where the Python test
//! applications live, a virtualenv with Flask (made on first use), and
//! `WsgiServer`, a stand-in for `Server` that starts the test application
//! contract as `examples/testapp/testapp_wsgi.py` (the repository's copy of
//! `shared/spec/testapp_wsgi.py`, checked by `spec_copy`), so that the core
//! suite's files run unchanged against it (see `wsgi_suite`).

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use crate::harness::{Server, ServerBuilder, manifest_dir, target_dir, wsgi_testapp_dir};

/// `tests/python`, home of this project's Python test applications.
pub fn python_dir() -> PathBuf {
    manifest_dir().join("tests/python")
}

/// The Python the bridge is built against (as PyO3's build finds it).
fn python() -> String {
    std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A virtualenv with Flask, at `target/test-venv`: made (with network
/// access to PyPI) the first time a test needs it, unless it is there.
/// `.ci/run` makes it ahead of the tests.
pub fn test_venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = target_dir()
            .parent()
            .expect("the target directory")
            .join("test-venv");
        let venv_python = venv.join("bin/python");
        let has_flask = |python: &PathBuf| {
            Command::new(python)
                .args(["-c", "import flask, markupsafe"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has_flask(&venv_python) {
            let run = |program: &str, args: &[&str]| {
                let status = Command::new(program)
                    .args(args)
                    .status()
                    .unwrap_or_else(|e| panic!("run {program}: {e}"));
                assert!(
                    status.success(),
                    "`{program} {}` failed: make the test virtualenv by hand with\n  \
                     {} -m venv {} && {}/bin/pip install flask markupsafe",
                    args.join(" "),
                    python(),
                    venv.display(),
                    venv.display()
                );
            };
            run(&python(), &["-m", "venv", venv.to_str().unwrap()]);
            run(
                venv.join("bin/pip").to_str().unwrap(),
                &["install", "--quiet", "flask", "markupsafe"],
            );
        }
        venv
    })
    .clone()
}

/// The `APP` argument of the WSGI test application.
pub fn testapp() -> String {
    "testapp_wsgi:app".into()
}

/// A `Server` running `testapp_wsgi.py`: everything else about it is the
/// `Server` it derefs to.
pub struct WsgiServer(Server);

impl Deref for WsgiServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl DerefMut for WsgiServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.0
    }
}

impl WsgiServer {
    /// As `Server::builder`, from `testapp_wsgi.py`'s folder (`--chdir`).
    pub fn builder(app: impl Into<String>) -> WsgiBuilder {
        WsgiBuilder(
            Server::builder(app)
                .arg("--chdir")
                .arg(wsgi_testapp_dir().to_str().unwrap()),
        )
    }

    pub fn testapp() -> WsgiServer {
        WsgiServer::builder(testapp()).start()
    }

    pub fn testapp_with<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> WsgiServer {
        WsgiServer::builder(testapp()).args(args).start()
    }

    pub fn describe(status: ExitStatus) -> String {
        Server::describe(status)
    }
}

/// `ServerBuilder` for a `WsgiServer`.
pub struct WsgiBuilder(ServerBuilder);

impl WsgiBuilder {
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(self, args: I) -> Self {
        WsgiBuilder(self.0.args(args))
    }

    pub fn env(self, key: &str, value: &str) -> Self {
        WsgiBuilder(self.0.env(key, value))
    }

    pub fn wait_for_workers(self, n: usize) -> Self {
        WsgiBuilder(self.0.wait_for_workers(n))
    }

    pub fn start(self) -> WsgiServer {
        WsgiServer(self.0.start())
    }
}
