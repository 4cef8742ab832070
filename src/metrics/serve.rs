//! The metrics process: forked from the master, it serves the metrics
//! socket until the master stops it, and dies with the master. It only
//! reads the scoreboard and `/proc`, so nothing it does (or a scrape does to
//! it) can disturb the workers or the master.

use nix::sys::signal::{SigHandler, Signal};

use super::http::{Answer, Asked, Server};
use super::snapshot::{Health, History, Readiness, Snapshot};
use super::{Sources, exposition, status};
use crate::sockets::Listener;
use rgun_worker::scoreboard::monotonic_ms;
use rgun_worker::signals;

/// The exit code of a metrics process that panicked (a bug): the master
/// starts another.
pub const EXIT_PANIC: i32 = 70;
/// The exit code when it could not set itself up.
const EXIT_SETUP: i32 = 1;
/// How often it reads the scoreboard for the status page's rates, when no
/// one asks.
const SAMPLE_MS: u64 = 1000;

/// In the forked child: serve until stopped. Returns the exit code.
pub fn run(
    sources: &Sources<'_>,
    listener: &Listener,
    summary: &str,
    mask: nix::sys::signal::SigSet,
) -> i32 {
    if let Err(e) = set_up(sources, mask) {
        log::error!("metrics process: {e:#}");
        return EXIT_SETUP;
    }
    crate::proctitle::set("metrics");
    let mut server = Server::new(listener.fd());
    let mut history = History::default();
    loop {
        if nix::unistd::getppid().as_raw() != sources.master_pid {
            // The master is gone (PR_SET_PDEATHSIG raced with its death).
            return 0;
        }
        let snapshot = Snapshot::read(sources.scoreboard, sources.master_pid);
        history.sample(snapshot.now_ms, &snapshot.totals);
        server.turn(SAMPLE_MS, &mut |asked| {
            answer(asked, sources, summary, &mut history)
        });
    }
}

/// Signals as a quiet child wants them, the master's death as our own, and
/// the workers' identity.
fn set_up(sources: &Sources<'_>, mask: nix::sys::signal::SigSet) -> anyhow::Result<()> {
    use anyhow::Context;
    // The master's handlers must not run here: TERM and INT end this
    // process (the default), the master's other signals mean nothing.
    signals::set_handler(
        &[
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGCHLD,
        ],
        SigHandler::SigDfl,
    )
    .context("resetting signal handlers")?;
    signals::set_handler(
        &[
            Signal::SIGHUP,
            Signal::SIGTTIN,
            Signal::SIGTTOU,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
            Signal::SIGPIPE,
        ],
        SigHandler::SigIgn,
    )
    .context("ignoring the master's signals")?;
    signals::restore_mask(&mask).context("restoring the signal mask")?;
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a signal number; no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    if let Some(identity) = sources.identity {
        identity
            .assume()
            .with_context(|| format!("cannot run as uid {} gid {}", identity.uid, identity.gid))?;
    }
    Ok(())
}

fn answer(
    asked: &Asked<'_>,
    sources: &Sources<'_>,
    summary: &str,
    history: &mut History,
) -> Answer {
    let text = |status: u16, body: String| Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into_bytes(),
        extra: "",
    };
    let snapshot = || Snapshot::read(sources.scoreboard, sources.master_pid);
    match asked.path {
        b"/metrics" => {
            let snapshot = snapshot();
            Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: exposition::render(&snapshot, sources).into_bytes(),
                extra: "",
            }
        }
        b"/healthz" => match snapshot().health {
            Health::Alive => text(200, "ok\n".into()),
            Health::Gone => text(503, "the master is gone\n".into()),
            Health::Silent { for_ms } => text(
                503,
                format!(
                    "the master has been silent for {:.1} s\n",
                    for_ms as f64 / 1000.0
                ),
            ),
        },
        b"/readyz" => match snapshot().readiness {
            Readiness::Ready => text(200, "ready\n".into()),
            Readiness::Stopping => text(503, "not ready: the server is stopping\n".into()),
            Readiness::NoWorkerBooted => {
                text(503, "not ready: no worker serves the application\n".into())
            }
        },
        b"/status.json" => {
            let snapshot = snapshot();
            history.sample(snapshot.now_ms, &snapshot.totals);
            let recent = history.recent(monotonic_ms(), &snapshot.totals);
            Answer {
                status: 200,
                content_type: "application/json",
                body: status::json(&snapshot, &recent, sources, summary).into_bytes(),
                extra: "",
            }
        }
        b"/" => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: status::PAGE.as_bytes().to_vec(),
            extra: "",
        },
        _ => text(
            404,
            "not found: try /metrics, /healthz, /readyz, /status.json or /\n".into(),
        ),
    }
}
