//! The configuration read again on `HUP`, from the same arguments and
//! environment the master started with.

use std::ffi::OsString;
use std::sync::OnceLock;

use super::{Loaded, load};

/// The arguments the configuration was first loaded from.
static ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// Keep the arguments for [`reread`].
pub fn remember(args: &[OsString]) {
    let _ = ARGS.set(args.to_vec());
}

/// The configuration as it reads now; the error is one line.
///
/// Read from `start_dir`, the directory rgun started in (before any
/// `--chdir`), as at the start: a relative `-c rgun.toml`, or the
/// `./rgun.toml` found there, is the same file; the working directory is
/// put back after.
pub fn reread(start_dir: Option<&std::path::Path>) -> Result<Loaded, String> {
    let args = ARGS.get().ok_or("the arguments were not kept")?;
    let back = std::env::current_dir().ok();
    if let Some(dir) = start_dir {
        std::env::set_current_dir(dir)
            .map_err(|e| format!("cannot change directory to {}: {e}", dir.display()))?;
    }
    let loaded = load(args).map_err(|e| e.to_string());
    if let Some(dir) = back.filter(|_| start_dir.is_some()) {
        std::env::set_current_dir(&dir)
            .map_err(|e| format!("cannot change directory back to {}: {e}", dir.display()))?;
    }
    loaded
}

/// Whether the sockets are the ones `binds` asks for (a port of 0 matches
/// the port the kernel chose).
pub fn binds_match(binds: &[String], listeners: &[crate::sockets::Listener]) -> bool {
    use crate::sockets::BindAddr;
    let wanted: Vec<Option<BindAddr>> = binds.iter().map(|b| BindAddr::parse(b).ok()).collect();
    let same = |w: &BindAddr, have: &BindAddr| match (w, have) {
        (BindAddr::Tcp(w), BindAddr::Tcp(h)) if w.port() == 0 => w.ip() == h.ip(),
        _ => w == have,
    };
    listeners.len() == wanted.len()
        && listeners
            .iter()
            .all(|l| wanted.iter().flatten().any(|w| same(w, &l.addr)))
}

/// A changed `bind` is not applied by a reload: the listening sockets stay
/// open across it (no connection is refused), and moving them needs a
/// restart.
pub fn log_bind_refused(binds: &[String], listeners: &[crate::sockets::Listener]) {
    let have: Vec<String> = listeners
        .iter()
        .map(|l| crate::sockets::describe(&l.addr))
        .collect();
    log::warn!(
        "bind changed to {} but a reload keeps the listening sockets ({}): restart rgun to listen there",
        binds.join(","),
        have.join(",")
    );
}
