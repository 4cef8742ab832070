//! The test application in its two forms, both kept to one contract
//! (`shared/spec/testapp.md`): the native library and the WSGI callable
//! served through the Python bridge. The core suite is written once against
//! `App` and run against each (`test_each_app!`); other tests pick one.

use super::paths::{testapp, wsgi_testapp_dir};
use super::server::{Server, ServerBuilder};

/// Which form of the test application a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// `examples/testapp`, the dynamic library built by the workspace.
    Native,
    /// `examples/testapp/testapp_wsgi.py`, through `librgun_wsgi.so`.
    Wsgi,
}

impl App {
    /// How to start a server running this application: only the `APP`
    /// argument (and, for WSGI, `--chdir` to the module's folder) so far.
    pub fn builder(self) -> ServerBuilder {
        match self {
            App::Native => Server::builder(testapp()),
            App::Wsgi => Server::builder("testapp_wsgi:app")
                .arg("--chdir")
                .arg(wsgi_testapp_dir().to_str().unwrap()),
        }
    }

    /// This application, one worker, on 127.0.0.1 and a free port.
    pub fn start(self) -> Server {
        self.builder().start()
    }

    /// This application with extra arguments.
    pub fn start_with<I: IntoIterator<Item = S>, S: Into<String>>(self, args: I) -> Server {
        self.builder().args(args).start()
    }
}

/// Tests for functions written once as `fn NAME(app: App)`: `native::NAME`
/// calls `NAME(App::Native)` and `wsgi::NAME` calls `NAME(App::Wsgi)`. A
/// function missing from the list is never called, and the dead-code lint
/// says so (clippy runs with `-D warnings`).
macro_rules! test_each_app {
    ($($name:ident),+ $(,)?) => {
        mod native {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::harness::App::Native);
                }
            )+
        }

        mod wsgi {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::harness::App::Wsgi);
                }
            )+
        }
    };
}

pub(crate) use test_each_app;
