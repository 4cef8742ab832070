//! Gunicorn's settings, every one of them, and what rgun makes of each: its
//! own setting (often under the same name), a server hook, or a refusal
//! with the reason and what to use instead. The refused ones that Gunicorn
//! has a flag for become hidden flags here, so that `rgun --daemon` says
//! why rather than "unexpected argument".

use clap::{Arg, ArgAction, Command};

/// What rgun does with one Gunicorn setting.
#[derive(Clone, Copy, Debug)]
pub enum Map {
    /// rgun's setting with this id (its key in rgun.toml).
    Ours(&'static str),
    /// A server hook (a callable in gunicorn.conf.py).
    Hook,
    /// Not in rgun; the reason and what to use instead.
    Refused(&'static str),
    /// Only these values are accepted (they are what rgun does anyway);
    /// any other is refused with the reason.
    Only(&'static [&'static str], &'static str),
}

/// One Gunicorn setting: its name in gunicorn.conf.py, its flags, whether
/// the flag is a switch (takes no value).
pub struct Setting {
    pub name: &'static str,
    pub flags: &'static [&'static str],
    pub switch: bool,
    pub map: Map,
}

mod table;
pub use table::SETTINGS;

use Map::{Hook, Only, Ours, Refused};

/// The setting of this Gunicorn name.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The command with a hidden flag for every Gunicorn flag that rgun
/// refuses (or accepts only at one value), under Gunicorn's setting name.
pub fn augment(mut cmd: Command) -> Command {
    for setting in SETTINGS {
        if matches!(setting.map, Ours(_) | Hook) || setting.flags.is_empty() {
            continue;
        }
        let mut arg = Arg::new(setting.name).hide(true);
        for flag in setting.flags {
            arg = match flag.strip_prefix("--") {
                Some(long) if arg.get_long().is_none() => arg.long(long),
                Some(long) => arg.alias(long),
                None => arg.short(flag.chars().nth(1).unwrap_or('-')),
            };
        }
        arg = if setting.switch {
            arg.action(ArgAction::SetTrue)
        } else {
            arg.action(ArgAction::Set).value_name("VALUE")
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Why the value given to a hidden Gunicorn flag (its id a setting name)
/// is refused; `None` when it is one rgun accepts.
pub fn refusal(name: &str, value: &str) -> Option<&'static str> {
    match setting(name)?.map {
        Refused(why) => Some(why),
        Only(values, why) => (!values.contains(&value)).then_some(why),
        Ours(_) | Hook => None,
    }
}

/// `-k`: Gunicorn's worker classes that name rgun's model, by short name or
/// by class path.
const SYNC_CLASSES: &[&str] = &[
    "sync",
    "gunicorn.workers.sync.SyncWorker",
    "egg:gunicorn#sync",
];
const THREAD_CLASSES: &[&str] = &[
    "gthread",
    "gunicorn.workers.gthread.ThreadWorker",
    "egg:gunicorn#gthread",
];

/// `-k/--worker-class`: `sync` or `gthread` (kept as Gunicorn's short name);
/// any other class is refused with the reason.
pub fn parse_worker_class(text: &str) -> Result<String, String> {
    if SYNC_CLASSES.contains(&text) {
        return Ok("sync".into());
    }
    if THREAD_CLASSES.contains(&text) {
        return Ok("gthread".into());
    }
    let lower = text.to_ascii_lowercase();
    let why = if lower.contains("uvicorn") || lower.contains("asgi") {
        "not a WSGI worker: rgun serves WSGI (and native) applications; serve an ASGI application with uvicorn"
    } else if ["gevent", "eventlet", "tornado"]
        .iter()
        .any(|g| lower.contains(g))
    {
        "rgun has no green-thread worker: for applications that wait on I/O use `--threads N` (gthread)"
    } else {
        "unknown worker class: rgun has `sync` and `gthread` (with --threads)"
    };
    Err(why.to_string())
}

/// Gunicorn's "Using worker:" name for rgun's model: `gthread` when threads
/// run the application (as Gunicorn turns `sync` into `gthread` with
/// `--threads` above 1), else what `-k` said.
pub fn worker_class_name(class: &str, threads: usize) -> &str {
    if threads > 1 { "gthread" } else { class }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_classes() {
        assert_eq!(parse_worker_class("sync").unwrap(), "sync");
        assert_eq!(
            parse_worker_class("gunicorn.workers.gthread.ThreadWorker").unwrap(),
            "gthread"
        );
        assert!(
            parse_worker_class("uvicorn.workers.UvicornWorker")
                .unwrap_err()
                .contains("not a WSGI worker")
        );
        assert!(
            parse_worker_class("gevent")
                .unwrap_err()
                .contains("--threads")
        );
        assert_eq!(worker_class_name("sync", 4), "gthread");
        assert_eq!(worker_class_name("gthread", 1), "gthread");
    }

    #[test]
    fn every_setting_is_listed_once_and_maps_to_a_known_id() {
        let cmd = crate::config::command();
        for (i, setting) in SETTINGS.iter().enumerate() {
            assert!(
                !SETTINGS[..i].iter().any(|s| s.name == setting.name),
                "{} twice",
                setting.name
            );
            // A flag of Gunicorn's is an argument here, or belongs to
            // another part of issue 11 (merged separately).
            for flag in setting.flags.iter().filter_map(|f| f.strip_prefix("--")) {
                let known = cmd.get_arguments().any(|a| {
                    a.get_long() == Some(flag)
                        || a.get_all_aliases().into_iter().flatten().any(|l| l == flag)
                });
                let elsewhere = ["access-logformat", "proxy-protocol", "proxy-allow-from"];
                assert!(known || elsewhere.contains(&flag), "--{flag}");
            }
        }
    }

    /// Each setting rgun has names an argument id of the command; the ones
    /// another part of issue 11 adds must get these ids once their flag is
    /// there (this fails after a merge that named them otherwise).
    #[test]
    fn every_mapped_setting_is_an_argument() {
        let cmd = crate::config::command();
        for setting in SETTINGS {
            let Ours(id) = setting.map else { continue };
            let has_id = cmd.get_arguments().any(|a| a.get_id() == id);
            let has_flag = setting
                .flags
                .iter()
                .filter_map(|f| f.strip_prefix("--"))
                .any(|flag| {
                    cmd.get_arguments().any(|a| {
                        a.get_long() == Some(flag)
                            || a.get_all_aliases().into_iter().flatten().any(|l| l == flag)
                    })
                });
            assert!(
                has_id || !has_flag,
                "{} maps to `{id}`, which --{:?} is not",
                setting.name,
                setting.flags
            );
            let elsewhere = ["access_logformat", "proxy_protocol", "proxy_allow_from"];
            assert!(
                has_id || elsewhere.contains(&id),
                "{}: no argument `{id}`",
                setting.name
            );
        }
    }

    #[test]
    fn refusals() {
        assert!(refusal("daemon", "true").unwrap().contains("systemd"));
        assert_eq!(refusal("protocol", "http"), None);
        assert!(refusal("protocol", "uwsgi").is_some());
        assert_eq!(refusal("workers", "3"), None);
    }
}
