//! The error log, set up by the master before it forks so that workers write
//! through the same logger: Gunicorn's line format, one write(2) per line so
//! that lines from several processes never interleave, reopened on USR1.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rgun_worker::timefmt;

/// The log target of Gunicorn's CRITICAL lines (the `log` crate stops at
/// ERROR): `log::error!(target: CRITICAL, ...)`.
pub const CRITICAL: &str = "rgun::critical";

struct Logger {
    level: log::LevelFilter,
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Log to `path` (`-`: standard error) from `level` up.
pub fn init(path: &Path, level: log::LevelFilter) -> io::Result<()> {
    let path = (path.as_os_str() != "-").then(|| path.to_path_buf());
    let file = path.as_deref().map(open).transpose().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open the error log {}: {e}",
                path.as_deref().unwrap_or(Path::new("-")).display()
            ),
        )
    })?;
    let logger = LOGGER.get_or_init(|| Logger {
        level,
        path,
        file: Mutex::new(file),
    });
    // A second init (tests) keeps the first logger.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
    Ok(())
}

/// USR1: open the log file anew (a rotator moved it away).
pub fn reopen() {
    if let Some(logger) = LOGGER.get()
        && let Some(path) = &logger.path
    {
        match open(path) {
            Ok(file) => *logger.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file),
            Err(e) => log::error!("cannot reopen the error log {}: {e}", path.display()),
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error if record.target() == CRITICAL => "CRITICAL",
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARNING",
            log::Level::Info => "INFO",
            log::Level::Debug | log::Level::Trace => "DEBUG",
        };
        let line = format!(
            "[{}] [{}] [{level}] {}\n",
            timefmt::error_log_time(timefmt::unix_now()),
            std::process::id(),
            record.args()
        );
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // Nowhere to report a failing log write; serving goes on.
        let _ = match file.as_mut() {
            Some(file) => file.write_all(line.as_bytes()),
            None => io::stderr().lock().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}
