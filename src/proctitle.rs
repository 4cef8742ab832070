//! Process titles as Gunicorn shows them: `rgun: master [APP]` and
//! `rgun: worker [APP]` in `ps`. The title is written over the command
//! line's own memory (the span the kernel reports as `arg_start..arg_end`
//! in /proc/self/stat), never past it into the environment, so that
//! /proc/PID/environ stays whole; a title longer than the original command
//! line is cut. The original arguments are kept first, for re-executing the
//! master.

use std::ffi::OsString;
use std::sync::OnceLock;

/// The command line as started, before any title replaced it.
static ORIGINAL_ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// Keep the arguments as started. Call first thing in `main`.
pub fn save_args() {
    let _ = ORIGINAL_ARGS.set(std::env::args_os().collect());
}

/// The arguments the process was started with (after the program name),
/// whatever its title says now.
pub fn original_args() -> Vec<OsString> {
    ORIGINAL_ARGS
        .get()
        .map(|args| args.iter().skip(1).cloned().collect())
        .unwrap_or_else(|| std::env::args_os().skip(1).collect())
}

/// The program name the process was started with.
pub fn original_program() -> OsString {
    ORIGINAL_ARGS
        .get()
        .and_then(|args| args.first().cloned())
        .unwrap_or_else(|| std::env::args_os().next().unwrap_or_default())
}

/// The NAME of the titles (`--proc-name`, or the application).
static NAME: OnceLock<String> = OnceLock::new();

/// Set the NAME once, in the master; forked workers inherit it.
pub fn set_name(name: &str) {
    let _ = NAME.set(name.to_string());
}

/// `rgun: ROLE [NAME]`, in `ps` and, cut to 15 bytes, in /proc/PID/comm.
/// A worker sets it once its application is loaded: an embedded Python
/// reads the command line for `sys.argv` as it starts.
pub fn set(role: &str) {
    let (Some(_), Some(name)) = (ORIGINAL_ARGS.get(), NAME.get()) else {
        // Without the arguments kept, a re-exec would read the title.
        return;
    };
    let title = format!("rgun: {role} [{name}]");
    set_comm(&format!("rgun: {role}"));
    if let Some((start, end)) = argument_span() {
        write_span(start, end, title.as_bytes());
    }
}

/// Put the original command line back (a forked worker, before it loads
/// its application: an embedded Python takes `sys.argv` from it).
pub fn restore() {
    let (Some(args), Some((start, end))) = (ORIGINAL_ARGS.get(), argument_span()) else {
        return;
    };
    let mut line = Vec::new();
    for arg in args {
        line.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(arg.as_os_str()));
        line.push(0);
    }
    write_span(start, end, &line);
}

/// The kernel's short name of the thread (the main thread: the process).
fn set_comm(name: &str) {
    let mut bytes = [0u8; 16];
    let n = name.len().min(15);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // from a valid pointer.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) };
}

/// `arg_start` and `arg_end`: fields 48 and 49 of /proc/self/stat (Linux
/// 3.5 and later), counted after the command name's closing parenthesis,
/// which may itself hold spaces.
fn argument_span() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    // Field 3 is the first after the name; fields 48 and 49 follow.
    let mut fields = after_name.split_whitespace().skip(48 - 3);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (end > start).then_some((start, end))
}

fn write_span(start: usize, end: usize, title: &[u8]) {
    let len = end - start;
    // The last byte stays NUL: the kernel then reads the command line no
    // further than its end.
    let n = title.len().min(len - 1);
    // The original arguments, NUL-separated, fill the span exactly.
    // SAFETY: `start..end` is this process's argument strings, which it owns
    // for its whole life (the kernel laid them out at exec); the arguments
    // were copied out by `save_args` before, and nothing else reads them.
    unsafe {
        let span = std::slice::from_raw_parts_mut(start as *mut u8, len);
        span[..n].copy_from_slice(&title[..n]);
        span[n..].fill(0);
    }
}
