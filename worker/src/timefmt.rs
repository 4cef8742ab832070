//! Calendar formatting of Unix time for log lines, without a time-zone
//! database: logs are written in UTC (`+0000`), as Gunicorn does by default
//! in a container.

/// (year, month 1-12, day 1-31, hour, minute, second) of a Unix time, UTC.
pub fn civil(unix_secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (secs / 3600) as u32,
        (secs / 60 % 60) as u32,
        (secs % 60) as u32,
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2026-11-21 03:37:36 +0000`: the error log's time, Gunicorn's format.
pub fn error_log_time(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} +0000")
}

/// `21/Nov/2026:03:37:36 +0000`: the access log's time, Apache's format.
pub fn access_log_time(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs);
    let month = MONTHS[(mo - 1) as usize];
    format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

/// `2026-11-21T03:37:36Z`: the JSON access log's time, ISO 8601.
pub fn iso_time(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(error_log_time(0), "1970-01-01 00:00:00 +0000");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(error_log_time(1_709_210_096), "2024-02-29 12:34:56 +0000");
        assert_eq!(access_log_time(1_709_210_096), "29/Feb/2024:12:34:56 +0000");
        assert_eq!(iso_time(1_709_210_096), "2024-02-29T12:34:56Z");
    }
}
