//! `examples/testapp/testapp_wsgi.py` is a copy of the contract's WSGI
//! version in `shared/spec`, kept in the repository so that a clone with
//! nothing beside it runs every test. Where `../shared/spec` is there, the
//! two must be the same file, byte for byte; where it is not, there is
//! nothing to compare and the test says so.

use std::io::Write as _;

use crate::harness::{shared_spec_dir, wsgi_testapp_dir};

#[test]
fn testapp_wsgi_is_the_shared_spec_copy() {
    let ours = wsgi_testapp_dir().join("testapp_wsgi.py");
    let Some(spec) = shared_spec_dir() else {
        // Straight to the stream: libtest keeps what eprintln! says to
        // itself unless a test fails, and this note is for a passing run.
        let _ = writeln!(
            std::io::stderr(),
            "note: no ../shared/spec beside the checkout; {} not compared with it",
            ours.display()
        );
        return;
    };
    let theirs = spec.join("testapp_wsgi.py");
    let read = |path: &std::path::Path| {
        std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    assert!(
        read(&ours) == read(&theirs),
        "{} differs from {}, which is the contract: copy it again with\n  cp {} {}",
        ours.display(),
        theirs.display(),
        theirs.display(),
        ours.display()
    );
}
