//! Telling systemd how the service is doing (sd_notify(3) for
//! `Type=notify`): READY=1 once the first worker has loaded the
//! application, RELOADING=1 on HUP, STOPPING=1 when stopping, and STATUS=
//! lines. Silent without NOTIFY_SOCKET.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    path: Option<String>,
    /// A new master speaks for the service (`USR2`): this one is silent,
    /// so that its STOPPING=1 cannot stop the service under the new one.
    silent: bool,
}

impl Notifier {
    /// From NOTIFY_SOCKET, which is then removed so that the application
    /// and its children do not speak for the service.
    pub fn from_env() -> Notifier {
        let path = std::env::var_os("NOTIFY_SOCKET").map(|p| p.to_string_lossy().into_owned());
        // SAFETY: the master is single-threaded.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let socket = path.clone().and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&path),
            };
            match (UnixDatagram::unbound(), addr) {
                (Ok(socket), Ok(addr)) => Some((socket, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    log::warn!("cannot reach systemd's NOTIFY_SOCKET {path}: {e}");
                    None
                }
            }
        });
        Notifier {
            socket,
            path,
            silent: false,
        }
    }

    /// Speak for the service, or leave that to another master.
    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
    }

    /// Put NOTIFY_SOCKET back for a re-executed master (same pid).
    pub fn restore_env(&self) {
        if let Some(path) = &self.path {
            // SAFETY: the master is single-threaded.
            unsafe { std::env::set_var("NOTIFY_SOCKET", path) };
        }
    }

    /// Send one notification, e.g. `READY=1\nSTATUS=...`.
    pub fn notify(&self, state: &str) {
        if self.silent {
            return;
        }
        if let Some((socket, addr)) = &self.socket
            && let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
        {
            log::warn!("cannot notify systemd ({state:?}): {e}");
        }
    }
}
