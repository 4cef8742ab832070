//! `rgun.toml`: one key per setting, named as the flag's id (`max_requests`
//! for `--max-requests`), with `app` for the application. A key rgun does
//! not know, a value of the wrong type, or a file that is not TOML is
//! refused with the file, the line and the key, and the nearest key name.

use std::path::Path;

use clap::{Arg, Command};
use toml::de::{DeTable, DeValue};

use super::{
    FileSettings, FileValue, Kind, LoadError, NOT_KEYS, gunicorn, kind, place, setting_args,
};

/// The furthest (in edits) a misspelt key may be from the one suggested.
const MAX_SUGGESTION_DISTANCE: usize = 3;

pub(super) fn read(path: &Path, cmd: &Command) -> Result<FileSettings, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadError::Invalid(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    let line_of = |offset: usize| {
        let before = &text.as_bytes()[..offset.min(text.len())];
        Some(before.iter().filter(|&&b| b == b'\n').count() + 1)
    };
    let table = DeTable::parse(&text).map_err(|e| {
        let line = e.span().and_then(|s| line_of(s.start));
        let message = e.message().lines().next().unwrap_or("not TOML").to_string();
        LoadError::Invalid(format!("{}: not TOML: {message}", place(path, line)))
    })?;
    let mut settings = FileSettings::default();
    for (key, value) in table.get_ref() {
        let name = key.get_ref().as_ref();
        let line = line_of(key.span().start);
        let Some(arg) = setting(cmd, name) else {
            return Err(LoadError::Invalid(format!(
                "{}: unknown key `{name}`{}",
                place(path, line),
                suggestion(cmd, name)
            )));
        };
        let values = words(arg, value.get_ref()).map_err(|expected| {
            LoadError::Invalid(format!(
                "{}: `{name}` must be {expected}, not {}",
                place(path, line),
                type_name(value.get_ref())
            ))
        })?;
        settings
            .values
            .insert(arg.get_id().to_string(), FileValue { values, line });
    }
    Ok(settings)
}

/// The setting a key names: an argument of the command, other than the
/// actions, by its id or by its flag's name with underscores (`pid` for
/// `--pid`, whose id is `pidfile`; `log_file` for `--log-file`).
fn setting<'c>(cmd: &'c Command, key: &str) -> Option<&'c Arg> {
    setting_args(cmd)
        .filter(|a| !NOT_KEYS.contains(&a.get_id().as_str()))
        .find(|a| {
            a.get_id() == key
                || a.get_long()
                    .into_iter()
                    .chain(a.get_all_aliases().into_iter().flatten())
                    .any(|long| long.replace('-', "_") == key)
        })
}

/// `; did you mean `workers`?`, or Gunicorn's name's rgun key.
fn suggestion(cmd: &Command, key: &str) -> String {
    if let Some(gunicorn::Map::Ours(ours)) = gunicorn::setting(key).map(|s| s.map)
        && ours != key
    {
        return format!(" (Gunicorn's name): rgun.toml calls it `{ours}`");
    }
    setting_args(cmd)
        .filter(|a| !a.is_hide_set() && !NOT_KEYS.contains(&a.get_id().as_str()))
        .map(|a| a.get_id().as_str())
        .map(|id| (strsim::levenshtein(key, id), id))
        .filter(|(distance, _)| *distance <= MAX_SUGGESTION_DISTANCE)
        .min()
        .map(|(_, id)| format!("; did you mean `{id}`?"))
        .unwrap_or_default()
}

/// A TOML value as the words of the flag; `Err`: what the key takes.
fn words(arg: &Arg, value: &DeValue<'_>) -> Result<Vec<String>, &'static str> {
    match (kind(arg), value) {
        (Kind::Switch, DeValue::Boolean(b)) => Ok(vec![b.to_string()]),
        (Kind::Switch, _) => Err("true or false"),
        (Kind::List, DeValue::Array(items)) => items
            .iter()
            .map(|item| scalar(arg, item.get_ref()))
            .collect::<Option<Vec<_>>>()
            .ok_or("an array of strings"),
        (Kind::List | Kind::One, value) => {
            scalar(arg, value)
                .map(|v| vec![v])
                .ok_or(if super::is_integer(arg) {
                    "an integer"
                } else {
                    "a string"
                })
        }
    }
}

/// A string or an integer as one word. `umask = 0o022` is a number, which
/// the flag reads in octal.
fn scalar(arg: &Arg, value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()?;
            Some(if arg.get_id() == "umask" {
                if n == 0 {
                    "0".into()
                } else {
                    format!("0{n:o}")
                }
            } else {
                n.to_string()
            })
        }
        _ => None,
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
