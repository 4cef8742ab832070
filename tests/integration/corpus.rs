//! The parser corpus, `tests/corpus/` (its README says the format): one
//! raw request per file and what the server must answer beside it, in the
//! manner of Gunicorn's `tests/requests`. Every case goes to one server per
//! application three ways, each on a connection of its own: whole, a byte
//! at a time, and in seeded random pieces. Between pieces the runner waits
//! until the server has read what was sent, so that the server really sees
//! the pieces apart, and stops sending once the server has answered for
//! good. After the answers, a connection the server keeps open must carry
//! one more request, answered as itself: no byte of the case was left
//! behind to be read as the start of another request.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{fs, panic, thread};

use serde_json::{Map, Value};

use crate::harness::{App, Conn, Prng, Response, manifest_dir};

crate::harness::test_each_app!(the_corpus_is_answered_as_expected);

/// The server's limits for the corpus, small so that the cases crossing
/// them stay small (the README lists them too).
const SERVER_ARGS: [&str; 8] = [
    "--limit-request-line",
    "256",
    "--limit-request-fields",
    "20",
    "--limit-request-field_size",
    "256",
    "--limit-request-body",
    "64",
];

/// Connections in flight at once: the waits between pieces overlap.
const PARALLEL: usize = 8;
/// Random splits of each case, and the largest piece they cut.
const RANDOM_SPLITS: u64 = 2;
const LARGEST_PIECE: usize = 16;

/// Sent after the answers on a connection the server keeps open.
const SENTINEL: &[u8] = b"GET /echo?corpus-sentinel HTTP/1.1\r\nHost: sentinel\r\n\r\n";

/// One request file and its expectation.
struct Case {
    /// `class/name`.
    name: String,
    raw: Vec<u8>,
    answers: Vec<Answer>,
    apps: Option<Vec<String>>,
    known_failing: Option<String>,
    /// Sent whole only, for this reason.
    whole_only: Option<String>,
}

/// A final answer the server must give, after its interim ones.
struct Answer {
    status: u16,
    /// The interim answers the server may send first; it may send fewer
    /// (RFC 9110 §10.1.1: a 100 may be left out once the content is in).
    interim: Vec<u16>,
    /// What `/echo` must report, key by key.
    echo: Option<Map<String, Value>>,
    /// Whether the answer closes the connection.
    close: bool,
    /// An answer to HEAD: a head alone.
    head: bool,
}

#[derive(Clone, Copy, Debug)]
enum Feed {
    Whole,
    Bytewise,
    Random(u64),
}

impl Feed {
    /// The sizes of the pieces `len` bytes are sent in.
    fn pieces(self, len: usize) -> Vec<usize> {
        match self {
            Feed::Whole => vec![len],
            Feed::Bytewise => vec![1; len],
            Feed::Random(seed) => {
                let mut rng = Prng::new(seed);
                let mut pieces = Vec::new();
                let mut left = len;
                while left > 0 {
                    let n = rng.range(1, LARGEST_PIECE).min(left);
                    pieces.push(n);
                    left -= n;
                }
                pieces
            }
        }
    }
}

fn corpus_dir() -> PathBuf {
    manifest_dir().join("tests/corpus")
}

/// Every case, in a stable order: each `class/NAME.http` with its
/// `class/NAME.expect`.
fn load() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut classes: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("read tests/corpus")
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    for class in classes {
        let mut files: Vec<PathBuf> = fs::read_dir(&class)
            .expect("read a corpus class")
            .map(|e| e.expect("a corpus entry").path())
            .collect();
        files.sort();
        for file in &files {
            let stem = file.file_stem().unwrap().to_string_lossy();
            let name = format!("{}/{stem}", class.file_name().unwrap().to_string_lossy());
            match file.extension().and_then(|e| e.to_str()) {
                Some("http") => cases.push(load_case(name, file)),
                Some("expect") => assert!(
                    file.with_extension("http").exists(),
                    "{name}.expect has no {name}.http"
                ),
                _ => panic!("{}: neither .http nor .expect", file.display()),
            }
        }
    }
    cases
}

fn load_case(name: String, http: &Path) -> Case {
    let raw = fs::read(http).unwrap_or_else(|e| panic!("read {}: {e}", http.display()));
    let expect_path = http.with_extension("expect");
    let text = fs::read_to_string(&expect_path)
        .unwrap_or_else(|e| panic!("{name}: read {}: {e}", expect_path.display()));
    let expect: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.expect: {e}"));
    let field = |key: &str| expect.get(key);
    for key in expect.as_object().expect("an object").keys() {
        assert!(
            ["why", "answers", "apps", "known_failing", "whole_only"].contains(&key.as_str()),
            "{name}.expect: unknown key {key:?}"
        );
    }
    assert!(field("why").is_some_and(Value::is_string), "{name}: no why");
    let answers = field("answers")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| panic!("{name}.expect: no answers"))
        .iter()
        .map(|a| load_answer(&name, a))
        .collect();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("{name}.expect: apps is a list"))
            .iter()
            .map(|s| s.as_str().expect("an app name").to_string())
            .collect()
    };
    Case {
        raw,
        answers,
        apps: field("apps").map(strings),
        known_failing: field("known_failing").map(|v| v.as_str().unwrap().to_string()),
        whole_only: field("whole_only").map(|v| v.as_str().unwrap().to_string()),
        name,
    }
}

fn load_answer(name: &str, answer: &Value) -> Answer {
    let answer = answer
        .as_object()
        .unwrap_or_else(|| panic!("{name}.expect: an answer is an object"));
    for key in answer.keys() {
        assert!(
            ["status", "interim", "echo", "close", "head"].contains(&key.as_str()),
            "{name}.expect: unknown answer key {key:?}"
        );
    }
    let status = answer
        .get("status")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{name}.expect: an answer has a status")) as u16;
    Answer {
        status,
        interim: answer
            .get("interim")
            .map(|v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_u64().unwrap() as u16)
                    .collect()
            })
            .unwrap_or_default(),
        echo: answer
            .get("echo")
            .map(|e| e.as_object().expect("echo is an object").clone()),
        close: answer
            .get("close")
            .map(|c| c.as_bool().expect("close is true or false"))
            .unwrap_or(status >= 400),
        head: answer.get("head").is_some_and(|h| h == true),
    }
}

fn app_name(app: App) -> &'static str {
    match app {
        App::Native => "native",
        App::Wsgi => "wsgi",
    }
}

/// What came back on one connection.
struct Got {
    /// Each final answer, with the interim ones before it.
    answers: Vec<(Vec<u16>, Response)>,
    /// Interim answers not yet followed by a final one.
    interim: Vec<u16>,
}

impl Got {
    /// The server said it is closing: nothing more is read, or answered.
    fn closing(&self) -> bool {
        self.answers
            .last()
            .is_some_and(|(_, r)| r.connection_has("close"))
    }

    /// The final answers are in, or no more will come.
    fn complete(&self, expected: usize) -> bool {
        self.answers.len() >= expected || self.closing()
    }

    /// Read one answer off the connection.
    fn read(&mut self, conn: &mut Conn, case: &Case) -> Result<(), String> {
        let head = case.answers.get(self.answers.len()).is_some_and(|a| a.head);
        let response = conn
            .try_read_response(head)
            .map_err(|e| format!("no answer {}: {e}", self.answers.len() + 1))?;
        if (100..200).contains(&response.status) {
            self.interim.push(response.status);
        } else {
            self.answers
                .push((std::mem::take(&mut self.interim), response));
        }
        Ok(())
    }
}

/// Whether the server has sent something, or closed or reset the
/// connection: anything a read would return at once.
fn answer_waiting(conn: &Conn) -> bool {
    let stream = conn.tcp_stream();
    stream.set_nonblocking(true).expect("set_nonblocking");
    let waiting = match stream.peek(&mut [0u8; 1]) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).expect("set_nonblocking");
    waiting
}

/// Send a case one way, read what comes back, and check it.
fn run(app: App, addr: std::net::SocketAddr, case: &Case, feed: Feed) -> Result<(), String> {
    let mut conn = Conn::tcp(addr);
    let mut got = Got {
        answers: Vec::new(),
        interim: Vec::new(),
    };
    let mut sent = 0;
    for piece in feed.pieces(case.raw.len()) {
        if got.closing() {
            // The server answered for good: what is left is not read.
            break;
        }
        if conn.try_send(&case.raw[sent..sent + piece]).is_err() {
            // Closed by the server: its answer says why.
            break;
        }
        sent += piece;
        if matches!(feed, Feed::Whole) {
            continue;
        }
        // While the server has not answered for good it reads all that is
        // sent, and after a refusal it lingers, reading (for 2 s, far more
        // than it takes to see the refusal here), so this wait ends. After
        // an answer to a request it accepted and closes on, it may close at
        // once: cases with bytes after such a request are `whole_only`.
        conn.wait_until_server_read();
        while answer_waiting(&conn) && !got.complete(case.answers.len()) {
            got.read(&mut conn, case)?;
        }
    }
    while !got.complete(case.answers.len()) {
        got.read(&mut conn, case)?;
    }
    if got.answers.len() != case.answers.len() {
        return Err(format!(
            "{} answers where {} were expected; the last: {:?}",
            got.answers.len(),
            case.answers.len(),
            got.answers
                .last()
                .map(|(_, r)| String::from_utf8_lossy(&r.raw).into_owned())
        ));
    }
    for (i, (want, (interim, response))) in case.answers.iter().zip(&got.answers).enumerate() {
        check_answer(app, want, interim, response).map_err(|e| format!("answer {}: {e}", i + 1))?;
    }
    check_after(&mut conn, case.answers.last().unwrap())
}

fn check_answer(
    app: App,
    want: &Answer,
    interim: &[u16],
    response: &Response,
) -> Result<(), String> {
    let raw = || String::from_utf8_lossy(&response.raw).into_owned();
    if response.status != want.status {
        return Err(format!(
            "status {} instead of {}: {}",
            response.status,
            want.status,
            raw()
        ));
    }
    if !want.interim.starts_with(interim) {
        return Err(format!(
            "interim answers {interim:?} where {:?} or fewer were expected",
            want.interim
        ));
    }
    if response.connection_has("close") != want.close {
        return Err(format!(
            "Connection: close {} when it should {}be: {}",
            if want.close { "missing" } else { "present" },
            if want.close { "" } else { "not " },
            raw()
        ));
    }
    let Some(echo) = &want.echo else {
        return Ok(());
    };
    let got: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("the answer is no JSON ({e}): {}", raw()))?;
    for (key, want) in echo {
        let want = if key == "headers" {
            headers_for(app, want)
        } else {
            want.clone()
        };
        if got[key] != want {
            return Err(format!(
                "{key}: {} instead of {want}; the echo: {got}",
                got[key]
            ));
        }
    }
    Ok(())
}

/// The headers `/echo` must report for this application: a value is the
/// same for both, or `{"native": ..., "wsgi": ...}` with `null` for a
/// header the application does not see.
fn headers_for(app: App, want: &Value) -> Value {
    let mut out = Map::new();
    for (name, value) in want.as_object().expect("headers is an object") {
        let value = match value {
            Value::Object(per_app) => per_app.get(app_name(app)).cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        if !value.is_null() {
            out.insert(name.clone(), value);
        }
    }
    Value::Object(out)
}

/// After the last answer: a closing connection must end with nothing more;
/// an open one must answer the sentinel as itself.
fn check_after(conn: &mut Conn, last: &Answer) -> Result<(), String> {
    if last.close {
        let (rest, err) = conn.read_to_end();
        if !rest.is_empty() {
            return Err(format!(
                "bytes after the last answer: {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
        return match err {
            Some(e) if e.kind() != io::ErrorKind::ConnectionReset => {
                Err(format!("the connection did not close: {e}"))
            }
            _ => Ok(()),
        };
    }
    conn.try_send(SENTINEL)
        .map_err(|e| format!("the connection closed before the sentinel: {e}"))?;
    let response = conn
        .try_read_response(false)
        .map_err(|e| format!("no answer to the sentinel: {e}"))?;
    let echo: Option<Value> = serde_json::from_slice(&response.body).ok();
    let echo = echo.as_ref();
    let method = echo.and_then(|e| e["method"].as_str());
    let target = echo.and_then(|e| e["raw_uri"].as_str());
    if response.status != 200 || method != Some("GET") || target != Some("/echo?corpus-sentinel") {
        return Err(format!(
            "the sentinel was answered as another request (bytes of the case left \
             behind?): {}",
            String::from_utf8_lossy(&response.raw)
        ));
    }
    Ok(())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    format!("panicked: {text}")
}

/// A stable seed per case and split, so that a failure names it.
fn seed(name: &str, split: u64) -> u64 {
    name.bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
        .wrapping_add(split)
}

fn the_corpus_is_answered_as_expected(app: App) {
    let cases: Vec<Case> = load()
        .into_iter()
        .filter(|c| {
            c.apps
                .as_ref()
                .is_none_or(|apps| apps.iter().any(|a| a == app_name(app)))
        })
        .collect();
    assert!(
        !cases.is_empty(),
        "no corpus cases in {}",
        corpus_dir().display()
    );
    let server = app.start_with(SERVER_ARGS);
    let addr = server.addr();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let known = Mutex::new(BTreeMap::new());
    thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let splits = if case.whole_only.is_some() {
                        Vec::new()
                    } else {
                        let random = (1..=RANDOM_SPLITS).map(|n| Feed::Random(seed(&case.name, n)));
                        [Feed::Bytewise].into_iter().chain(random).collect()
                    };
                    let mut failed = Vec::new();
                    for feed in [Feed::Whole].into_iter().chain(splits) {
                        // A panic (a wait that never ended) is this run's
                        // failure, named, not the whole test's.
                        let outcome = panic::catch_unwind(|| run(app, addr, case, feed))
                            .unwrap_or_else(|e| Err(panic_message(&*e)));
                        if let Err(e) = outcome {
                            failed.push(format!("{}, {feed:?}: {e}", case.name));
                        }
                    }
                    if case.known_failing.is_some() {
                        known.lock().unwrap().insert(case.name.clone(), failed);
                    } else {
                        failures.lock().unwrap().extend(failed);
                    }
                }
            });
        }
    });
    // Known failures are reported, not failed on (the README says why),
    // straight to stderr so that a passing run shows them too.
    let mut report = String::new();
    for (name, failed) in known.into_inner().unwrap() {
        let case = cases.iter().find(|c| c.name == name).unwrap();
        let why = case.known_failing.as_deref().unwrap_or_default();
        if failed.is_empty() {
            report += &format!("corpus ({}): known failing {name} passed\n", app_name(app));
        } else {
            let first = failed[0].lines().next().unwrap_or_default();
            report += &format!(
                "corpus ({}): known failing {name}, {} of its runs ({why}); first: {first}\n",
                app_name(app),
                failed.len(),
            );
        }
    }
    let _ = io::stderr().write_all(report.as_bytes());
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} corpus runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The server survived all of it.
    server.get("/").assert_status(200);
}
