//! The core suite (routes, HTTP/1.1, split and malformed requests, worker
//! lives) run a second time, unchanged, against `shared/spec/testapp_wsgi.py`
//! served through the Python bridge: a WSGI application must get the same
//! contract. Each file is compiled again here, where `harness` is one whose
//! `Server` and `testapp` start the Python application.

mod harness {
    pub use crate::harness::*;
    pub use crate::wsgi_harness::{WsgiServer as Server, testapp};
}

// Compiling these files twice is the point (clippy::duplicate_mod).
#[allow(clippy::duplicate_mod)]
#[path = "http1.rs"]
mod http1;
#[allow(clippy::duplicate_mod)]
#[path = "lifecycle.rs"]
mod lifecycle;
#[allow(clippy::duplicate_mod)]
#[path = "malformed.rs"]
mod malformed;
#[allow(clippy::duplicate_mod)]
#[path = "routes.rs"]
mod routes;
#[allow(clippy::duplicate_mod)]
#[path = "split.rs"]
mod split;
