//! What Prometheus client libraries export as `process_*`, read from
//! `/proc` for any process: CPU time, memory, start time, descriptors.

/// One process's numbers, in the units of `process_*`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStat {
    pub cpu_seconds: f64,
    /// CPU time of its children that it has reaped (`cutime + cstime`).
    pub reaped_children_cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub virtual_bytes: u64,
    pub resident_bytes: u64,
}

fn sysconf(name: libc::c_int, fallback: i64) -> f64 {
    // SAFETY: sysconf only reads a system value.
    let value = unsafe { libc::sysconf(name) };
    if value > 0 {
        value as f64
    } else {
        fallback as f64
    }
}

/// `/proc/PID/stat`, fields after the command (which may hold spaces and
/// parentheses, so the text is cut at the last `)`).
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is rest's first.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = sysconf(libc::_SC_CLK_TCK, 100);
    let page = sysconf(libc::_SC_PAGESIZE, 4096);
    Some(ProcStat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        reaped_children_cpu_seconds: (field(16)? + field(17)?) as f64 / ticks,
        start_time_seconds: boot_time()? + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: (field(24)? as f64 * page) as u64,
    })
}

/// When the machine booted, in Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// Descriptors open in `pid` (`None` where this process may not look: the
/// master of workers running as another `--user`).
pub fn open_fds(pid: i32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The soft limit on open descriptors of `pid`.
pub fn max_fds(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measured() {
        let pid = std::process::id() as i32;
        let stat = stat(pid).expect("our own /proc/PID/stat");
        assert!(stat.resident_bytes > 0 && stat.virtual_bytes >= stat.resident_bytes);
        assert!(stat.start_time_seconds > 1e9, "{stat:?}");
        assert!(open_fds(pid).expect("our own descriptors") >= 3);
        assert!(max_fds(pid).expect("our own limit") > 0);
    }
}
