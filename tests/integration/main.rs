//! Integration tests: they start the real `rgun` binary and talk to it over
//! real sockets, as an operator and a client would. Each test starts its own
//! server on a free port, so the tests run in parallel. The example
//! applications must be built first: `cargo build --workspace`.
//!
//! The core suite (`routes`, `http1`, `split`, `malformed`, `lifecycle`)
//! runs against both forms of the test application, the native library and
//! `testapp_wsgi.py` through the Python bridge: each of its tests is there
//! twice, as `FILE::native::NAME` and `FILE::wsgi::NAME`.

mod access_log;
mod affinity;
mod c_app;
mod cli;
mod config;
mod corpus;
mod deploy;
mod edge;
mod fleet;
mod gunicorn_compat;
mod harness;
mod hooks;
mod http1;
mod lifecycle;
mod load_errors;
mod malformed;
mod metrics;
mod metrics_tools;
mod operations;
mod recycling;
mod routes;
mod spec_copy;
mod split;
mod upgrade;
mod wsgi_bridge;
mod wsgi_flask;
mod wsgi_grammar;
mod wsgi_harness;
mod wsgi_pip;
mod wsgi_validator;
