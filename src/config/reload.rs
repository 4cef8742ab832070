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
pub fn reread() -> Result<Loaded, String> {
    let args = ARGS.get().ok_or("the arguments were not kept")?;
    load(args).map_err(|e| e.to_string())
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
