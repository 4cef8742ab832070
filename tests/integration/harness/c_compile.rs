//! Compiling a C application as its author would, against the gateway
//! header only: the C tests' proof that `include/rgun.h` is enough on its
//! own. It builds shared libraries, nothing else.

use std::path::Path;
use std::process::Command;

use super::paths::manifest_dir;

/// Compile a C source into a shared library with the gateway header on the
/// include path, as an application author would.
pub fn compile_c_app(source: &Path, out: &Path) {
    let include = manifest_dir().join("gateway/include");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-I"])
        .arg(&include)
        .arg(source)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run cc (a C compiler is needed for the C application tests)");
    assert!(
        output.status.success(),
        "cc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
