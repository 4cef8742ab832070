//! The command line as an operator uses it: the kinds of `--bind`, the pid
//! file, `--chdir`, where the logs go, and the default `:app` symbol. Each
//! checks an effect a user would see, not that a flag parses.

use crate::harness::{
    Conn, Listen, Server, TempDir, WAIT, app_lib, get, listening_tcp_addr, testapp,
    unique_socket_path, wait_for_file_line,
};
use std::net::SocketAddr;

#[test]
fn unix_socket_binding() {
    let path = unique_socket_path("unix");
    let mut server = Server::builder(testapp())
        .bind(format!("unix:{}", path.display()))
        .start();
    assert_eq!(server.listening(), &[Listen::Unix(path.clone())]);
    let line = server.wait_for_log("Listening at: unix:", WAIT);
    assert!(
        line.contains(&format!("Listening at: unix:{} (", path.display())),
        "{line:?}"
    );
    let mut conn = Conn::unix(&path);
    let response = conn.request(&get("/"));
    response.assert_status(200);
    assert_eq!(response.body, b"Hello, World!");
    // Keep-alive and bodies work the same over a Unix socket.
    let echo = conn
        .request(&crate::harness::request("POST", "/echo", &[], b"over unix"))
        .json();
    assert_eq!(echo["body"], "over unix");

    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    // As Gunicorn does, the socket file goes with the server.
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn stale_unix_socket_file_is_replaced() {
    let path = unique_socket_path("stale");
    // A socket file left by a server that died without cleaning up.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::builder(testapp())
        .bind(format!("unix:{}", path.display()))
        .start();
    Conn::unix(&path).request(&get("/")).assert_status(200);
    drop(server);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn several_binds_at_once() {
    let path = unique_socket_path("multi");
    let server = Server::builder(testapp())
        .bind("127.0.0.1:0")
        .bind(format!("unix:{}", path.display()))
        .bind("[::1]:0")
        .start();
    let mut tcp = 0;
    for listen in server.listening() {
        let response = match listen {
            Listen::Tcp(addr) => {
                tcp += 1;
                Conn::tcp(*addr).request(&get("/echo"))
            }
            Listen::Unix(p) => Conn::unix(p).request(&get("/echo")),
        };
        response.assert_status(200);
    }
    assert_eq!(tcp, 2, "{:?}", server.listening());
    drop(server);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn ipv6_binding() {
    let server = Server::builder(testapp()).bind("[::1]:0").start();
    let addr = server.addr();
    assert!(matches!(addr, SocketAddr::V6(_)), "{addr}");
    let line = server.wait_for_log("Listening at: ", WAIT);
    assert!(
        line.contains(&format!("http://[::1]:{}", addr.port())),
        "{line:?}"
    );
    let echo = Conn::tcp(addr).request(&get("/echo")).json();
    assert_eq!(echo["remote_addr"], "::1");
}

#[test]
fn pid_file_holds_the_master_pid_and_goes_on_exit() {
    let dir = TempDir::new("pidfile");
    let pidfile = dir.join("rgun.pid");
    let mut server = Server::testapp_with(["--pid".to_string(), pidfile.display().to_string()]);
    let master = server.pid().to_string();
    let line = wait_for_file_line(&pidfile, &master, WAIT);
    assert_eq!(line.trim(), master);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    assert!(!pidfile.exists(), "the pid file must be removed on exit");
}

#[test]
fn chdir_happens_before_the_app_is_loaded() {
    let lib = app_lib("testapp");
    let dir = lib.parent().unwrap();
    let server = Server::builder("./libtestapp.so:app")
        .args(["--chdir".to_string(), dir.display().to_string()])
        .start();
    server.get("/").assert_status(200);
}

#[test]
fn default_symbol_is_app() {
    let server = Server::builder(app_lib("hello").display().to_string()).start();
    let response = server.get("/");
    response.assert_status(200);
    assert_eq!(response.text(), "Hello, World!\n");
}

#[test]
fn error_log_to_a_file() {
    let dir = TempDir::new("errorlog");
    let logfile = dir.join("error.log");
    // Not `start`: the Listening line goes to the file, not stderr.
    let server = Server::builder(testapp())
        .args(["--error-logfile".to_string(), logfile.display().to_string()])
        .spawn();
    let line = wait_for_file_line(&logfile, "Listening at: http://", WAIT);
    let addr = listening_tcp_addr(&line);
    Conn::tcp(addr).request(&get("/")).assert_status(200);
    wait_for_file_line(&logfile, "Booting worker with pid: ", WAIT);
    assert!(
        !server.stderr.text().contains("Listening at:"),
        "the error log went to stderr as well"
    );
}

#[test]
fn access_log_to_stdout() {
    let server = Server::testapp_with(["--access-logfile", "-"]);
    let mut conn = server.connect();
    let response = conn.request(
        b"GET /bytes?n=7 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: access-test\r\nReferer: http://r/\r\n\r\n",
    );
    response.assert_status(200);
    // Apache combined format, Gunicorn's default:
    // 127.0.0.1 - - [21/Nov/2026:03:37:36 +0000] "GET /bytes?n=7 HTTP/1.1" 200 7 "http://r/" "access-test"
    let line = server.stdout.wait_for("/bytes?n=7", WAIT);
    assert!(line.starts_with("127.0.0.1 "), "{line:?}");
    assert!(
        line.contains("\"GET /bytes?n=7 HTTP/1.1\" 200 7 \"http://r/\" \"access-test\""),
        "{line:?}"
    );
    server.get("/nope").assert_status(404);
    let line = server.stdout.wait_for("/nope", WAIT);
    assert!(line.contains("\"GET /nope HTTP/1.1\" 404 "), "{line:?}");
}

#[test]
fn unknown_flag_is_refused() {
    let mut server = Server::builder(testapp()).arg("--no-such-flag").spawn();
    let status = server.wait_exit(WAIT);
    assert!(!status.success());
    assert!(server.stderr.text().contains("--no-such-flag"));
}

#[test]
fn log_level_warning_hides_info_lines() {
    // No "Listening at:" to wait for at this level: bind a Unix socket and
    // wait until it takes connections instead.
    let path = unique_socket_path("loglevel");
    let mut server = Server::builder(testapp())
        .bind(format!("unix:{}", path.display()))
        .args(["--log-level", "warning"])
        .spawn();
    let deadline = std::time::Instant::now() + WAIT;
    let mut conn = loop {
        if let Ok(stream) = std::os::unix::net::UnixStream::connect(&path) {
            drop(stream);
            break Conn::unix(&path);
        }
        assert!(std::time::Instant::now() < deadline, "never listened");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    conn.request(&get("/")).assert_status(200);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    let log = server.stderr.text();
    assert!(
        !log.contains("[INFO]"),
        "INFO lines at --log-level warning:\n{log}"
    );
    let _ = std::fs::remove_file(&path);
}

/// The effective uid of a process, from /proc.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn workers_run_as_the_user_given_and_the_master_stays() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test switches users: run the suite as root (CI does)");
    }
    let dir = TempDir::new("user");
    let socket = crate::harness::unique_socket_path("user");
    let access = dir.join("access.log");
    let server = Server::builder(testapp())
        .args(["--user", "nobody", "--group", "nogroup", "--access-logfile"])
        .arg(access.to_str().unwrap())
        .bind("127.0.0.1:0")
        .bind(format!("unix:{}", socket.display()))
        .start();
    let worker: u32 = server.get("/pid").text().parse().unwrap();
    assert_eq!(uid_of(worker), 65534, "the worker is not nobody");
    assert_eq!(
        uid_of(server.pid()),
        0,
        "the master dropped its own identity"
    );
    // The socket and the access log belong to the workers' user.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), 65534);
    let log = crate::harness::wait_for_file_line(&access, "GET /pid", WAIT);
    assert!(log.contains("\"GET /pid HTTP/1.1\" 200"), "{log}");
}
