//! Where things are: the `rgun` binary under test, the checkout, and the
//! example application libraries cargo built beside the binary. Nothing here
//! builds anything; a missing library is reported with the command to run.

use std::path::PathBuf;

pub fn rgun_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rgun"))
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put the binary, and so the example applications beside it.
pub fn target_dir() -> PathBuf {
    rgun_bin()
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

/// The `APP` argument for the test application.
pub fn testapp() -> String {
    format!("{}:app", app_lib("testapp").display())
}
