//! The harness every test uses, so that tests read like what an operator
//! and a client do: start the real `rgun` (`server`) on either form of the
//! test application (`app`), follow its logs (`logs`), and talk to it with a
//! strict raw HTTP/1.1 client (`client`). Nothing in it retries or sleeps to
//! wait: it waits on conditions.

mod app;
mod c_compile;
mod client;
pub mod clients;
mod logs;
mod nginx;
mod paths;
mod prng;
mod requests;
mod server;
mod sock_diag;
mod temp;
mod workers;

use std::time::Duration;

pub use app::App;
pub(crate) use app::test_each_app;
pub use c_compile::compile_c_app;
pub use client::{Conn, Framing, Response};
pub use logs::wait_for_file_line;
pub use nginx::{start_balancer, start_nginx};
pub use paths::{
    app_lib, manifest_dir, rgun_bin, shared_spec_dir, target_dir, testapp, wsgi_testapp_dir,
};
pub use prng::Prng;
pub use requests::{chunked, get, request};
pub use server::{Listen, Server, ServerBuilder, listening_tcp_addr, parse_listening, run_rgun};
pub use temp::{TempDir, unique_socket_path};
pub use workers::{
    boots, fresh_pid, log_line_pid, pid_of, process_exists, wait_retired, wait_until,
    wait_until_within,
};

/// Read and write timeout on every client socket: a server that stops
/// answering fails the test after this long instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for anything the server should do "at once" (start, log,
/// exit). Generous on purpose: it only keeps a broken server from hanging the
/// suite and is never asserted on as a measure of speed.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often the few polling waits (process exit, a file's contents, a
/// socket's receive queue) look again. They poll a condition; they never
/// sleep in place of one.
const POLL: Duration = Duration::from_millis(5);
