//! Where things are: the `rgun` binary under test, the checkout, the
//! example application libraries cargo built beside the binary, and the
//! test application's WSGI version. Nothing here builds anything; a missing
//! library is reported with the command to run.

use std::path::PathBuf;

/// The `rgun` under test: the one cargo built, or the one `RGUN_TEST_BIN`
/// names (the pip-installed command, `.ci/pip-route`, which runs the WSGI
/// suites against it).
pub fn rgun_bin() -> PathBuf {
    std::env::var_os("RGUN_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rgun")))
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put the binary, and so the example applications beside it.
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rgun"))
        .parent()
        .expect("the rgun binary has a parent directory")
        .to_path_buf()
}

/// An example application library (`libNAME.so`) built by the workspace.
pub fn app_lib(name: &str) -> PathBuf {
    let path = target_dir().join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before `cargo test --workspace` \
         (cargo test builds the rgun binary but not the example applications)",
        path.display()
    );
    path
}

/// `examples/testapp`, home of `testapp_wsgi.py`: the test application
/// contract as a WSGI callable, kept in the repository so that a clone with
/// nothing beside it runs every test.
pub fn wsgi_testapp_dir() -> PathBuf {
    manifest_dir().join("examples/testapp")
}

/// `../shared/spec` beside the checkout, where the contract and the original
/// `testapp_wsgi.py` live on this project's machines; `None` elsewhere.
pub fn shared_spec_dir() -> Option<PathBuf> {
    let dir = manifest_dir().join("../shared/spec").canonicalize().ok()?;
    dir.is_dir().then_some(dir)
}

/// The `APP` argument for the test application.
pub fn testapp() -> String {
    format!("{}:app", app_lib("testapp").display())
}
