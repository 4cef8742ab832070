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
    level: Mutex<log::LevelFilter>,
    output: Mutex<Output>,
}

/// Where lines go: a file (and its path, to reopen it) or standard error.
struct Output {
    path: Option<PathBuf>,
    file: Option<File>,
    /// `--capture-output`: standard output and error go to the file too.
    capture: bool,
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The log file at `path` (`-`: none, standard error).
fn open_output(path: &Path) -> io::Result<(Option<PathBuf>, Option<File>)> {
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
    Ok((path, file))
}

/// Log to `path` (`-`: standard error) from `level` up; with `capture`,
/// standard output and error are sent to that file too
/// (`--capture-output`).
pub fn init(path: &Path, level: log::LevelFilter, capture: bool) -> io::Result<()> {
    let (path, file) = open_output(path)?;
    let output = Output {
        path,
        file,
        capture,
    };
    output.capture_stdio();
    let logger = LOGGER.get_or_init(|| Logger {
        level: Mutex::new(level),
        output: Mutex::new(Output {
            path: None,
            file: None,
            capture: false,
        }),
    });
    *lock(&logger.output) = output;
    *lock(&logger.level) = level;
    // A second init (tests, a HUP's new settings) keeps the one logger.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Output {
    /// `--capture-output`: descriptors 1 and 2 become the log file.
    fn capture_stdio(&self) {
        if let (true, Some(file)) = (self.capture, &self.file) {
            let _ = io::stdout().flush();
            for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                // SAFETY: dup2 onto the standard descriptors, from a file
                // this process keeps open.
                unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(file), fd) };
            }
        }
    }
}

/// USR1: open the log file anew (a rotator moved it away).
pub fn reopen() {
    if let Some(logger) = LOGGER.get() {
        let mut output = lock(&logger.output);
        if let Some(path) = output.path.clone() {
            match open(&path) {
                Ok(file) => {
                    output.file = Some(file);
                    output.capture_stdio();
                }
                Err(e) => {
                    drop(output);
                    log::error!("cannot reopen the error log {}: {e}", path.display())
                }
            }
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= *lock(&self.level)
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
        let mut output = lock(&self.output);
        // Nowhere to report a failing log write; serving goes on.
        let _ = match output.file.as_mut() {
            Some(file) => file.write_all(line.as_bytes()),
            None => io::stderr().lock().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}
