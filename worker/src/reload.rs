//! `--reload`, for development: a worker watches the files its application
//! is made of (a native application's library; for Python, the bridge
//! watches the imported modules and raises `SIGUSR2` in its worker) and,
//! when one changes, asks the master to reload, which it does the way
//! `HUP` does. inotify(7) on each file's folder, so that a file replaced
//! by a rename (what compilers and editors do) is seen too.

use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What in a watched folder says a file changed.
const EVENTS: u32 = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_DELETE;
/// Room for a batch of events (each a header and a name).
const EVENT_BUFFER: usize = 64 * 1024;

/// Watches a set of files for changes.
pub struct FileWatch {
    inotify: OwnedFd,
    /// (folder watch descriptor, file name) of every watched file.
    files: HashSet<(i32, OsString)>,
}

impl FileWatch {
    pub fn new(files: &[PathBuf]) -> io::Result<FileWatch> {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, ours alone.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut watch = FileWatch {
            inotify,
            files: HashSet::new(),
        };
        for file in files {
            watch.add(file)?;
        }
        Ok(watch)
    }

    fn add(&mut self, file: &Path) -> io::Result<()> {
        let file = std::path::absolute(file)?;
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            return Ok(());
        };
        let dir_c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::other(format!("a NUL byte in {}", dir.display())))?;
        // SAFETY: a valid NUL-terminated path and our inotify descriptor.
        let wd =
            unsafe { libc::inotify_add_watch(self.inotify.as_raw_fd(), dir_c.as_ptr(), EVENTS) };
        if wd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot watch {} for --reload: {e}", dir.display()),
            ));
        }
        self.files.insert((wd, name.to_os_string()));
        Ok(())
    }

    pub fn fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// Read what happened since the last call: the first watched file
    /// that changed, if any.
    pub fn changed(&self) -> Option<PathBuf> {
        let mut buf = vec![0u8; EVENT_BUFFER];
        let mut found = None;
        loop {
            // SAFETY: reading into a buffer of `buf.len()` bytes.
            let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return found;
            }
            let mut at = 0;
            let header = size_of::<libc::inotify_event>();
            while at + header <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned
                // copies the header out of the byte buffer.
                let event: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name_bytes = &buf[at + header..at + header + event.len as usize];
                let end = name_bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_bytes.len());
                let name = std::ffi::OsStr::from_bytes(&name_bytes[..end]).to_os_string();
                if found.is_none() && self.files.contains(&(event.wd, name.clone())) {
                    found = Some(PathBuf::from(name));
                }
                at += header + event.len as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_is_seen_and_its_neighbours_are_not() {
        let dir = std::env::temp_dir().join(format!("rgun-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libapp.so");
        std::fs::write(&lib, b"one").unwrap();
        let watch = FileWatch::new(std::slice::from_ref(&lib)).unwrap();
        assert_eq!(watch.changed(), None);
        std::fs::write(dir.join("other.txt"), b"x").unwrap();
        assert_eq!(watch.changed(), None);
        // Replaced by a rename, as a build does.
        std::fs::write(dir.join("libapp.so.new"), b"two").unwrap();
        std::fs::rename(dir.join("libapp.so.new"), &lib).unwrap();
        assert_eq!(watch.changed(), Some(PathBuf::from("libapp.so")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
