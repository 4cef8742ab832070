//! `gunicorn.conf.py`: evaluated as Gunicorn does, by the Python the
//! application runs on, in a short-lived subprocess (the master never runs
//! Python), which prints the settings as JSON. Each Gunicorn setting maps
//! onto rgun's; one rgun does not have is named in a warning line, never
//! silently dropped. Callables named as server hooks are listed for the
//! hooks runner; this module does not run them.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command as Process, Stdio};

use clap::{Arg, Command};
use serde::Deserialize;
use serde_json::Value;

use super::gunicorn::{self, Map};
use super::{FileSettings, FileValue, Kind, LoadError, Note, kind, place};

/// The script that evaluates the file (run with `python -c`).
const SCRIPT: &str = include_str!("gunicorn_conf.py");
pub use crate::python::PYTHON_ENV;

/// What the script prints.
#[derive(Deserialize)]
struct Evaluated {
    settings: serde_json::Map<String, Value>,
    hooks: Vec<String>,
    opaque: Vec<String>,
    lines: std::collections::HashMap<String, usize>,
}

pub(super) fn read(path: &Path, cmd: &Command) -> Result<FileSettings, LoadError> {
    let evaluated = evaluate(path)?;
    let mut settings = FileSettings::default();
    for name in &evaluated.hooks {
        match gunicorn::setting(name).map(|s| s.map) {
            Some(Map::Hook) => settings.hooks.push(name.clone()),
            Some(Map::Refused(why) | Map::Only(_, why)) => {
                settings.notes.push(Note::Warning(format!(
                    "{}: `{name}`: not supported, ignored: {why}",
                    place(path, evaluated.lines.get(name).copied())
                )))
            }
            _ => {}
        }
    }
    for name in &evaluated.opaque {
        if gunicorn::setting(name).is_some() {
            settings.notes.push(Note::Warning(format!(
                "{}: `{name}`: not a plain value (a string, a number, a list), ignored",
                place(path, evaluated.lines.get(name).copied())
            )));
        }
    }
    for (name, value) in &evaluated.settings {
        let line = evaluated.lines.get(name).copied();
        let Some(setting) = gunicorn::setting(name) else {
            // Like Gunicorn: a name that is no setting is the file's own.
            continue;
        };
        let why = match setting.map {
            Map::Ours(id) => match cmd.get_arguments().find(|a| a.get_id() == id) {
                Some(arg) => {
                    if let Some(values) = words(name, arg, value) {
                        settings
                            .values
                            .insert(id.to_string(), FileValue { values, line });
                    }
                    continue;
                }
                None => "this rgun has no such setting",
            },
            Map::Hook => "a server hook must be a function",
            Map::Refused(why) => why,
            Map::Only(values, why) => {
                if value.as_str().is_some_and(|v| values.contains(&v))
                    || value == &Value::Bool(true) && values.contains(&"true")
                {
                    continue;
                }
                why
            }
        };
        settings.notes.push(Note::Warning(format!(
            "{}: `{name}`: not supported, ignored: {why}",
            place(path, line)
        )));
    }
    Ok(settings)
}

/// Run the script on the file; its error (a traceback's last line) is
/// the one line reported.
/// The longest a `gunicorn.conf.py` may take to evaluate (Gunicorn's
/// `timeout`): the master waits for it, at start and on `HUP`.
const EVALUATION_TIMEOUT_SECS: u64 = 30;

fn evaluate(path: &Path) -> Result<Evaluated, LoadError> {
    // The application's Python, the one that runs the file's hooks too.
    let python = crate::python::interpreter();
    let names: Vec<&str> = gunicorn::SETTINGS.iter().map(|s| s.name).collect();
    let output = Process::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(path)
        .arg(names.join(","))
        .arg(EVALUATION_TIMEOUT_SECS.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            LoadError::Invalid(format!(
                "cannot run {} to read {}: {e} (name the application's Python in {PYTHON_ENV})",
                python.display(),
                path.display()
            ))
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.signal() == Some(libc::SIGALRM) {
        return Err(LoadError::Invalid(format!(
            "{}: {} did not finish evaluating it within {EVALUATION_TIMEOUT_SECS} s",
            path.display(),
            python.display(),
        )));
    }
    if !output.status.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(LoadError::Invalid(format!(
            "{}: cannot evaluate it with {}: {}",
            path.display(),
            python.display(),
            last.trim()
        )));
    }
    // What the file itself printed.
    eprint!("{stderr}");
    serde_json::from_slice(&output.stdout).map_err(|e| {
        LoadError::Invalid(format!(
            "{}: unexpected output from {}: {e}",
            path.display(),
            python.display()
        ))
    })
}

/// A Gunicorn value as the words of rgun's flag; `None`: unset.
fn words(name: &str, arg: &Arg, value: &Value) -> Option<Vec<String>> {
    match (kind(arg), value) {
        (_, Value::Null) => None,
        // Gunicorn's `sendfile = False` is rgun's `--no-sendfile`.
        (Kind::Switch, Value::Bool(b)) if name == "sendfile" => Some(vec![(!b).to_string()]),
        (Kind::Switch, value) => Some(vec![truthy(value).to_string()]),
        (Kind::List, Value::Array(items)) => Some(items.iter().map(|v| scalar(arg, v)).collect()),
        (Kind::One, Value::Array(items)) => Some(vec![
            items
                .iter()
                .map(|v| scalar(arg, v))
                .collect::<Vec<_>>()
                .join(","),
        ]),
        (_, value) => Some(vec![scalar(arg, value)]),
    }
}

/// Python's truth of a plain value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn scalar(arg: &Arg, value: &Value) -> String {
    match value {
        Value::String(s) if arg.get_id() == "log_level" => s.to_lowercase(),
        Value::String(s) => s.clone(),
        Value::Number(n) if arg.get_id() == "umask" => n
            .as_u64()
            .map(|n| format!("0{n:o}"))
            .unwrap_or_else(|| n.to_string()),
        // 30.0 is 30 (Gunicorn's timeouts are numbers).
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && n.as_i64().is_none() => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}
