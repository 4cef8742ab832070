//! Replacing the server without stopping it, as an operator does: the
//! `USR2` binary upgrade with `WINCH` and `QUIT` under load (nothing lost,
//! idle keep-alive connections carried over to the new master's workers),
//! an upgrade that fails, `WINCH` from a terminal ignored, and the upgrade
//! under systemd's notification protocol; and, for development,
//! `--reload` picking up a rebuilt library or an edited Python module. Each
//! step waits on what the server says or does (a log line, a pid file, a
//! process gone), never on the clock.

use std::collections::HashSet;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, setsockopt, sockopt::PassCred,
};

use crate::harness::clients::{nothing_after_close, pid_answer};
use crate::harness::{
    Conn, Server, TempDir, WAIT, boots, compile_c_app, fresh_pid, get, log_line_pid, manifest_dir,
    pid_of, rgun_bin, testapp, unique_socket_path, wait_until,
};

/// How often the polling waits below look again (a process gone, a file
/// written, a counter reached). They poll a condition; none stands in for
/// one.
const POLL: Duration = Duration::from_millis(5);

/// Long enough that no connection is closed for being idle while a test
/// waits on the upgrade (the idle one carried across it, the clients'
/// between two requests); short drains otherwise.
const SERVE_ARGS: [&str; 6] = ["-w", "2", "--keep-alive", "60", "--graceful-timeout", "10"];

// ---------------------------------------------------------------------------
// Processes, pid files, log lines
// ---------------------------------------------------------------------------

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`...), if the process
/// is there.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether a process has exited. A zombie has: the new master of an
/// upgrade outlives the old one, and once it exits it waits for init, not
/// for this test, to reap it.
pub(crate) fn process_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    matches!(proc_stat(pid), Some(('Z', _)) | None)
}

fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process this test started (through rgun).
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

/// Wait until the retired worker `pid` says it exits (Gunicorn's line, the
/// worker's own), then until it is gone (reaped, or a zombie of a master
/// that is not this test's child).
#[track_caller]
fn wait_retired(server: &Server, pid: u32) {
    let line = server.wait_for_log(&format!("Worker exiting (pid: {pid})"), WAIT);
    assert_eq!(pid_of_line(&line), pid, "{line}");
    wait_until(&format!("worker {pid} is gone"), || process_gone(pid));
}

/// The pid a pid file names, if it holds one whole.
fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[track_caller]
fn wait_for_pid_file(path: &Path, pid: u32) {
    wait_until(&format!("{} names {pid}", path.display()), || {
        pid_in(path) == Some(pid)
    });
}

/// `FILE.oldbin` beside `FILE`.
fn oldbin(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".oldbin");
    PathBuf::from(name)
}

/// The pid that wrote a log line: `[time] [PID] [LEVEL] message`.
fn pid_of_line(line: &str) -> u32 {
    log_line_pid(line).unwrap_or_else(|| panic!("no pid in the log line {line:?}"))
}

/// After `USR2`: the new master's pid, from its first line; its workers,
/// once booted (the lines after the `old` ones). Checks that they are its
/// children.
pub(crate) fn wait_for_new_master(
    server: &Server,
    old_master: u32,
    old: &HashSet<u32>,
) -> (u32, Vec<u32>) {
    let line = server.wait_for_log(&format!("Upgrading the master of pid {old_master}: "), WAIT);
    let new_master = pid_of_line(&line);
    assert_ne!(new_master, old_master, "{line}");
    let booted = server.wait_for_workers(old.len() + 2);
    let new: Vec<u32> = booted
        .iter()
        .copied()
        .filter(|pid| !old.contains(pid))
        .collect();
    assert_eq!(new.len(), 2, "two new workers: {booted:?}");
    for pid in &new {
        let ppid = proc_stat(*pid).map(|(_, ppid)| ppid);
        assert_eq!(
            ppid,
            Some(new_master),
            "worker {pid} is not a child of the new master"
        );
    }
    (new_master, new)
}

/// TERM the new master of an upgrade (not this test's child) and wait for
/// it, its workers, and so every writer of the server's pipes, to go.
pub(crate) fn stop_new_master(server: &Server, new_master: u32, workers: &[u32]) {
    send_signal(new_master, libc::SIGTERM);
    wait_until(&format!("the new master {new_master} is gone"), || {
        process_gone(new_master)
    });
    server.stderr.wait_closed(WAIT);
    for pid in workers {
        assert!(process_gone(*pid), "worker {pid} outlived its master");
    }
}

// ---------------------------------------------------------------------------
// Clients that keep sending through the upgrade
// ---------------------------------------------------------------------------

/// A client opens a new connection after this many requests, so that the
/// load reaches whichever workers accept: the old master's and the new one's.
const REQUESTS_PER_CONNECTION: usize = 20;
/// No client sends more than this, whatever happens to the test.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;

#[derive(Default)]
pub(crate) struct Seen {
    /// Every pid that answered.
    pub(crate) all: HashSet<u32>,
    /// Those that answered a request sent after the fence was raised.
    after_fence: HashSet<u32>,
}

struct LoadState {
    stop: AtomicBool,
    fence: AtomicBool,
    answered: AtomicUsize,
    seen: Mutex<Seen>,
}

/// Keep-alive clients sending `GET /pid` one after another until stopped,
/// noting which pid answered. Any request not answered whole, or answered
/// other than 200, ends its client with an error that fails the test.
pub(crate) struct Load {
    state: Arc<LoadState>,
    threads: Vec<JoinHandle<Result<usize, String>>>,
}

fn keep_sending(addr: SocketAddr, state: &LoadState) -> Result<usize, String> {
    let mut sent = 0usize;
    let mut conn: Option<(Conn, usize)> = None;
    while !state.stop.load(Ordering::SeqCst) && sent < MAX_REQUESTS_PER_CLIENT {
        if conn.is_none() {
            let c = Conn::try_tcp(addr)
                .map_err(|e| format!("connecting after {sent} requests failed: {e}"))?;
            conn = Some((c, 0));
        }
        let (c, on_conn) = conn.as_mut().unwrap();
        let after_fence = state.fence.load(Ordering::SeqCst);
        sent += 1;
        let where_ = format!("request {sent} (number {} on its connection)", *on_conn + 1);
        let response = c
            .try_send(&get("/pid"))
            .and_then(|()| c.try_read_response(false))
            .map_err(|e| format!("{where_}: no complete answer: {e}"))?;
        let pid = pid_answer(&response, &where_)?;
        {
            let mut seen = state.seen.lock().unwrap();
            seen.all.insert(pid);
            if after_fence {
                seen.after_fence.insert(pid);
            }
        }
        state.answered.fetch_add(1, Ordering::SeqCst);
        *on_conn += 1;
        if response.connection_has("close") {
            nothing_after_close(c, &where_)?;
            conn = None;
        } else if *on_conn >= REQUESTS_PER_CONNECTION {
            conn = None;
        }
    }
    Ok(sent)
}

impl Load {
    pub(crate) fn start(addr: SocketAddr, clients: usize) -> Load {
        let state = Arc::new(LoadState {
            stop: AtomicBool::new(false),
            fence: AtomicBool::new(false),
            answered: AtomicUsize::new(0),
            seen: Mutex::new(Seen::default()),
        });
        let threads = (0..clients)
            .map(|_| {
                let state = Arc::clone(&state);
                thread::spawn(move || keep_sending(addr, &state))
            })
            .collect();
        Load { state, threads }
    }

    fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// From now on, note the pids that answer separately.
    fn raise_fence(&self) {
        self.state.fence.store(true, Ordering::SeqCst);
    }

    /// Poll `done` on what the clients saw until it holds, failing the test
    /// with the clients' errors if one stopped, or after `WAIT`.
    #[track_caller]
    pub(crate) fn wait_for(&mut self, what: &str, mut done: impl FnMut(usize, &Seen) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if done(self.answered(), &self.state.seen.lock().unwrap()) {
                return;
            }
            if self.threads.iter().any(JoinHandle::is_finished) {
                self.finish();
                panic!("a client stopped early without an error, waiting for {what}");
            }
            assert!(
                Instant::now() < deadline,
                "the clients never saw {what} ({} answers)",
                self.answered()
            );
            thread::sleep(POLL);
        }
    }

    #[track_caller]
    pub(crate) fn wait_for_more(&mut self, n: usize) {
        let target = self.answered() + n;
        self.wait_for(&format!("{target} answers"), |answered, _| {
            answered >= target
        });
    }

    /// Stop the clients; fail with every client's error, if any. Returns
    /// the number of requests sent (each answered whole).
    #[track_caller]
    pub(crate) fn finish(&mut self) -> usize {
        self.state.stop.store(true, Ordering::SeqCst);
        let mut sent = 0;
        let mut errors = Vec::new();
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a client thread panicked".to_string()),
            }
        }
        assert!(
            errors.is_empty(),
            "requests were lost:\n{}",
            errors.join("\n")
        );
        sent
    }

    fn seen(&self) -> (HashSet<u32>, HashSet<u32>) {
        let seen = self.state.seen.lock().unwrap();
        (seen.all.clone(), seen.after_fence.clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// USR2, WINCH, QUIT
// ---------------------------------------------------------------------------

#[test]
fn usr2_winch_quit_replace_the_master_under_load_losing_nothing() {
    let dir = TempDir::new("usr2");
    let pidfile = dir.join("rgun.pid");
    // No controlling terminal, or the master would ignore WINCH.
    let mut server = Server::builder(testapp())
        .new_session()
        .args(SERVE_ARGS)
        // What the workers hand over, should a test fail.
        .args(["--log-level", "debug"])
        .arg("--pid")
        .arg(pidfile.to_str().unwrap())
        .wait_for_workers(2)
        .start();
    let old_master = server.pid();
    wait_for_pid_file(&pidfile, old_master);
    let old: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();

    // A keep-alive connection that an old worker holds, idle, all along.
    let mut idle = server.connect();
    let first = pid_of(&mut idle);
    assert!(old.contains(&first), "{first} not among {old:?}");

    let mut load = Load::start(server.addr(), 3);
    load.wait_for_more(300);

    server.signal(libc::SIGUSR2);
    let (new_master, new_list) = wait_for_new_master(&server, old_master, &old);
    let new: HashSet<u32> = new_list.iter().copied().collect();
    // The old master's pid file took the .oldbin name before the new master
    // started; the new master wrote its own.
    assert_eq!(pid_in(&oldbin(&pidfile)), Some(old_master));
    wait_for_pid_file(&pidfile, new_master);
    // Both masters serve: the load reaches the new workers too.
    load.wait_for("an answer from a new worker", |_, seen| {
        !seen.all.is_disjoint(&new)
    });
    assert!(!process_gone(old_master));

    server.signal(libc::SIGWINCH);
    let line = server.wait_for_log("Handling signal: winch", WAIT);
    assert_eq!(pid_of_line(&line), old_master, "{line}");
    for pid in &old {
        wait_retired(&server, *pid);
    }
    // Only the new workers are left: whatever is sent from now on is
    // theirs to answer.
    load.raise_fence();
    load.wait_for_more(300);
    load.wait_for("answers to requests sent after WINCH", |_, seen| {
        !seen.after_fence.is_empty()
    });

    // The connection idle on an old worker at WINCH was handed over, not
    // closed: the same connection, answered by a new worker.
    let response = idle.request(&get("/pid"));
    response.assert_status(200);
    assert!(!response.connection_has("close"), "{response:?}");
    let after: u32 = response.text().parse().unwrap();
    assert!(
        new.contains(&after),
        "the idle connection was answered by {after}, not one of the new workers {new:?}"
    );

    server.signal(libc::SIGQUIT);
    let status = server.reap(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    // The old master took its .oldbin file with it; the new master's stays.
    assert!(!oldbin(&pidfile).exists(), "the .oldbin pid file is left");
    assert_eq!(pid_in(&pidfile), Some(new_master));
    assert!(
        !process_gone(new_master),
        "the new master went with the old"
    );

    load.wait_for_more(300);
    let sent = load.finish();
    let (all, after_fence) = load.seen();
    assert!(
        after_fence.is_subset(&new),
        "requests sent after the old workers were gone were answered by {after_fence:?}, \
         not only by the new workers {new:?}"
    );
    assert!(!all.is_disjoint(&old) && !all.is_disjoint(&new), "{all:?}");
    eprintln!("{sent} requests answered across the upgrade by {all:?}");
    // The same connection still, after the old master left.
    assert!(new.contains(&pid_of(&mut idle)));
    drop(idle);

    stop_new_master(&server, new_master, &new_list);
    assert!(!pidfile.exists(), "the new master left its pid file");
    let log = server.stderr.text();
    assert!(!log.contains("[ERROR]"), "{log}");
    assert_eq!(boots(&server), 4, "{log}");
}

/// The old master's `QUIT` must leave the new master's Unix socket where
/// clients find it: the socket file is shared, not the old master's alone.
#[test]
fn the_new_master_keeps_serving_a_unix_socket_after_quit() {
    let path = unique_socket_path("usr2-unix");
    let mut server = Server::builder(testapp())
        .new_session()
        .bind("127.0.0.1:0")
        .bind(format!("unix:{}", path.display()))
        .args(SERVE_ARGS)
        .wait_for_workers(2)
        .start();
    let old_master = server.pid();
    let old: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    pid_of(&mut Conn::unix(&path));

    server.signal(libc::SIGUSR2);
    let (new_master, new_list) = wait_for_new_master(&server, old_master, &old);
    server.signal(libc::SIGWINCH);
    for pid in &old {
        wait_retired(&server, *pid);
    }
    server.signal(libc::SIGQUIT);
    let status = server.reap(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));

    let tcp = fresh_pid(&server);
    assert!(new_list.contains(&tcp), "{tcp} not among {new_list:?}");
    assert!(
        path.exists(),
        "the old master removed the socket file {} the new master listens on",
        path.display()
    );
    let unix = pid_of(&mut Conn::unix(&path));
    assert!(new_list.contains(&unix), "{unix} not among {new_list:?}");

    stop_new_master(&server, new_master, &new_list);
    // Now the last master is gone, and the file with it.
    assert!(!path.exists(), "{} is left", path.display());
}

#[test]
fn a_failed_upgrade_leaves_the_old_master_serving() {
    let dir = TempDir::new("usr2-failed");
    let pidfile = dir.join("rgun.pid");
    // A copy of the binary, removed once running: USR2 then has nothing to
    // execute. `cp` writes it, so that no descriptor open for writing leaks
    // into a process another test forks meanwhile (ETXTBSY on exec).
    let copy = dir.join("rgun");
    let status = Command::new("cp")
        .arg(rgun_bin())
        .arg(&copy)
        .status()
        .expect("run cp");
    assert!(status.success());
    let mut server = Server::builder(testapp())
        .program(&copy)
        .args(SERVE_ARGS)
        .arg("--pid")
        .arg(pidfile.to_str().unwrap())
        .wait_for_workers(2)
        .start();
    let master = server.pid();
    wait_for_pid_file(&pidfile, master);
    let old: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    std::fs::remove_file(&copy).unwrap();

    server.signal(libc::SIGUSR2);
    let line = server.wait_for_log("Handling signal: usr2", WAIT);
    assert!(line.contains(&copy.display().to_string()), "{line}");
    let line = server.wait_for_log("The upgrade failed", WAIT);
    assert_eq!(pid_of_line(&line), master, "{line}");
    assert!(line.contains("this master goes on serving"), "{line}");
    // The pid file takes its name back.
    wait_until("the pid file has its name back", || {
        pid_in(&pidfile) == Some(master) && !oldbin(&pidfile).exists()
    });
    for _ in 0..10 {
        let pid = fresh_pid(&server);
        assert!(old.contains(&pid), "answered by {pid}, not one of {old:?}");
    }
    let log = server.stderr.text();
    assert!(!log.contains("Upgrading the master"), "{log}");
    assert_eq!(boots(&server), 2, "{log}");

    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    assert!(!pidfile.exists() && !oldbin(&pidfile).exists());
}

// ---------------------------------------------------------------------------
// WINCH from a terminal
// ---------------------------------------------------------------------------

/// A pseudo-terminal: the master side, held by the test, and the path of
/// the slave side.
struct Pty {
    master: OwnedFd,
    slave: PathBuf,
}

impl Pty {
    fn open() -> Pty {
        // SAFETY: posix_openpt takes flags only; the descriptor is ours.
        let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor, owned from here on.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut name = [0 as libc::c_char; 256];
        // SAFETY: our pty master descriptor and a buffer of the size given.
        unsafe {
            assert_eq!(libc::grantpt(fd), 0, "grantpt");
            assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        }
        // SAFETY: ptsname_r wrote a NUL-terminated string.
        let slave = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        Pty {
            master,
            slave: PathBuf::from(slave.to_str().unwrap()),
        }
    }

    /// Resize the terminal: the kernel sends SIGWINCH to its foreground
    /// process group, as when a terminal window is resized.
    fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer given.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }
}

#[test]
fn winch_is_ignored_by_a_master_with_a_controlling_terminal() {
    // Declared first, dropped last: the terminal outlives the server (its
    // hang-up would send the master SIGHUP).
    let pty = Pty::open();
    let mut server = Server::builder(testapp())
        .controlling_terminal(&pty.slave)
        .args(SERVE_ARGS)
        .args(["--log-level", "debug"])
        .wait_for_workers(2)
        .start();
    let workers: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();

    // The terminal is resized: SIGWINCH to the master and its workers.
    pty.resize(40, 100);
    server.stderr.wait_for_count("SIGWINCH ignored", 1, WAIT);
    // And sent to the master by hand.
    server.signal(libc::SIGWINCH);
    let lines = server.stderr.wait_for_count("SIGWINCH ignored", 2, WAIT);
    for line in &lines {
        assert_eq!(pid_of_line(line), server.pid(), "{line}");
    }
    for _ in 0..10 {
        let pid = fresh_pid(&server);
        assert!(workers.contains(&pid), "answered by {pid}, not {workers:?}");
    }
    let log = server.stderr.text();
    assert!(!log.contains("Handling signal: winch"), "{log}");
    assert!(!log.contains("Worker exiting"), "{log}");
    assert_eq!(boots(&server), 2, "{log}");
    for pid in &workers {
        assert!(!process_gone(*pid), "worker {pid} is gone");
    }

    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
}

// ---------------------------------------------------------------------------
// Under systemd
// ---------------------------------------------------------------------------

/// systemd's end of NOTIFY_SOCKET, with the sender's credentials on each
/// datagram (SO_PASSCRED), so that a test knows which master spoke.
struct Systemd {
    socket: UnixDatagram,
}

impl Systemd {
    fn bind(path: &Path) -> Systemd {
        let socket = UnixDatagram::bind(path).unwrap();
        setsockopt(&socket, PassCred, &true).expect("SO_PASSCRED");
        socket.set_read_timeout(Some(WAIT)).unwrap();
        Systemd { socket }
    }

    /// The next datagram and its sender's pid; `None` when nothing is
    /// queued and `wait` is false.
    fn recv(&self, wait: bool) -> Option<(String, u32)> {
        let mut buf = [0u8; 1024];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let flags = if wait {
            MsgFlags::empty()
        } else {
            MsgFlags::MSG_DONTWAIT
        };
        let msg =
            match recvmsg::<UnixAddr>(self.socket.as_raw_fd(), &mut iov, Some(&mut space), flags) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EAGAIN) if !wait => return None,
                Err(e) => panic!("no notification from rgun: {e}"),
            };
        let sender = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid() as u32),
                _ => None,
            })
            .expect("the sender's credentials");
        let n = msg.bytes;
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), sender))
    }

    fn next(&self) -> (String, u32) {
        self.recv(true).unwrap()
    }
}

#[test]
fn under_systemd_the_new_master_becomes_the_main_process() {
    let dir = TempDir::new("usr2-notify");
    let path = dir.join("notify.sock");
    let systemd = Systemd::bind(&path);
    let mut server = Server::builder(testapp())
        .new_session()
        .args(SERVE_ARGS)
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .wait_for_workers(2)
        .start();
    let old_master = server.pid();
    let old: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    let (ready, sender) = systemd.next();
    assert_eq!(sender, old_master, "{ready:?}");
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l == format!("MAINPID={old_master}")),
        "{ready:?}"
    );

    server.signal(libc::SIGUSR2);
    let (new_master, new_list) = wait_for_new_master(&server, old_master, &old);
    // The first word after USR2 is the new master's: it is the main process
    // now, and ready.
    let (said, sender) = systemd.next();
    assert_eq!(sender, new_master, "{said:?}");
    let lines: Vec<&str> = said.lines().collect();
    assert!(lines.contains(&"READY=1"), "{said:?}");
    assert!(
        lines.contains(&format!("MAINPID={new_master}").as_str()),
        "{said:?}"
    );

    // The old master stops its workers and leaves, saying nothing: a
    // STOPPING=1 from it would stop the service under the new master.
    server.signal(libc::SIGWINCH);
    for pid in &old {
        wait_retired(&server, *pid);
    }
    server.signal(libc::SIGQUIT);
    let status = server.reap(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    // Whatever it sent is queued by now: it has exited.
    if let Some((said, sender)) = systemd.recv(false) {
        panic!("after the upgrade pid {sender} told systemd {said:?}");
    }
    let pid = fresh_pid(&server);
    assert!(new_list.contains(&pid), "{pid} not among {new_list:?}");

    // The new master speaks for the service to the end.
    send_signal(new_master, libc::SIGTERM);
    let (said, sender) = systemd.next();
    assert_eq!(sender, new_master, "{said:?}");
    assert!(said.starts_with("STOPPING=1"), "{said:?}");
    stop_new_master(&server, new_master, &new_list);
    if let Some((said, sender)) = systemd.recv(false) {
        panic!("after STOPPING=1 pid {sender} told systemd {said:?}");
    }
}

// ---------------------------------------------------------------------------
// --reload
// ---------------------------------------------------------------------------

/// Wait for the reload `--reload` asks for: the line, `fresh` more workers
/// booted, and the `old` ones gone. Returns the new workers.
fn wait_for_reload(server: &Server, old: &[u32]) -> Vec<u32> {
    server.wait_for_log("Reloading: the application changed (--reload)", WAIT);
    let booted = server.wait_for_workers(old.len() * 2);
    for pid in old {
        wait_retired(server, *pid);
    }
    booted[old.len()..].to_vec()
}

#[test]
fn reload_picks_up_a_rebuilt_library() {
    let dir = TempDir::new("reload-c");
    let live = dir.join("libapp.so");
    let hello = manifest_dir().join("examples/c/hello.c");
    compile_c_app(&hello, &live);
    // The same application with another greeting.
    let source = std::fs::read_to_string(&hello).unwrap();
    assert!(source.contains("\"Hello from C\\n\""));
    let changed = dir.join("hello2.c");
    std::fs::write(
        &changed,
        source.replace("\"Hello from C\\n\"", "\"Hello again, rebuilt\\n\""),
    )
    .unwrap();

    let server = Server::builder(format!("{}:app", live.display()))
        .args(["--reload", "-w", "2"])
        .wait_for_workers(2)
        .start();
    let old = server.wait_for_workers(2);
    assert_eq!(server.get("/").text(), "Hello from C\n");

    // A build writes elsewhere, then renames over the library.
    let staged = dir.join("libapp.so.new");
    compile_c_app(&changed, &staged);
    std::fs::rename(&staged, &live).unwrap();
    let new = wait_for_reload(&server, &old);

    for _ in 0..4 {
        let mut conn = server.connect();
        let response = conn.request(&get("/"));
        response.assert_status(200);
        assert_eq!(response.text(), "Hello again, rebuilt\n");
    }
    let log = server.stderr.text();
    assert_eq!(log.matches("Reloading: ").count(), 1, "{log}");
    assert_eq!(new.len(), 2, "{log}");
}

const WSGI_MODULE: &str = r#"
def app(environ, start_response):
    body = b"BODY"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn reload_picks_up_an_edited_python_module() {
    let dir = TempDir::new("reload-py");
    let module = dir.join("reloadme.py");
    std::fs::write(&module, WSGI_MODULE.replace("BODY", "first version")).unwrap();
    let server = Server::builder("reloadme:app")
        .arg("--chdir")
        .arg(dir.join("").to_str().unwrap())
        .arg("--reload")
        // A stale bytecode cache must not stand in for the new source.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .wait_for_workers(1)
        .start();
    let old = server.wait_for_workers(1);
    let response = server.get("/");
    response.assert_status(200);
    assert_eq!(response.text(), "first version");

    // An editor's save: a new file renamed over the old one.
    let staged = dir.join("reloadme.py.new");
    std::fs::write(&staged, WSGI_MODULE.replace("BODY", "the second version")).unwrap();
    std::fs::rename(&staged, &module).unwrap();
    wait_for_reload(&server, &old);

    let response = server.get("/");
    response.assert_status(200);
    assert_eq!(response.text(), "the second version");
}

#[test]
fn reload_with_preload_is_refused() {
    let mut server = Server::builder(testapp())
        .args(["--reload", "--preload"])
        .spawn();
    let status = server.wait_exit(WAIT);
    assert!(!status.success(), "{}", Server::describe(status));
    let log = server.stderr.text();
    assert!(
        log.contains("--reload") && log.contains("--preload"),
        "the refusal names both flags:\n{log}"
    );
    assert!(!log.contains("Listening at"), "{log}");
}
