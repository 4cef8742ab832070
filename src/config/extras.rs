//! `rgun completions SHELL` and `rgun man`: generated from the clap
//! definition. They are words in APP's place rather than subcommands, so
//! that `rgun APP` stays what it is: an application cannot be called
//! `completions` or `man` (a Python module of that name is `man:app`).

use std::ffi::OsString;
use std::io::Write;

use clap_complete::Shell;

/// Handle `completions`/`man` as the first argument; `None`: neither.
pub fn run(args: &[OsString]) -> Option<u8> {
    let first = args.get(1)?.to_str()?;
    let mut out = std::io::stdout().lock();
    match first {
        "completions" => {
            let shell = args.get(2).and_then(|s| s.to_str());
            let Some(shell) = shell.and_then(|s| s.parse::<Shell>().ok()) else {
                eprintln!(
                    "rgun: completions: name a shell: bash, zsh, fish, elvish or powershell (got {shell:?})"
                );
                return Some(2);
            };
            clap_complete::generate(shell, &mut super::command(), "rgun", &mut out);
        }
        "man" => {
            if let Err(e) = clap_mangen::Man::new(super::command()).render(&mut out) {
                eprintln!("rgun: man: cannot write the page: {e}");
                return Some(1);
            }
        }
        _ => return None,
    }
    let _ = out.flush();
    Some(0)
}
