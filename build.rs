//! Record which Python the WSGI bridge is built against, found as PyO3's
//! build finds it (`PYO3_PYTHON`, an active virtualenv, else `python3` on
//! the path), so that the master, which links no Python, starts that
//! interpreter for a Python configuration file's server hooks when no
//! virtualenv names another at run time.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    let python = std::env::var("PYO3_PYTHON")
        .ok()
        .or_else(|| {
            std::env::var("VIRTUAL_ENV")
                .ok()
                .map(|v| format!("{v}/bin/python"))
        })
        .unwrap_or_else(|| "python3".into());
    // Its own absolute path, as the bridge records it.
    let executable = Command::new(&python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=RGUN_PYTHON_EXECUTABLE={executable}");
}
