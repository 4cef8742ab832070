//! `--check-config` (and `--print-config`, which checks too): the
//! application is loaded in a forked child, as a worker would load it, so
//! that nothing of it stays in this process; the exit code says whether it
//! loaded.

use anyhow::Context;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use crate::cli::Cli;

/// The exit code when the application does not load (Gunicorn's
/// `--check-config` exits 1).
pub const EXIT_CHECK_FAILED: u8 = 1;

/// Load the application in a child; 0 if it loaded.
pub fn check(cli: &Cli) -> u8 {
    // SAFETY: the master is single-threaded here: nothing has started a
    // thread that the child would miss.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match load(cli) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e:#}");
                    i32::from(EXIT_CHECK_FAILED)
                }
            };
            // SAFETY: _exit leaves the child without running the parent's
            // destructors or atexit handlers (an embedded Python's).
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => {
                log::info!("Configuration OK: the application {} loads", cli.app);
                0
            }
            Ok(WaitStatus::Exited(_, _)) => {
                log::error!(
                    "Configuration check failed: the application {} does not load",
                    cli.app
                );
                EXIT_CHECK_FAILED
            }
            Ok(status) => {
                log::error!(
                    "Configuration check failed: the process loading {} ended: {status:?}",
                    cli.app
                );
                EXIT_CHECK_FAILED
            }
            Err(e) => {
                log::error!(
                    "Configuration check failed: cannot wait for the process loading the application: {e}"
                );
                EXIT_CHECK_FAILED
            }
        },
        Err(e) => {
            log::error!(
                "Configuration check failed: cannot fork a process to load the application: {e}"
            );
            EXIT_CHECK_FAILED
        }
    }
}

/// In the child: what the master does before forking workers, then load
/// the application as `--preload` would.
fn load(cli: &Cli) -> anyhow::Result<()> {
    crate::set_env(cli);
    if let Some(dir) = &cli.chdir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot change directory to {}", dir.display()))?;
    }
    let mut cli = cli.clone();
    cli.preload = true;
    let app = crate::resolve_app(&cli).map_err(|failure| failure.error)?;
    crate::settings(&cli, app).map(drop)
}
