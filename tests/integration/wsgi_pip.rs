//! The pip-installed rgun (issue 14): the `rgun` command that `pip install`
//! puts into a virtualenv, where the master and its workers are processes
//! of that virtualenv's own Python. `.ci/pip-route` builds the wheel,
//! installs it into virtualenvs of two Pythons, and runs these tests (they
//! are `#[ignore]`d otherwise) with `RGUN_TEST_VENV` naming one of them and
//! `RGUN_TEST_BIN` its `rgun`; the rest of the WSGI suites run against that
//! same command then. A small Django project (`tests/python/djangosite`)
//! is served as a user would: admin login, a CSRF-protected form, an upload
//! and a FileResponse.
//!
//! One test here runs in every `cargo test`: the embedded bridge of the
//! cargo route refuses a virtualenv of another Python version.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::harness::{App, Conn, Prng, Response, Server, TempDir, WAIT, request};
use crate::wsgi_harness::python_dir;

/// The virtualenv rgun is installed in (`RGUN_TEST_VENV`).
fn venv() -> PathBuf {
    let venv = std::env::var_os("RGUN_TEST_VENV")
        .map(PathBuf::from)
        .expect("RGUN_TEST_VENV names the virtualenv rgun is installed in (.ci/pip-route)");
    assert!(
        venv.join("bin/rgun").is_file(),
        "no rgun command in {}: `pip install` rgun there first (.ci/pip-route)",
        venv.display()
    );
    venv
}

fn python_of(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// `major.minor` of an interpreter.
fn version_of(python: &Path) -> String {
    let out = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The libpython files a bare `python` of this interpreter maps: none for
/// an interpreter built without a shared libpython (Debian's python3).
fn libpython_of_plain_python(python: &Path) -> Vec<String> {
    let out = Command::new(python)
        .args([
            "-c",
            "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') \
             if 'libpython' in l.rsplit('/', 1)[-1]})))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn hosted_probe(args: &[&str]) -> Server {
    Server::builder("hosted_probe")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .args(args.iter().copied())
        .start()
}

#[test]
#[ignore = "needs the pip-installed rgun: run .ci/pip-route"]
fn the_workers_are_the_virtualenvs_python_and_map_no_libpython_of_their_own() {
    let venv = venv();
    let python = python_of(&venv);
    let server = hosted_probe(&["--workers", "2"]);
    let info = server.get("/").json();
    assert_eq!(
        info["server_software"],
        format!("rgun/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(info["prefix"], venv.to_str().unwrap());
    assert_eq!(info["version"], version_of(&python));
    // rgun adds no libpython to what the interpreter itself maps: with
    // Debian's python3 (libpython built into the executable) that is none,
    // which is the case "a Python built without a shared libpython".
    let own = libpython_of_plain_python(&python);
    let mapped: Vec<String> = info["libpython"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        mapped, own,
        "the worker maps {mapped:?}, python itself {own:?}"
    );
    eprintln!(
        "{} maps {}",
        python.display(),
        if own.is_empty() {
            "no libpython (built without a shared one)".to_string()
        } else {
            own.join(", ")
        }
    );
    // .ci/pip-route says when the interpreter is one without a shared
    // libpython, so that a change of machine cannot quietly turn this into
    // a check of an ordinary Python.
    if std::env::var("RGUN_TEST_NO_SHARED_LIBPYTHON").as_deref() == Ok("1") {
        assert!(own.is_empty(), "{} maps {own:?}", python.display());
    }
}

#[test]
#[ignore = "needs the pip-installed rgun: run .ci/pip-route"]
fn preload_imports_once_in_the_master_and_freezes_the_heap_before_fork() {
    venv();
    let server = hosted_probe(&["--workers", "2", "--preload"]);
    let workers = server.wait_for_workers(2);
    let info = server.get("/").json();
    assert_eq!(info["imported_in"], server.pid());
    assert!(workers.contains(&(info["pid"].as_u64().unwrap() as u32)));
    // Everything the master made, the app included, is out of the
    // collector's reach in the workers (gc.freeze before fork).
    let frozen = info["frozen"].as_u64().unwrap();
    assert!(frozen > 1000, "only {frozen} objects frozen");
}

#[test]
#[ignore = "needs the pip-installed rgun: run .ci/pip-route"]
fn hup_with_preload_re_executes_the_python_master_and_loads_the_app_afresh() {
    venv();
    let server = hosted_probe(&["--preload"]);
    server.wait_for_workers(1);
    let before = server.get("/").json();
    server.signal(libc::SIGHUP);
    server.wait_for_workers(2);
    let after = server.get("/").json();
    // The same master (exec keeps the pid), a new import.
    assert_eq!(after["imported_in"], server.pid());
    assert_ne!(after["import_token"], before["import_token"]);
    assert_ne!(after["pid"], before["pid"]);
}

/// `python -m rgun`, started by hand (the harness starts `rgun`): the
/// address it listens on, from its log.
struct PythonDashM {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for PythonDashM {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn python_dash_m(python: &Path, args: &[&str]) -> PythonDashM {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(python)
        .args(["-m", "rgun"])
        .args(args)
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("WEB_CONCURRENCY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run {} -m rgun: {e}", python.display()));
    let (lines, log) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // The guard first: a failure below kills the process group.
    let mut server = PythonDashM {
        child,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split("Listening at: http://").nth(1) {
                    server.addr = rest.split(' ').next().unwrap().parse().unwrap();
                    return server;
                }
                seen.push(line);
            }
            Err(_) => panic!(
                "python -m rgun did not listen; its log:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
#[ignore = "needs the pip-installed rgun: run .ci/pip-route"]
fn python_dash_m_rgun_serves_too() {
    let venv = venv();
    let server = python_dash_m(
        &python_of(&venv),
        &["hosted_probe", "--chdir", python_dir().to_str().unwrap()],
    );
    let info = Conn::tcp(server.addr)
        .request(&request("GET", "/", &[], b""))
        .json();
    assert_eq!(info["prefix"], venv.to_str().unwrap());
    assert_eq!(
        info["server_software"],
        format!("rgun/{}", env!("CARGO_PKG_VERSION"))
    );
}

/// `RGUN_TEST_OTHER_PYTHON`: an interpreter of another version than the
/// virtualenv's, so that a build for one is tried with the other.
#[test]
#[ignore = "needs the pip-installed rgun: run .ci/pip-route"]
fn a_build_for_another_python_version_says_so_in_one_line() {
    let venv = venv();
    let other = PathBuf::from(
        std::env::var_os("RGUN_TEST_OTHER_PYTHON")
            .expect("RGUN_TEST_OTHER_PYTHON names a Python of another version (.ci/pip-route)"),
    );
    let (ours, theirs) = (version_of(&python_of(&venv)), version_of(&other));
    assert_ne!(ours, theirs, "RGUN_TEST_OTHER_PYTHON is the same version");
    let site = venv.join(format!("lib/python{ours}/site-packages"));
    let out = Command::new(&other)
        .args(["-m", "rgun", "hosted_probe"])
        .env("PYTHONPATH", &site)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    let line = lines[0];
    for expected in [
        format!("built for CPython {ours}"),
        format!("not for Python {theirs} ({}", other.display()),
        "pip install".to_string(),
    ] {
        assert!(line.contains(&expected), "{expected:?} not in {line:?}");
    }
}

/// A migrated database with an admin user, and a file to download: what
/// the Django site is started with.
struct DjangoSite {
    dir: TempDir,
    payload: Vec<u8>,
}

const ADMIN_PASSWORD: &str = "rgun-admin-password";

impl DjangoSite {
    fn new(python: &Path) -> DjangoSite {
        let dir = TempDir::new("django");
        let payload = Prng::new(14).bytes(300 * 1024 + 7);
        std::fs::write(dir.join("payload.bin"), &payload).unwrap();
        let site = DjangoSite { dir, payload };
        for args in [
            &["migrate", "--verbosity", "0"][..],
            &[
                "createsuperuser",
                "--noinput",
                "--username",
                "admin",
                "--email",
                "admin@example.com",
            ][..],
        ] {
            let out = Command::new(python)
                .arg(python_dir().join("djangosite/manage.py"))
                .args(args)
                .envs(site.env())
                .env("DJANGO_SUPERUSER_PASSWORD", ADMIN_PASSWORD)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "manage.py {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        site
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "RGUN_DJANGO_DB".into(),
                self.dir.join("db.sqlite3").display().to_string(),
            ),
            (
                "RGUN_DJANGO_FILE".into(),
                self.dir.join("payload.bin").display().to_string(),
            ),
        ]
    }

    fn serve(&self, workers: usize) -> Server {
        let mut builder = Server::builder("djangosite.wsgi")
            .arg("--chdir")
            .arg(python_dir().join("djangosite").to_str().unwrap())
            .args(["--workers", &workers.to_string()]);
        for (k, v) in self.env() {
            builder = builder.env(&k, &v);
        }
        builder.wait_for_workers(workers).start()
    }
}

/// A browser's cookie jar, enough for Django's csrftoken and sessionid.
#[derive(Default)]
struct Cookies(BTreeMap<String, String>);

impl Cookies {
    fn take(&mut self, r: &Response) {
        for set in r.header_all("set-cookie") {
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.0.insert(name.trim().into(), value.trim().into());
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&self, name: &str) -> &str {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no {name} cookie in {:?}", self.0))
    }
}

/// The hidden csrfmiddlewaretoken of the first form on a page.
fn form_token(page: &str) -> String {
    let at = page
        .find("name=\"csrfmiddlewaretoken\"")
        .unwrap_or_else(|| panic!("no CSRF token in {page}"));
    let value = &page[at..];
    let start = value.find("value=\"").unwrap() + "value=\"".len();
    value[start..start + value[start..].find('"').unwrap()].to_string()
}

fn urlencode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
#[ignore = "needs the pip-installed rgun: run .ci/pip-route"]
fn a_django_site_admin_login_csrf_form_upload_and_file_response() {
    let venv = venv();
    let site = DjangoSite::new(&python_of(&venv));
    let server = site.serve(2);
    let mut jar = Cookies::default();
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");

    // A CSRF-protected form: refused without the token, answered with it.
    let page = server.get("/form/");
    page.assert_status(200);
    jar.take(&page);
    let token = form_token(&page.text());
    let cookie = jar.header();
    let body = urlencode(&[("name", "rgun")]);
    server
        .connect()
        .request(&request(
            "POST",
            "/form/",
            &[form_type, ("Cookie", &cookie)],
            body.as_bytes(),
        ))
        .assert_status(403);
    let body = urlencode(&[("csrfmiddlewaretoken", &token), ("name", "rgun & co")]);
    let r = server.connect().request(&request(
        "POST",
        "/form/",
        &[form_type, ("Cookie", &cookie)],
        body.as_bytes(),
    ));
    r.assert_status(200);
    assert!(r.text().contains("Thanks, rgun &amp; co!"), "{}", r.text());

    // An upload larger than Django keeps in memory (a temporary file).
    let data = Prng::new(3).bytes(200 * 1024 + 3);
    let boundary = "rgun-django-boundary-14";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrfmiddlewaretoken\"\r\n\r\n{token}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let r = server.connect().request(&request(
        "POST",
        "/upload/",
        &[("Content-Type", &ctype), ("Cookie", &cookie)],
        &body,
    ));
    r.assert_status(200);
    let upload = r.json();
    assert_eq!(upload["size"], data.len());
    assert_eq!(upload["sha256"], hex(&Sha256::digest(&data)));

    // A FileResponse, byte for byte.
    let r = server.get("/file/");
    r.assert_status(200);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"payload.bin\"")
    );
    assert!(r.body == site.payload, "the file came back different");

    // The admin: log in, then the index as the logged-in user.
    let page = server.get("/admin/login/?next=/admin/");
    page.assert_status(200);
    jar.take(&page);
    let token = form_token(&page.text());
    let body = urlencode(&[
        ("csrfmiddlewaretoken", &token),
        ("username", "admin"),
        ("password", ADMIN_PASSWORD),
        ("next", "/admin/"),
    ]);
    let cookie = jar.header();
    let r = server.connect().request(&request(
        "POST",
        "/admin/login/?next=/admin/",
        &[form_type, ("Cookie", &cookie)],
        body.as_bytes(),
    ));
    r.assert_status(302);
    assert_eq!(r.header("location"), Some("/admin/"));
    jar.take(&r);
    jar.get("sessionid");
    let cookie = jar.header();
    let r = server.connect().request(&request(
        "GET",
        "/admin/auth/user/",
        &[("Cookie", &cookie)],
        b"",
    ));
    r.assert_status(200);
    assert!(r.text().contains("Select user to change"), "{}", r.text());

    // What Django's request.META shows of the server.
    let meta = server.get("/environ/").json();
    assert_eq!(
        meta["SERVER_SOFTWARE"],
        format!("rgun/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(meta["wsgi.url_scheme"], "http");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cargo route: a bridge built for one Python refuses, in one line
/// and before starting any interpreter, a virtualenv of another version
/// (its compiled packages could not load; serving without them would be
/// half loading the app). The pip-installed rgun has no such case: its
/// interpreter is the virtualenv's by construction.
#[test]
fn the_embedded_bridge_refuses_a_virtualenv_of_another_python_version() {
    if std::env::var_os("RGUN_TEST_BIN").is_some() {
        eprintln!("the pip-installed rgun embeds no bridge: nothing to check");
        return;
    }
    let dir = TempDir::new("venv-3.99");
    let venv = dir.join("venv");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::create_dir_all(venv.join("lib/python3.99/site-packages")).unwrap();
    std::os::unix::fs::symlink("/bin/true", venv.join("bin/python")).unwrap();
    std::fs::write(
        venv.join("pyvenv.cfg"),
        "home = /opt/python3.99/bin\ninclude-system-site-packages = false\nversion = 3.99.1\n",
    )
    .unwrap();
    let mut server = App::Wsgi
        .builder()
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .spawn();
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(4), "{}", Server::describe(status));
    let log = server.stderr.text();
    let expected = format!(
        "VIRTUAL_ENV={} is a virtualenv of Python 3.99, but this rgun's Python bridge was built for Python",
        venv.display()
    );
    assert!(log.contains(&expected), "{expected:?} not in:\n{log}");
    assert!(log.contains("pip install rgun"), "{log}");
}
