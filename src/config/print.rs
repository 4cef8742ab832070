//! `--print-config`: the effective configuration as rgun.toml, each value
//! followed by where it came from.

use std::fmt::Write;

use super::{Kind, Loaded, NOT_KEYS, command, is_integer, kind, raw_values, setting_args};

/// The effective configuration as TOML text.
pub fn print(loaded: &Loaded) -> String {
    let cmd = command();
    let mut out = String::from(
        "# rgun's effective configuration (rgun.toml format); after each value, where it came from\n",
    );
    if let Some(file) = &loaded.file {
        let _ = writeln!(out, "# configuration file: {}", file.path().display());
    }
    if let Some(path) = &loaded.python_config {
        let _ = writeln!(
            out,
            "# python_config: {} (server hooks: {})",
            path.display(),
            if loaded.hooks.is_empty() {
                "none".to_string()
            } else {
                loaded.hooks.join(", ")
            }
        );
    }
    for arg in setting_args(&cmd) {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || NOT_KEYS.contains(&id) {
            continue;
        }
        let source = loaded.source(id);
        let raw = raw_values(&loaded.matches, id);
        let value = match kind(arg) {
            Kind::Switch => Some(toml::Value::Boolean(loaded.matches.get_flag(id))),
            Kind::List => Some(toml::Value::Array(
                raw.into_iter().map(toml::Value::String).collect(),
            )),
            Kind::One => raw.into_iter().next().map(|v| scalar(arg, v)),
        };
        let _ = match value {
            Some(value) => writeln!(out, "{id} = {value}  # {source}"),
            None => writeln!(out, "# {id}: not set  # {source}"),
        };
    }
    out
}

/// An integer setting as a TOML integer, unless leading zeros say it is
/// octal (`umask = "022"`).
fn scalar(arg: &clap::Arg, value: String) -> toml::Value {
    match value.parse::<i64>() {
        Ok(n) if is_integer(arg) && (value == "0" || !value.starts_with('0')) => {
            toml::Value::Integer(n)
        }
        _ => toml::Value::String(value),
    }
}
