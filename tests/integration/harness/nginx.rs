//! A real Nginx in front of rgun, as config/nginx-site.conf (one host, a
//! Unix socket) and config/nginx-balancer.conf (several hosts) deploy it:
//! the file as shipped, pointed at a test's socket or hosts and a free
//! port, run in the foreground and stopped on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::paths::manifest_dir;
use super::temp::TempDir;

/// A real nginx, stopped on drop (its error log is shown if the test
/// failed).
pub struct Nginx {
    child: Child,
    port: u16,
    prefix: PathBuf,
}

impl Nginx {
    /// Where nginx listens, for a client.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, not KILL: nginx's master then stops its workers too.
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        if thread::panicking() {
            let log =
                std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default();
            eprintln!("nginx error log:\n{log}");
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Start nginx with the site of config/nginx-site.conf, pointed at
/// `socket` and listening on a free port; its files go under `dir`.
pub fn start_nginx(dir: &TempDir, socket: &Path) -> Nginx {
    let site = std::fs::read_to_string(manifest_dir().join("config/nginx-site.conf"))
        .expect("config/nginx-site.conf");
    assert!(site.contains("unix:/run/rgun/rgun.sock"));
    let site = site.replace(
        "unix:/run/rgun/rgun.sock",
        &format!("unix:{}", socket.display()),
    );
    run_nginx(dir, site)
}

/// The hosts' addresses in config/nginx-balancer.conf, replaced in order.
const BALANCER_EXAMPLE_HOSTS: [&str; 3] = ["10.0.1.10:8000", "10.0.2.10:8000", "10.0.3.10:8000"];

/// Start nginx with config/nginx-balancer.conf as shipped, its three
/// example hosts replaced by `hosts`, listening on a free port.
pub fn start_balancer(dir: &TempDir, hosts: &[SocketAddr; 3]) -> Nginx {
    let mut site = std::fs::read_to_string(manifest_dir().join("config/nginx-balancer.conf"))
        .expect("config/nginx-balancer.conf");
    for (example, host) in BALANCER_EXAMPLE_HOSTS.iter().zip(hosts) {
        assert!(site.contains(&format!("server {example} ")), "{example}");
        site = site.replace(example, &host.to_string());
    }
    run_nginx(dir, site)
}

/// Run nginx in the foreground with `site` (a server block that says
/// `listen 80;`), moved to a free port on 127.0.0.1.
fn run_nginx(dir: &TempDir, site: String) -> Nginx {
    assert!(site.contains("listen 80;"));
    let port = free_port();
    let site = site.replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    std::fs::write(prefix.join("site.conf"), site).unwrap();
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
             include {p}/site.conf; }}\n",
            p = prefix.display()
        ),
    )
    .unwrap();
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|n| Command::new(n).arg("-v").output().is_ok())
        .expect("nginx is not installed (.ci/run installs nginx-light)");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx {
        child,
        port,
        prefix: prefix.clone(),
    };
    // Ready when it accepts: bounded retries of a connect, no sleep as a
    // guess.
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return nginx;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("nginx did not start listening on {port}");
}
