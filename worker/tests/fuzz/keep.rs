//! How every property runs, and what a failure leaves behind: proptest's
//! seed in `regressions/NAME.txt`, replayed first on every later run, and
//! the failing input itself, as raw bytes, in `failures/`, ready to become
//! a case of the corpus (`tests/corpus/` at the top of the workspace) once
//! someone writes down what the server should answer.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::path::PathBuf;

use proptest::test_runner::{
    Config, FailurePersistence, FileFailurePersistence, PersistedSeed, TestCaseError,
};

/// Inputs a property tries by default; `PROPTEST_CASES` asks for more in a
/// longer run by hand.
const CASES: u32 = 256;

/// The configuration of the properties in one file: `seeds` is where
/// proptest keeps the seeds of failures (a path under the crate), `name`
/// what the saved inputs are called.
pub fn config(seeds: &'static str, name: &'static str) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: Some(Box::new(KeepFailures { seeds, name })),
        ..Config::default()
    }
}

/// The path of a seeds file under this folder, as a `&'static str`.
macro_rules! seeds_file {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz/regressions/",
            $name,
            ".txt"
        )
    };
}
pub(crate) use seeds_file;

/// An input as it would be saved: raw bytes and the file extension saying
/// what they are (`http` for a request a corpus case can hold as it is).
#[derive(Clone)]
pub struct Saved {
    pub bytes: Vec<u8>,
    pub extension: &'static str,
}

thread_local! {
    /// The input of the last check that failed on this thread. Proptest
    /// runs a property's checks on the calling thread, and the value it
    /// shrinks to is the last one that failed.
    static LAST_FAILED: RefCell<Option<Saved>> = const { RefCell::new(None) };
}

/// Run `check` on an input, and remember the input if the check fails or
/// panics.
pub fn check<T>(
    input: impl FnOnce() -> Saved,
    check: impl FnOnce() -> Result<T, TestCaseError>,
) -> Result<T, TestCaseError> {
    struct OnPanic<F: FnOnce() -> Saved>(Option<F>);
    impl<F: FnOnce() -> Saved> Drop for OnPanic<F> {
        fn drop(&mut self) {
            if std::thread::panicking()
                && let Some(input) = self.0.take()
            {
                remember(input());
            }
        }
    }
    let mut guard = OnPanic(Some(input));
    let result = check();
    if result.is_err()
        && let Some(input) = guard.0.take()
    {
        remember(input());
    }
    result
}

fn remember(input: Saved) {
    LAST_FAILED.with(|last| *last.borrow_mut() = Some(input));
}

/// Proptest's own seed file, plus the failing input as a file of its own.
#[derive(Clone, Debug, PartialEq)]
struct KeepFailures {
    seeds: &'static str,
    name: &'static str,
}

impl KeepFailures {
    fn seed_file(&self) -> FileFailurePersistence {
        FileFailurePersistence::Direct(self.seeds)
    }
}

impl FailurePersistence for KeepFailures {
    fn load_persisted_failures2(&self, source_file: Option<&'static str>) -> Vec<PersistedSeed> {
        self.seed_file().load_persisted_failures2(source_file)
    }

    fn save_persisted_failure2(
        &mut self,
        source_file: Option<&'static str>,
        seed: PersistedSeed,
        shrunken_value: &dyn fmt::Debug,
    ) {
        self.seed_file()
            .save_persisted_failure2(source_file, seed, shrunken_value);
        let Some(input) = LAST_FAILED.with(|last| last.borrow_mut().take()) else {
            return;
        };
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/failures");
        let path = dir.join(format!(
            "{}-{:016x}.{}",
            self.name,
            fnv1a(&input.bytes),
            input.extension
        ));
        match fs::create_dir_all(&dir).and_then(|()| fs::write(&path, &input.bytes)) {
            Ok(()) => eprintln!("fuzz: the failing input is in {}", path.display()),
            Err(e) => eprintln!("fuzz: could not save the failing input: {e}"),
        }
    }

    fn box_clone(&self) -> Box<dyn FailurePersistence> {
        Box::new(self.clone())
    }

    fn eq(&self, other: &dyn FailurePersistence) -> bool {
        other.as_any().downcast_ref::<KeepFailures>() == Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A name for an input that stays the same from run to run.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bytes shown as a byte string literal in a failure's message, not as a
/// list of numbers.
#[derive(Clone, PartialEq, Eq)]
pub struct Raw(pub Vec<u8>);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}
