//! Record which Python the bridge is built against: its executable (the
//! embedded interpreter's default `sys.executable`, for `multiprocessing`)
//! and its version (to tell a virtualenv made for another Python); and where
//! libpython is, for the library's run path.

fn main() {
    let config = pyo3_build_config::get();
    pyo3_build_config::use_pyo3_cfgs();
    println!(
        "cargo:rustc-env=RGUN_PYTHON_EXECUTABLE={}",
        config.executable().unwrap_or("")
    );
    println!(
        "cargo:rustc-env=RGUN_PYTHON_VERSION={}.{}",
        config.version().major,
        config.version().minor
    );
    // libpython may live outside the loader's path (pyenv, a venv's base):
    // record its folder in the bridge's run path. Not in the pip-installed
    // rgun's extension module (python/, built by maturin with
    // PYO3_BUILD_EXTENSION_MODULE), which links no libpython: cargo hands
    // this argument to the cdylibs of dependent packages too.
    println!("cargo:rerun-if-env-changed=PYO3_BUILD_EXTENSION_MODULE");
    let extension_module = std::env::var_os("PYO3_BUILD_EXTENSION_MODULE").is_some();
    if let Some(dir) = config.lib_dir().filter(|_| !extension_module) {
        println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,{dir}");
    }
}
