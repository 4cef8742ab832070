//! Record which Python the bridge is built against: its executable (the
//! embedded interpreter's default `sys.executable`, for `multiprocessing`)
//! and its version (to tell a virtualenv made for another Python).

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
}
