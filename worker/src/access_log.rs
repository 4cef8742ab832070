//! The access log, one line per request in Apache's combined format (what
//! Gunicorn writes by default): `%h %l %u %t "%r" %s %b "%f" "%a"`. Off
//! unless `--access-logfile` names a file or `-` (standard output).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use crate::parse::Version;
use crate::timefmt;

pub struct AccessLog {
    path: PathBuf,
    file: Option<File>,
    line: Vec<u8>,
    time_secs: u64,
    time_text: String,
}

/// What one line says of a request and its answer.
pub struct Entry<'a> {
    /// The peer (`%h`, as Gunicorn writes it): a PROXY header's source if
    /// one was given.
    pub remote_addr: &'a [u8],
    /// The client as the server decided it (a trusted proxy's
    /// X-Forwarded-For), for formats that show it (the default, Apache's
    /// combined format, shows `remote_addr` as Gunicorn does).
    #[allow(dead_code)]
    pub client_addr: &'a [u8],
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: Version,
    pub status: u16,
    pub body_bytes: u64,
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
}

impl AccessLog {
    pub fn open(path: PathBuf) -> io::Result<AccessLog> {
        let mut log = AccessLog {
            path,
            file: None,
            line: Vec::with_capacity(256),
            time_secs: u64::MAX,
            time_text: String::new(),
        };
        log.reopen()?;
        Ok(log)
    }

    /// On `USR1`: a log rotator moved the file away.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = if self.path.as_os_str() == "-" {
            None
        } else {
            Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            )
        };
        Ok(())
    }

    pub fn write(&mut self, entry: &Entry<'_>) {
        let now = timefmt::unix_now();
        if now != self.time_secs {
            self.time_secs = now;
            self.time_text = timefmt::access_log_time(now);
        }
        let line = &mut self.line;
        line.clear();
        push_or_dash(line, entry.remote_addr);
        line.extend_from_slice(b" - - [");
        line.extend_from_slice(self.time_text.as_bytes());
        line.extend_from_slice(b"] \"");
        push_escaped(line, entry.method);
        line.push(b' ');
        push_escaped(line, entry.target);
        line.push(b' ');
        line.extend_from_slice(entry.version.as_bytes());
        line.extend_from_slice(b"\" ");
        line.extend_from_slice(itoa::Buffer::new().format(entry.status).as_bytes());
        line.push(b' ');
        if entry.body_bytes == 0 {
            line.push(b'-');
        } else {
            line.extend_from_slice(itoa::Buffer::new().format(entry.body_bytes).as_bytes());
        }
        line.extend_from_slice(b" \"");
        push_or_dash(line, entry.referer);
        line.extend_from_slice(b"\" \"");
        push_or_dash(line, entry.user_agent);
        line.extend_from_slice(b"\"\n");
        // A full disk must not stop the worker from serving.
        let _ = match &mut self.file {
            Some(file) => file.write_all(line),
            None => io::stdout().lock().write_all(line),
        };
    }
}

fn push_or_dash(line: &mut Vec<u8>, value: &[u8]) {
    if value.is_empty() {
        line.push(b'-');
    } else {
        push_escaped(line, value);
    }
}

/// Quotes, backslashes and non-printable bytes as `\xHH`, so that a client
/// cannot forge log lines.
fn push_escaped(line: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            line.push(b);
        }
    }
}
