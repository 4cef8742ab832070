//! `wsgi.errors`: a text stream whose lines go to rgun's error log (one log
//! line per written line, as Gunicorn does). One stream serves every
//! request of the worker; a partial line waits for its end or a flush.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::logging;

#[pyclass(frozen, module = "rgun", name = "ErrorStream")]
#[derive(Default)]
pub(crate) struct ErrorStream {
    pending: Mutex<String>,
}

impl ErrorStream {
    fn log_lines(&self, text: &str, flush: bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push_str(text);
        while let Some(end) = pending.find('\n') {
            logging::error(&pending[..end]);
            pending.drain(..=end);
        }
        if flush && !pending.is_empty() {
            logging::error(&pending);
            pending.clear();
        }
    }
}

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &str) -> usize {
        self.log_lines(text, false);
        text.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.log_lines(&line?.extract::<String>()?, false);
        }
        Ok(())
    }

    fn flush(&self) {
        self.log_lines("", true);
    }

    fn writable(&self) -> bool {
        true
    }
}
