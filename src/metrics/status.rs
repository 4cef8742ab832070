//! The status page (`GET /`, a static page that fetches `/status.json`
//! every two seconds and redraws itself) and its JSON.

use std::fmt::Write;

use super::Sources;
use super::snapshot::{Health, Readiness, Recent, Snapshot};
use crate::sockets;
use rgun_worker::scoreboard::metrics::{METHODS, STATUS_CLASSES};

/// The page, whole: no resource from elsewhere, no favicon request.
pub const PAGE: &str = include_str!("status.html");

/// `text` as a JSON string, quoted and escaped (RFC 8259 §7).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `<` too, so that the text is safe inside a page's script.
            c if (c as u32) < 0x20 || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn opt(value: Option<f64>) -> String {
    value.map_or("null".into(), |v| format!("{v}"))
}

/// Everything the page shows, as one JSON object.
pub fn json(snapshot: &Snapshot, recent: &Recent, sources: &Sources<'_>, summary: &str) -> String {
    let mut out = String::with_capacity(4096);
    let health = match snapshot.health {
        Health::Alive => "alive",
        Health::Gone => "gone",
        Health::Silent { .. } => "silent",
    };
    let readiness = match snapshot.readiness {
        Readiness::Ready => "ready",
        Readiness::Stopping => "stopping",
        Readiness::NoWorkerBooted => "no worker serves the application",
    };
    let _ = write!(
        out,
        "{{\"master\":{{\"pid\":{},\"health\":{},\"readiness\":{},\"ready\":{},\"workers_wanted\":{}}},",
        sources.master_pid,
        json_string(health),
        json_string(readiness),
        snapshot.readiness == Readiness::Ready,
        snapshot.wanted
    );
    let _ = write!(
        out,
        "\"config\":{summary},\"workers\":[{}],",
        workers(snapshot)
    );
    totals_json(&mut out, snapshot);
    let [p50, p90, p99] = recent.percentiles;
    let _ = write!(
        out,
        "\"recent\":{{\"seconds\":{},\"requests_per_second\":{},\"p50_seconds\":{},\"p90_seconds\":{},\"p99_seconds\":{}}},",
        recent.seconds,
        recent.requests_per_second,
        opt(p50),
        opt(p90),
        opt(p99)
    );
    let restarts: Vec<String> = snapshot
        .restarts
        .iter()
        .map(|(r, n)| format!("{}:{n}", json_string(r.label())))
        .collect();
    let listeners: Vec<String> = sources
        .listeners
        .iter()
        .map(|l| json_string(&sockets::describe(&l.addr)))
        .collect();
    let _ = write!(
        out,
        "\"restarts\":{{{}}},\"listeners\":[{}]}}",
        restarts.join(","),
        listeners.join(",")
    );
    out
}

/// The workers, as JSON objects separated by commas.
fn workers(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    for (i, w) in snapshot.workers.iter().enumerate() {
        let request = match &w.request {
            Some(r) => format!(
                "{{\"line\":{},\"seconds\":{}}}",
                json_string(&r.line),
                r.for_ms as f64 / 1000.0
            ),
            None => "null".into(),
        };
        let _ = write!(
            out,
            "{}{{\"slot\":{},\"pid\":{},\"state\":{},\"requests\":{},\"in_flight\":{},\"connections\":{},\"age_seconds\":{},\"request\":{request}}}",
            if i > 0 { "," } else { "" },
            w.slot,
            w.pid,
            json_string(w.state.label()),
            w.requests,
            w.in_flight,
            w.connections,
            w.age_ms / 1000,
        );
    }
    out
}

/// The `totals` member, and its comma.
fn totals_json(out: &mut String, snapshot: &Snapshot) {
    let totals = &snapshot.totals;
    let by = |f: &dyn Fn(usize, usize) -> bool| -> u64 {
        let mut n = 0;
        for (c, row) in totals.requests.iter().enumerate() {
            for (m, count) in row.iter().enumerate() {
                if f(c, m) {
                    n += count;
                }
            }
        }
        n
    };
    let classes: Vec<String> = STATUS_CLASSES
        .iter()
        .enumerate()
        .map(|(c, name)| format!("{}:{}", json_string(name), by(&|cc, _| cc == c)))
        .collect();
    let methods: Vec<String> = METHODS
        .iter()
        .enumerate()
        .map(|(m, name)| format!("{}:{}", json_string(name), by(&|_, mm| mm == m)))
        .collect();
    let _ = write!(
        out,
        "\"totals\":{{\"requests\":{},\"in_flight\":{},\"connections\":{},\"request_bytes\":{},\"response_bytes\":{},\"by_class\":{{{}}},\"by_method\":{{{}}}}},",
        totals.requests_total(),
        snapshot.in_flight(),
        snapshot.connections(),
        totals.request_bytes,
        totals.response_bytes,
        classes.join(","),
        methods.join(",")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_would_break_them() {
        assert_eq!(
            json_string("a\"b\\c\n\u{1}<"),
            "\"a\\\"b\\\\c\\n\\u0001\\u003c\""
        );
    }
}
