//! `--pid FILE`: the master's pid, written at start and removed at exit.
//! A file naming a live process is refused, as Gunicorn does.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    pub fn create(path: &Path) -> Result<Pidfile> {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<i32>()
            && pid != std::process::id() as i32
            // EPERM: alive, owned by someone else (Gunicorn reads it so too).
            && !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            )
        {
            bail!(
                "pidfile {} names a running process ({pid}): is rgun already running?",
                path.display()
            );
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pidfile {}", path.display()))?;
        Ok(Pidfile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
