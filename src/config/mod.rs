//! The effective configuration: the command line over `RGUN_CMD_ARGS` over
//! `GUNICORN_CMD_ARGS` over a file (`rgun.toml`, or Gunicorn's
//! `gunicorn.conf.py`) over the defaults (and the environment variables
//! some flags read, such as `WEB_CONCURRENCY`).
//!
//! The clap definition (`crate::cli::Cli`) is the one list of settings: a
//! file's keys are clap's argument ids (the field names), so a new flag is a
//! new key with nothing else to write. Every layer is turned back into
//! command-line words and the winner of each setting is parsed once more by
//! clap, so that a value from a file goes through the same parser, and the
//! same checks, as the flag would. Nothing here starts the server.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;

pub mod check;
pub mod extras;
mod file;
pub mod gunicorn;
mod print;
mod python;
pub mod reload;

pub use print::print;

/// Read like a command line, below it (rgun's own variable).
pub const RGUN_CMD_ARGS: &str = "RGUN_CMD_ARGS";
/// Gunicorn's variable, read as Gunicorn does, below `RGUN_CMD_ARGS`.
pub const GUNICORN_CMD_ARGS: &str = "GUNICORN_CMD_ARGS";
/// The files read without `-c`, in this order (Gunicorn reads the second).
pub const DEFAULT_FILES: [&str; 2] = ["rgun.toml", "gunicorn.conf.py"];
/// Flags that are actions, not settings: no key in a file.
const NOT_KEYS: [&str; 3] = ["config", "check_config", "print_config"];

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    /// An environment variable the flag reads itself (`WEB_CONCURRENCY`).
    Environment(String),
    File {
        path: PathBuf,
        line: Option<usize>,
    },
    GunicornCmdArgs,
    RgunCmdArgs,
    CommandLine,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::Environment(var) => write!(f, "environment: {var}"),
            Source::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            Source::File { path, line: None } => write!(f, "{}", path.display()),
            Source::GunicornCmdArgs => write!(f, "{GUNICORN_CMD_ARGS}"),
            Source::RgunCmdArgs => write!(f, "{RGUN_CMD_ARGS}"),
            Source::CommandLine => write!(f, "command line"),
        }
    }
}

/// The file settings were read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    Toml(PathBuf),
    /// Gunicorn's Python configuration, evaluated by a Python subprocess.
    Python(PathBuf),
}

impl ConfigFile {
    pub fn path(&self) -> &Path {
        match self {
            ConfigFile::Toml(path) | ConfigFile::Python(path) => path,
        }
    }
}

/// A line to log once the error log is open.
#[derive(Clone, Debug)]
pub enum Note {
    Info(String),
    Warning(String),
}

/// The configuration, with where each value came from.
pub struct Loaded {
    pub cli: Cli,
    pub file: Option<ConfigFile>,
    /// The `.py` file whose server hooks run (the hooks' own flag may set
    /// it too); `None` without one.
    pub python_config: Option<PathBuf>,
    /// Names of the server hooks the `.py` file defines.
    pub hooks: Vec<String>,
    pub notes: Vec<Note>,
    sources: BTreeMap<String, Source>,
    matches: ArgMatches,
}

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The command line itself (including --help and --version): clap
    /// prints it.
    Usage(clap::Error),
    /// One line naming the file, line and key, or the variable.
    Invalid(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Usage(e) => write!(f, "{}", one_line(e)),
            LoadError::Invalid(line) => write!(f, "{line}"),
        }
    }
}

/// A clap error as one line: its first, without the `error: ` prefix, and
/// the list of possible values when clap gives one.
pub fn one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| {
        !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
    });
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    for more in lines {
        if more.starts_with("[possible values") {
            line.push(' ');
            line.push_str(more);
        }
    }
    line
}

/// The full command: `Cli`, the Gunicorn flags rgun refuses (hidden), and
/// Gunicorn's `-v` for the version.
pub fn command() -> Command {
    // A flag given twice: the last one counts, as in Gunicorn (argparse).
    gunicorn::augment(Cli::command())
        .args_override_self(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .short('v')
                .short_alias('V')
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version"),
        )
}

/// The command every layer is read with: APP may come from the file.
fn layer_command() -> Command {
    command().mut_arg("app", |a| a.required(false))
}

/// The arguments that are settings: not --help, not --version.
fn setting_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        !matches!(
            a.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
    })
}

/// How a setting is written on a command line and in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A switch: `true` or `false` in a file.
    Switch,
    /// Repeatable: an array (or one string) in a file.
    List,
    /// One value: a string, or an integer.
    One,
}

fn kind(arg: &Arg) -> Kind {
    match arg.get_action() {
        action if !action.takes_values() => Kind::Switch,
        ArgAction::Append => Kind::List,
        _ => Kind::One,
    }
}

/// Whether the setting's values are integers (written as TOML integers).
fn is_integer(arg: &Arg) -> bool {
    use std::any::TypeId;
    let id = arg.get_value_parser().type_id();
    [
        TypeId::of::<usize>(),
        TypeId::of::<u64>(),
        TypeId::of::<u32>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
    ]
    .iter()
    .any(|t| id == *t)
}

/// One setting's value from a file, as command-line words.
#[derive(Clone, Debug)]
pub(crate) struct FileValue {
    pub values: Vec<String>,
    pub line: Option<usize>,
}

/// What a file set, by setting id.
#[derive(Default)]
pub(crate) struct FileSettings {
    pub values: BTreeMap<String, FileValue>,
    pub hooks: Vec<String>,
    pub notes: Vec<Note>,
}

/// Load the configuration from `args` (the program's name first) and the
/// environment.
pub fn load(args: &[OsString]) -> Result<Loaded, LoadError> {
    let cmd = layer_command();
    let line = cmd
        .clone()
        .try_get_matches_from(args)
        .map_err(LoadError::Usage)?;
    let mut layers = vec![(Source::CommandLine, line)];
    for (var, source) in [
        (RGUN_CMD_ARGS, Source::RgunCmdArgs),
        (GUNICORN_CMD_ARGS, Source::GunicornCmdArgs),
    ] {
        if let Some(matches) = env_layer(&cmd, var)? {
            layers.push((source, matches));
        }
    }
    let explicit_file = layers.iter().find_map(|(_, m)| {
        given(m, "config")
            .then(|| m.get_one::<PathBuf>("config").cloned())
            .flatten()
    });
    let mut notes = Vec::new();
    let file = match explicit_file {
        Some(path) => Some(config_file(path)?),
        None => DEFAULT_FILES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .map(config_file)
            .transpose()?,
    };
    let settings = match &file {
        Some(file) => {
            notes.push(Note::Info(format!(
                "Reading the configuration from {}",
                file.path().display()
            )));
            read(file, &cmd)?
        }
        None => FileSettings::default(),
    };
    notes.extend(settings.notes.iter().cloned());
    merge(&cmd, &layers, file, settings, notes)
}

/// A file named by `-c`: by its extension, TOML or Gunicorn's Python.
fn config_file(path: PathBuf) -> Result<ConfigFile, LoadError> {
    if !path.is_file() {
        return Err(LoadError::Invalid(format!(
            "the configuration file {} does not exist",
            path.display()
        )));
    }
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("py") => ConfigFile::Python(path),
        _ => ConfigFile::Toml(path),
    })
}

fn read(file: &ConfigFile, cmd: &Command) -> Result<FileSettings, LoadError> {
    let settings = match file {
        ConfigFile::Toml(path) => file::read(path, cmd)?,
        ConfigFile::Python(path) => python::read(path, cmd)?,
    };
    for (id, value) in &settings.values {
        validate(cmd, file.path(), id, value)?;
    }
    Ok(settings)
}

/// Whether the layer gave this setting itself (not a default, not an
/// environment variable of the flag's own).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.value_source(id), Some(ValueSource::CommandLine))
}

/// `RGUN_CMD_ARGS` or `GUNICORN_CMD_ARGS`, split as a shell would.
fn env_layer(cmd: &Command, var: &str) -> Result<Option<ArgMatches>, LoadError> {
    let Some(text) = std::env::var_os(var).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let text = text.to_string_lossy();
    let words = shlex::split(&text)
        .ok_or_else(|| LoadError::Invalid(format!("{var}: unbalanced quotes in {text:?}")))?;
    let argv = std::iter::once("rgun".to_string()).chain(words);
    cmd.clone()
        .try_get_matches_from(argv)
        .map(Some)
        .map_err(|e| LoadError::Invalid(format!("{var}: {}", one_line(&e))))
}

/// The command-line words that set `arg` to `values`.
fn words(arg: &Arg, values: &[String], words: &mut Vec<OsString>) {
    let Some(long) = arg.get_long() else {
        return;
    };
    match kind(arg) {
        Kind::Switch => {
            if values.first().is_some_and(|v| v == "true") {
                words.push(format!("--{long}").into());
            }
        }
        Kind::List | Kind::One => {
            for value in values {
                words.push(format!("--{long}={value}").into());
            }
        }
    }
}

/// A value from a file, parsed by the flag's own parser: an error names the
/// file, the line and the key.
fn validate(cmd: &Command, path: &Path, id: &str, value: &FileValue) -> Result<(), LoadError> {
    let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == id) else {
        return Ok(());
    };
    let mut argv: Vec<OsString> = vec!["rgun".into()];
    if arg.is_positional() {
        argv.push("--".into());
        argv.extend(value.values.iter().map(OsString::from));
    } else {
        words(arg, &value.values, &mut argv);
    }
    cmd.clone()
        .try_get_matches_from(argv)
        .map(drop)
        .map_err(|e| {
            LoadError::Invalid(format!(
                "{}: `{id}`: {}",
                place(path, value.line),
                one_line(&e)
            ))
        })
}

/// `rgun.toml:3` or `gunicorn.conf.py`.
pub(crate) fn place(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// Each setting from the highest layer that has it, parsed once more.
fn merge(
    cmd: &Command,
    layers: &[(Source, ArgMatches)],
    file: Option<ConfigFile>,
    settings: FileSettings,
    notes: Vec<Note>,
) -> Result<Loaded, LoadError> {
    let file_path = file.as_ref().map(|f| f.path().to_path_buf());
    let mut argv: Vec<OsString> = vec!["rgun".into()];
    let mut app: Option<String> = None;
    let mut sources = BTreeMap::new();
    for arg in setting_args(cmd) {
        let id = arg.get_id().as_str();
        let chosen = layers
            .iter()
            .find(|(_, m)| given(m, id))
            .map(|(source, m)| (source.clone(), raw_values(m, id)))
            .or_else(|| {
                settings.values.get(id).map(|v| {
                    let path = file_path.clone().unwrap_or_default();
                    (Source::File { path, line: v.line }, v.values.clone())
                })
            });
        let source = match chosen {
            Some((source, values)) => {
                if arg.is_positional() {
                    app = values.into_iter().next();
                } else {
                    words(arg, &values, &mut argv);
                }
                source
            }
            None => match layers[0].1.value_source(id) {
                Some(ValueSource::EnvVariable) => Source::Environment(
                    arg.get_env()
                        .map(|v| v.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => Source::Default,
            },
        };
        sources.insert(id.to_string(), source);
    }
    let Some(app) = app else {
        return Err(LoadError::Invalid(
            "no application: give APP on the command line, or `app` in the configuration file (`wsgi_app` in gunicorn.conf.py)".into(),
        ));
    };
    argv.push("--".into());
    argv.push(app.into());
    let matches = command()
        .try_get_matches_from(argv)
        .map_err(|e| LoadError::Invalid(one_line(&e)))?;
    refuse_gunicorn_only(cmd, &matches, &sources)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| LoadError::Invalid(one_line(&e)))?;
    // A gunicorn.conf.py with server hooks runs them (the hidden
    // --python-hooks names another file instead).
    if let Some(ConfigFile::Python(path)) = &file
        && !settings.hooks.is_empty()
        && cli.python_hooks.is_none()
    {
        cli.python_hooks = Some(path.clone());
    }
    let python_config = cli.python_hooks.clone().or(match &file {
        Some(ConfigFile::Python(path)) => Some(path.clone()),
        _ => None,
    });
    Ok(Loaded {
        cli,
        file,
        python_config,
        hooks: settings.hooks,
        notes,
        sources,
        matches,
    })
}

fn raw_values(matches: &ArgMatches, id: &str) -> Vec<String> {
    matches
        .get_raw(id)
        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// A Gunicorn flag rgun does not have (a hidden one), given anywhere: one
/// line with the reason and what to use instead.
fn refuse_gunicorn_only(
    cmd: &Command,
    matches: &ArgMatches,
    sources: &BTreeMap<String, Source>,
) -> Result<(), LoadError> {
    for arg in setting_args(cmd).filter(|a| a.is_hide_set()) {
        let id = arg.get_id().as_str();
        let Some(source) = sources.get(id).filter(|s| **s != Source::Default) else {
            continue;
        };
        let value = raw_values(matches, id)
            .into_iter()
            .next()
            .unwrap_or_default();
        if let Some(why) = gunicorn::refusal(id, &value) {
            let name = match source {
                Source::File { .. } => format!("`{id}`"),
                _ => format!("--{}", arg.get_long().unwrap_or(id)),
            };
            return Err(LoadError::Invalid(format!("{source}: {name}: {why}")));
        }
    }
    Ok(())
}

impl Loaded {
    /// Where this setting's value came from.
    pub fn source(&self, id: &str) -> &Source {
        self.sources.get(id).unwrap_or(&Source::Default)
    }

    /// Log what loading found, once the error log is open.
    pub fn log_notes(&self) {
        for note in &self.notes {
            match note {
                Note::Info(line) => log::info!("{line}"),
                Note::Warning(line) => log::warn!("{line}"),
            }
        }
        for line in noop_notes(&self.cli) {
            log::info!("{line}");
        }
    }
}

/// Gunicorn flags that rgun accepts with nothing to do: said once.
fn noop_notes(cli: &Cli) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(dir) = &cli.worker_tmp_dir {
        lines.push(format!(
            "--worker-tmp-dir {}: nothing to do: rgun's workers report to the master through shared memory, not a file",
            dir.display()
        ));
    }
    if cli.no_sendfile {
        lines.push("--no-sendfile: nothing to do: rgun sends file responses with sendfile(2), which needs no switch behind a proxy".into());
    }
    if cli.initgroups {
        lines.push(
            "--initgroups: rgun always sets the workers' supplementary groups for --user".into(),
        );
    }
    if cli.enable_stdio_inheritance {
        lines.push("--enable-stdio-inheritance: rgun never daemonizes; standard input and output are always kept".into());
    }
    if cli.reload_engine != "auto" {
        lines.push(format!(
            "--reload-engine {}: rgun's --reload has one watcher of its own",
            cli.reload_engine
        ));
    }
    lines
}
