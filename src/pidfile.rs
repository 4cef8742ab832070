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

impl Pidfile {
    /// `USR2`: the file becomes `<pidfile>.oldbin`, as in Gunicorn and
    /// Nginx, so that the new master can write its own.
    pub fn move_to_oldbin(&mut self) {
        let mut oldbin = self.path.clone().into_os_string();
        oldbin.push(".oldbin");
        let oldbin = PathBuf::from(oldbin);
        match std::fs::rename(&self.path, &oldbin) {
            Ok(()) => self.path = oldbin,
            Err(e) => log::error!(
                "cannot rename the pidfile {} to {}: {e}",
                self.path.display(),
                oldbin.display()
            ),
        }
    }

    /// A failed upgrade: the file takes its name back.
    pub fn move_back_from_oldbin(&mut self) {
        let Some(original) = self
            .path
            .to_str()
            .and_then(|p| p.strip_suffix(".oldbin"))
            .map(PathBuf::from)
        else {
            return;
        };
        match std::fs::rename(&self.path, &original) {
            Ok(()) => self.path = original,
            Err(e) => log::error!(
                "cannot rename the pidfile {} back to {}: {e}",
                self.path.display(),
                original.display()
            ),
        }
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
