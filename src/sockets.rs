//! Binding the listening sockets, in the master, before any worker exists:
//! TCP over IPv4 and IPv6 and Unix sockets, close-on-exec and non-blocking
//! (the workers share them). It accepts nothing itself.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use socket2::{Domain, SockAddr, Socket, Type};

/// The port of a `--bind HOST` without one, as Gunicorn does.
pub const DEFAULT_PORT: u16 = 8000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl BindAddr {
    pub fn parse(spec: &str) -> Result<BindAddr> {
        BindAddr::parse_flag(spec, "--bind")
    }

    /// As `parse`, for the flag named `flag` (in its error messages).
    pub fn parse_flag(spec: &str, flag: &str) -> Result<BindAddr> {
        if let Some(path) = spec.strip_prefix("unix:") {
            if path.is_empty() {
                bail!("invalid {flag} {spec:?}: no socket path after unix:");
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        let with_port = if spec.starts_with('[') {
            if spec.ends_with(']') {
                format!("{spec}:{DEFAULT_PORT}")
            } else {
                spec.to_string()
            }
        } else if spec.contains(':') {
            spec.to_string()
        } else {
            format!("{spec}:{DEFAULT_PORT}")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| {
                format!("invalid {flag} {spec:?}: expected HOST:PORT, [IPV6]:PORT or unix:PATH")
            })?
            .next()
            .with_context(|| format!("invalid {flag} {spec:?}: the host resolves to no address"))?;
        Ok(BindAddr::Tcp(addr))
    }
}

/// The environment variable a re-executing master lists its listening
/// descriptors in, for its new image.
pub const INHERIT_ENV: &str = "RGUN_FDS";
/// systemd socket activation (sd_listen_fds(3)): descriptors from 3 on.
const SD_LISTEN_FDS_START: RawFd = 3;

/// A bound, listening socket.
pub struct Listener {
    socket: Socket,
    pub addr: BindAddr,
    /// Handed over by systemd: its socket file is systemd's to remove.
    systemd: bool,
}

/// Listening sockets this process was started with: from a master that
/// re-executed itself (`RGUN_FDS`), or from systemd (`LISTEN_FDS` with
/// `LISTEN_PID` naming this process). The variables are removed so that
/// nothing started later takes them for its own.
pub fn inherited() -> Result<Option<Vec<Listener>>> {
    let own = std::env::var(INHERIT_ENV).ok();
    let systemd = std::env::var("LISTEN_PID")
        .ok()
        .filter(|pid| pid.trim() == std::process::id().to_string())
        .and_then(|_| std::env::var("LISTEN_FDS").ok());
    // SAFETY: the master is single-threaded; nothing reads the environment
    // concurrently.
    unsafe {
        std::env::remove_var(INHERIT_ENV);
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let entries: Vec<(RawFd, bool)> = if let Some(list) = own {
        // `FD`, or `FD:s` when the socket came from systemd (whose file it
        // is to remove).
        list.split(',')
            .map(|entry| {
                let (fd, is_from_systemd) = match entry.strip_suffix(":s") {
                    Some(fd) => (fd, true),
                    None => (entry, false),
                };
                let fd: RawFd = fd
                    .parse()
                    .with_context(|| format!("invalid {INHERIT_ENV} entry {entry:?}"))?;
                Ok((fd, is_from_systemd))
            })
            .collect::<Result<_>>()?
    } else if let Some(count) = systemd {
        let count: RawFd = count
            .trim()
            .parse()
            .with_context(|| format!("invalid LISTEN_FDS {count:?}"))?;
        if count < 1 {
            bail!("LISTEN_FDS is {count}: systemd handed over no socket");
        }
        (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + count)
            .map(|fd| (fd, true))
            .collect()
    } else {
        return Ok(None);
    };
    entries
        .into_iter()
        .map(|(fd, from_systemd)| adopt(fd, from_systemd))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A listening socket handed to this process as descriptor `fd`.
pub fn adopt(fd: RawFd, from_systemd: bool) -> Result<Listener> {
    // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open,
    // before anything takes ownership of it.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!("inherited descriptor {fd} is not open");
    }
    // SAFETY: the descriptor is open and was handed to this process to own
    // as a listening socket (by our own previous image or by systemd).
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let local = socket
        .local_addr()
        .with_context(|| format!("inherited descriptor {fd} is not a socket"))?;
    let addr = if let Some(sa) = local.as_socket() {
        BindAddr::Tcp(sa)
    } else if let Some(path) = local.as_pathname() {
        BindAddr::Unix(path.to_path_buf())
    } else {
        bail!("inherited descriptor {fd} is neither a TCP nor a named Unix socket");
    };
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    Ok(Listener {
        socket,
        addr,
        systemd: from_systemd,
    })
}

impl Listener {
    /// `umask` applies to a Unix socket's file (as Gunicorn's `--umask`).
    pub fn bind(addr: &BindAddr, backlog: i32, umask: u32) -> Result<Listener> {
        let socket = match addr {
            BindAddr::Tcp(sa) => {
                let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)
                    .with_context(|| format!("cannot create a socket for {sa}"))?;
                socket.set_reuse_address(true)?;
                socket
                    .bind(&SockAddr::from(*sa))
                    .with_context(|| format!("cannot bind {sa}"))?;
                socket
            }
            BindAddr::Unix(path) => {
                // A socket file left by an earlier run is replaced; any other
                // file is not ours to delete.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        bail!(
                            "cannot bind unix:{}: the path exists and is not a socket",
                            path.display()
                        );
                    }
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot remove the stale socket {}", path.display())
                    })?;
                }
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None).with_context(|| {
                    format!("cannot create a socket for unix:{}", path.display())
                })?;
                // SAFETY: umask(2) only swaps the process's mask; the master
                // is single-threaded, so no other file is created meanwhile.
                let old = unsafe { libc::umask(umask as libc::mode_t) };
                let bound = socket.bind(&SockAddr::unix(path)?);
                // SAFETY: as above, restoring the previous mask.
                unsafe { libc::umask(old) };
                bound.with_context(|| format!("cannot bind unix:{}", path.display()))?;
                socket
            }
        };
        if let BindAddr::Tcp(_) = addr {
            defer_accept(&socket);
        }
        socket
            .listen(backlog)
            .with_context(|| format!("cannot listen on {}", describe(addr)))?;
        socket.set_nonblocking(true)?;
        // A port of 0 is chosen by the kernel: say which.
        let addr = match addr {
            BindAddr::Tcp(_) => BindAddr::Tcp(
                socket
                    .local_addr()?
                    .as_socket()
                    .context("a TCP socket without an address")?,
            ),
            unix => unix.clone(),
        };
        Ok(Listener {
            socket,
            addr,
            systemd: false,
        })
    }

    /// Give a Unix socket's file to the workers' user and group.
    pub fn chown(&self, uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Result<()> {
        if let BindAddr::Unix(path) = &self.addr {
            nix::unistd::chown(path.as_path(), Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to the workers' user", path.display()))?;
        }
        Ok(())
    }

    /// This socket as an `RGUN_FDS` entry for a re-executed master.
    pub fn inherit_entry(&self) -> String {
        if self.systemd {
            format!("{}:s", self.fd())
        } else {
            self.fd().to_string()
        }
    }

    /// Keep the descriptor open across exec, for a re-executed master
    /// (`false`: close it on exec again, when that exec failed).
    pub fn keep_across_exec(&self, keep: bool) -> Result<()> {
        self.socket.set_cloexec(!keep)?;
        Ok(())
    }

    /// `--reuse-port`: SO_REUSEPORT, so that another process may bind the
    /// same TCP port (Gunicorn's `reuse_port`).
    pub fn reuse_port(&self) -> Result<()> {
        if let BindAddr::Tcp(sa) = &self.addr {
            self.socket
                .set_reuse_port(true)
                .with_context(|| format!("cannot set SO_REUSEPORT on {sa}"))?;
        }
        Ok(())
    }

    /// Handed over by systemd (socket activation).
    pub fn is_from_systemd(&self) -> bool {
        self.systemd
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// What a worker tells the application about this socket.
    pub fn info(&self) -> rgun_worker::ListenerInfo {
        match &self.addr {
            BindAddr::Tcp(sa) => rgun_worker::ListenerInfo {
                server_name: sa.ip().to_string().into_bytes().into_boxed_slice(),
                server_port: sa.port(),
            },
            BindAddr::Unix(_) => rgun_worker::ListenerInfo {
                server_name: b"localhost".to_vec().into_boxed_slice(),
                server_port: 0,
            },
        }
    }

    /// Remove a Unix socket's file when the master stops (unless systemd
    /// owns it).
    pub fn unlink(&self) {
        if let (BindAddr::Unix(path), false) = (&self.addr, self.systemd) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Seconds the kernel holds a connection that has sent nothing before it
/// hands it to accept() anyway.
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// TCP_DEFER_ACCEPT: a connection reaches accept() once its first bytes
/// have arrived, so the worker reads the request at once instead of taking
/// another trip through the poller. An optimisation: failure is ignored.
fn defer_accept(socket: &Socket) {
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: setsockopt with a valid int option value on our socket.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `http://127.0.0.1:8000`, `http://[::1]:8000` or `unix:/run/rgun.sock`, as
/// Gunicorn's "Listening at" line says it.
pub fn describe(addr: &BindAddr) -> String {
    match addr {
        BindAddr::Tcp(sa) => format!("http://{sa}"),
        BindAddr::Unix(path) => format!("unix:{}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_specs() {
        assert_eq!(
            BindAddr::parse("127.0.0.1:9000").unwrap(),
            BindAddr::Tcp("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            BindAddr::parse("[::1]:9000").unwrap(),
            BindAddr::Tcp("[::1]:9000".parse().unwrap())
        );
        assert_eq!(
            BindAddr::parse("127.0.0.1").unwrap(),
            BindAddr::Tcp("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(
            BindAddr::parse("unix:/tmp/x.sock").unwrap(),
            BindAddr::Unix("/tmp/x.sock".into())
        );
        assert!(BindAddr::parse("unix:").is_err());
        assert!(BindAddr::parse("127.0.0.1:notaport").is_err());
    }
}
