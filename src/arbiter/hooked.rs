//! The arbiter's side of the server hooks (`crate::hooks`): run one, and
//! stop the master when it raised, as Gunicorn's master stops when a hook
//! raises in its loop ("Unhandled exception in main loop").

use rgun_worker::scoreboard::monotonic_ms;

use super::Arbiter;
use crate::hooks::{Event, Outcome};

/// The halt reason after a hook raised.
pub(super) const HOOK_RAISED: &str = "A server hook raised an exception.";
/// The master's exit code then.
pub(super) const EXIT_HOOK_ERROR: i32 = 1;

impl Arbiter {
    /// Run a hook; one that raised stops the master (a quick stop).
    pub(super) fn hook(&mut self, event: Event) -> Outcome {
        let outcome = self.run_hook(event);
        if outcome == Outcome::Raised && self.halt.is_none() {
            self.halt = Some((HOOK_RAISED, EXIT_HOOK_ERROR));
        }
        outcome
    }

    /// Run a hook and only report how it went.
    pub(super) fn run_hook(&mut self, event: Event) -> Outcome {
        let wanted = self.wanted;
        // The master is alive while it waits for a hook (/healthz reads
        // the beat): before and after each, however many come in a row.
        self.scoreboard.master().beat(monotonic_ms());
        let outcome = self.hooks.run(event, wanted);
        self.scoreboard.master().beat(monotonic_ms());
        outcome
    }

    /// A new worker count: `nworkers_changed(server, new, old)` when it
    /// changes (TTIN, TTOU, WINCH).
    pub(super) fn set_wanted(&mut self, wanted: usize) {
        let old = self.wanted;
        self.wanted = wanted;
        if wanted != old {
            self.hook(Event::NworkersChanged {
                new: wanted,
                old: Some(old),
            });
        }
    }
}
