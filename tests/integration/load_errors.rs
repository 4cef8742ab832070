//! An application that cannot be loaded stops the server: one readable
//! error line naming the library (and the symbol when that is what is
//! missing), no panic, exit code 4 as Gunicorn's "app failed to load", and
//! no fork loop. The broken libraries are made here, with `cc`.

use crate::harness::{Server, TempDir, WAIT, app_lib, compile_c_app};

/// Start rgun on `app` with two workers and expect a load failure whose
/// error line contains every string in `mentions` (ignoring case).
fn assert_load_error(app: &str, mentions: &[&str]) {
    let mut server = Server::builder(app).args(["--workers", "2"]).spawn();
    let status = server.wait_exit(WAIT);
    let log = server.stderr.text();
    assert_eq!(
        status.code(),
        Some(4),
        "{}; log:\n{log}",
        Server::describe(status)
    );
    assert!(
        !log.contains("panicked"),
        "a panic instead of an error:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| {
            let l = l.to_lowercase();
            mentions.iter().all(|m| l.contains(&m.to_lowercase()))
        })
        .unwrap_or_else(|| panic!("no line mentions all of {mentions:?}:\n{log}"));
    assert!(line.contains("[ERROR]"), "logged as an error: {line:?}");
    let errors = log.lines().filter(|l| l.contains("[ERROR]")).count();
    assert_eq!(errors, 1, "one error line, not {errors}:\n{log}");
    let boots = log.matches("Booting worker with pid: ").count();
    assert!(boots <= 2, "workers were started {boots} times:\n{log}");
}

#[test]
fn missing_library_file() {
    let dir = TempDir::new("missing");
    let path = dir.join("libnothere.so");
    let path = path.display().to_string();
    assert_load_error(&format!("{path}:app"), &[&path]);
}

#[test]
fn file_that_is_not_a_shared_library() {
    let dir = TempDir::new("notlib");
    let path = dir.join("x.so");
    std::fs::write(&path, "this is a text file, not an ELF object\n").unwrap();
    let path = path.display().to_string();
    assert_load_error(&format!("{path}:app"), &[&path]);
}

#[test]
fn missing_symbol() {
    let path = app_lib("testapp").display().to_string();
    assert_load_error(&format!("{path}:nope"), &[&path, "nope"]);
}

#[test]
fn missing_default_symbol() {
    // A shared library with no `app` in it at all.
    let dir = TempDir::new("nosym");
    let source = dir.join("empty.c");
    std::fs::write(&source, "int not_an_app = 1;\n").unwrap();
    let lib = dir.join("libempty.so");
    compile_c_app(&source, &lib);
    let path = lib.display().to_string();
    assert_load_error(&path, &[&path, "app"]);
}

/// An otherwise valid application with the given magic and ABI version.
fn c_app_with(magic: &str, version: &str) -> String {
    format!(
        r#"#include "rgun.h"
static int32_t handle(const rgun_server *server, rgun_call *call,
                      const rgun_request *request) {{
    (void)request;
    return server->respond(call, 200, RGUN_STR(""), NULL, 0,
                           (const uint8_t *)"must not be served\n", 19);
}}
const rgun_app app = {{ {magic}, {version}, 0, NULL, handle, NULL, NULL }};
"#
    )
}

fn build(dir: &TempDir, name: &str, source: String) -> String {
    let c = dir.join(&format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let lib = dir.join(&format!("lib{name}.so"));
    compile_c_app(&c, &lib);
    lib.display().to_string()
}

#[test]
fn wrong_abi_version() {
    let dir = TempDir::new("abi");
    let path = build(&dir, "future", c_app_with("RGUN_APP_MAGIC", "999u"));
    assert_load_error(&format!("{path}:app"), &[&path, "version"]);
}

#[test]
fn wrong_magic() {
    let dir = TempDir::new("magic");
    let path = build(
        &dir,
        "nomagic",
        c_app_with("0xdeadbeefu", "RGUN_ABI_VERSION"),
    );
    assert_load_error(&format!("{path}:app"), &[&path]);
}

#[test]
fn the_same_c_app_with_the_right_abi_is_served() {
    // The control for the two above: only the numbers differ.
    let dir = TempDir::new("abi-ok");
    let path = build(
        &dir,
        "good",
        c_app_with("RGUN_APP_MAGIC", "RGUN_ABI_VERSION"),
    );
    let server = Server::builder(format!("{path}:app")).start();
    let response = server.get("/");
    response.assert_status(200);
    assert_eq!(response.text(), "must not be served\n");
}

#[test]
fn an_application_of_the_previous_abi_version_is_still_served() {
    // Version 2 only appended `client_addr` to the request, which a
    // version-1 application never reads: it loads and serves.
    let dir = TempDir::new("abi-v1");
    let path = build(&dir, "older", c_app_with("RGUN_APP_MAGIC", "1u"));
    let server = Server::builder(format!("{path}:app")).start();
    server.get("/").assert_status(200);
    // Version 0 was never one, and one past this server's is refused.
    for (name, version) in [("zero", "0u"), ("next", "(RGUN_ABI_VERSION + 1u)")] {
        let path = build(&dir, name, c_app_with("RGUN_APP_MAGIC", version));
        assert_load_error(&format!("{path}:app"), &[&path, "versions 1 to 2"]);
    }
}
