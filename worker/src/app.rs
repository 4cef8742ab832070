//! Loading the application library in a worker (`RTLD_NOW | RTLD_LOCAL`,
//! never unloaded) and checking that the symbol is an rgun application of a
//! version this server speaks. Also the table of server callbacks handed to
//! the application. It does not run requests: see `call`.

use std::path::{Path, PathBuf};

use rgun_gateway::ffi;

use crate::call;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load application library {path}: no such file")]
    NotFound { path: PathBuf },
    #[error("cannot load application library {path}: {reason}")]
    NotLoadable { path: PathBuf, reason: String },
    #[error("cannot load application {symbol:?} from {path}: no such symbol")]
    NoSymbol { path: PathBuf, symbol: String },
    #[error(
        "cannot load application {symbol:?} from {path}: it is not an rgun application (no rgun magic number)"
    )]
    NotAnApp { path: PathBuf, symbol: String },
    #[error(
        "cannot load application {symbol:?} from {path}: it speaks gateway ABI version {found}, this rgun speaks versions {oldest} to {expected}"
    )]
    AbiVersion {
        path: PathBuf,
        symbol: String,
        found: u32,
        oldest: u32,
        expected: u32,
    },
    #[error("cannot load application {symbol:?} from {path}: it has no handle function")]
    NoHandler { path: PathBuf, symbol: String },
}

/// A loaded application: its exported table and the server table it is
/// given, both living until the process exits.
pub struct LoadedApp {
    table: &'static ffi::App,
    server: &'static ffi::Server,
}

// SAFETY: both tables are immutable for the life of the process (function
// pointers and a leaked, never-written string); calling `handle` from
// several threads is what `--threads` asks, and the application's
// APP_THREAD_SAFE flag is checked before threads are started.
unsafe impl Send for LoadedApp {}
// SAFETY: as above.
unsafe impl Sync for LoadedApp {}

impl LoadedApp {
    /// The application as this worker's server table sees it.
    pub fn new(table: &'static ffi::App, app_arg: &[u8], worker_id: u32) -> LoadedApp {
        LoadedApp {
            table,
            server: server_table(worker_id, app_arg),
        }
    }

    /// The application says its `handle` may run on several threads at once.
    pub fn is_thread_safe(&self) -> bool {
        self.table.flags & ffi::APP_THREAD_SAFE != 0
    }

    /// Run the per-worker init hook: OK, ERR, or ERR_LOAD.
    pub fn init(&self) -> i32 {
        match self.table.init {
            // SAFETY: the hook is called with the server table, as the ABI
            // says, once, before any request.
            Some(init) => unsafe { init(self.server) },
            None => ffi::OK,
        }
    }

    pub fn shutdown(&self) {
        if let Some(shutdown) = self.table.shutdown {
            // SAFETY: once, after the last request, with the server table.
            unsafe { shutdown(self.server) }
        }
    }

    /// Hand one request to the application.
    pub fn handle(&self, call: *mut ffi::Call, request: &ffi::Request) -> i32 {
        let Some(handle) = self.table.handle else {
            log::error!("the application has no handle function");
            return ffi::ERR;
        };
        // SAFETY: `call` and `request` are valid for this call (see
        // `conn::Conn::process`), the server table for the process.
        unsafe { handle(self.server, call, request) }
    }
}

/// Open `path` and find the application table `symbol` in it, checked.
/// `global`: the library's symbols (and its dependencies') serve libraries
/// opened later, as the Python bridge needs for C extension modules;
/// applications are opened local, so that two cannot clash.
pub fn load_library(
    path: &Path,
    symbol: &str,
    global: bool,
) -> Result<&'static ffi::App, LoadError> {
    if !path.exists() {
        return Err(LoadError::NotFound { path: path.into() });
    }
    // dlopen searches the library path for a bare name; the operator means
    // a file.
    let file = if path.components().count() == 1 {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    // SAFETY: loading a library runs its initialisers: that is the point of
    // `rgun lib.so:app`, and the operator chose the file.
    let library = unsafe {
        libloading::os::unix::Library::open(
            Some(&file),
            libloading::os::unix::RTLD_NOW
                | if global {
                    libloading::os::unix::RTLD_GLOBAL
                } else {
                    libloading::os::unix::RTLD_LOCAL
                },
        )
    }
    .map_err(|e| LoadError::NotLoadable {
        path: path.into(),
        reason: dl_reason(&e.to_string(), &file),
    })?;
    // SAFETY: the symbol is read as the address of an `ffi::App`; its
    // contents are checked (magic, version, handler) before any use.
    let table: *const ffi::App = unsafe { library.get::<*const ffi::App>(symbol.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| LoadError::NoSymbol {
            path: path.into(),
            symbol: symbol.into(),
        })?;
    // The library stays for the life of the process: the table and the code
    // it points to must never be unmapped.
    std::mem::forget(library);
    if table.is_null() {
        return Err(LoadError::NotAnApp {
            path: path.into(),
            symbol: symbol.into(),
        });
    }
    // SAFETY: a non-null address of an exported symbol in a library that is
    // never unloaded; only its first two words are read before they prove
    // it is an `ffi::App`.
    let (magic, version) = unsafe {
        (
            std::ptr::read_unaligned(&raw const (*table).magic),
            std::ptr::read_unaligned(&raw const (*table).abi_version),
        )
    };
    if magic != ffi::APP_MAGIC {
        return Err(LoadError::NotAnApp {
            path: path.into(),
            symbol: symbol.into(),
        });
    }
    // Every version in the range reads the same `ffi::App` (see the
    // version rule at `ffi::ABI_VERSION`).
    if !(ffi::MIN_ABI_VERSION..=ffi::ABI_VERSION).contains(&version) {
        return Err(LoadError::AbiVersion {
            path: path.into(),
            symbol: symbol.into(),
            found: version,
            oldest: ffi::MIN_ABI_VERSION,
            expected: ffi::ABI_VERSION,
        });
    }
    // SAFETY: magic and version are ones this server speaks, so the symbol
    // is an `ffi::App` of this ABI, in a library that is never unloaded.
    let table: &'static ffi::App = unsafe { &*table };
    if table.handle.is_none() {
        return Err(LoadError::NoHandler {
            path: path.into(),
            symbol: symbol.into(),
        });
    }
    Ok(table)
}

/// dlerror's text starts with the path it was given; say it once.
fn dl_reason(message: &str, file: &Path) -> String {
    let prefix = format!("{}: ", file.display());
    message.strip_prefix(&prefix).unwrap_or(message).to_string()
}

fn server_table(worker_id: u32, app_arg: &[u8]) -> &'static ffi::Server {
    let app_arg: &'static [u8] = Box::leak(app_arg.to_vec().into_boxed_slice());
    Box::leak(Box::new(ffi::Server {
        abi_version: ffi::ABI_VERSION,
        worker_id,
        app_arg: ffi::Str::new(app_arg),
        read_body: call::read_body,
        start_response: call::start_response,
        write_body: call::write_body,
        respond: call::respond,
        log: call::log,
        send_file: call::send_file,
    }))
}
