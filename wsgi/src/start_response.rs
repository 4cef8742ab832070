//! `start_response` and the `write` callable it returns (PEP 3333). The
//! status and headers are checked here, by the same grammar the server
//! checks them with again (`rgun_gateway::grammar`), so that a bad one
//! raises in the application where it was given, as in Gunicorn, instead of
//! becoming a bare 500 later. They are kept as latin-1 bytes in the
//! request's `Exchange` until the first body byte; `exc_info` replaces them
//! before that and re-raises after.

use std::sync::{Arc, OnceLock};

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::string::PyStringData;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use rgun_gateway::grammar;

use crate::exchange::{Exchange, Head, HeadState, SendError};

/// The `start_response` callable of a request.
#[pyclass(frozen, module = "rgun", name = "StartResponse")]
pub(crate) struct StartResponse {
    ex: Arc<Exchange>,
    /// The `write` callable, made once and handed out on every call.
    write: OnceLock<Py<Write>>,
}

impl StartResponse {
    pub fn new(ex: Arc<Exchange>) -> StartResponse {
        StartResponse {
            ex,
            write: OnceLock::new(),
        }
    }

    /// Whether nothing outside holds this object's `write` callable.
    pub fn write_unshared(&self) -> bool {
        self.write.get().is_none_or(|w| crate::refcount(w) == 1)
    }

    fn writer(&self, py: Python<'_>) -> PyResult<Py<Write>> {
        if let Some(w) = self.write.get() {
            return Ok(w.clone_ref(py));
        }
        let w = Py::new(
            py,
            Write {
                ex: Arc::clone(&self.ex),
            },
        )?;
        let _ = self.write.set(w.clone_ref(py));
        Ok(w)
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Write>> {
        self.ex.check()?;
        let exc_info = exc_info.filter(|e| !e.is_none());
        match (self.ex.state.get(), exc_info) {
            (HeadState::Sent, Some(info)) => return Err(reraise(info)),
            (HeadState::Set | HeadState::Sent, None) => {
                return Err(PyAssertionError::new_err(
                    "start_response() called again without exc_info",
                ));
            }
            _ => {}
        }
        // Parsed outside the cell: reading the headers may run Python code.
        let mut head = std::mem::take(&mut *self.ex.head.borrow_mut());
        head.clear();
        let parsed = parse_head(&mut head, status, headers);
        *self.ex.head.borrow_mut() = head;
        match parsed {
            Ok(()) => self.ex.state.set(HeadState::Set),
            Err(e) => {
                self.ex.state.set(HeadState::Unset);
                return Err(e);
            }
        }
        self.writer(py)
    }
}

/// PEP 3333: with exc_info after the head went out, raise the exception.
fn reraise(info: &Bound<'_, PyAny>) -> PyErr {
    let value = info.get_item(1).and_then(|value| {
        let traceback = info.get_item(2)?;
        if traceback.is_none() {
            Ok(value)
        } else {
            value.call_method1("with_traceback", (traceback,))
        }
    });
    match value {
        Ok(value) if value.is_instance_of::<pyo3::exceptions::PyBaseException>() => {
            PyErr::from_value(value)
        }
        _ => PyTypeError::new_err("exc_info must be a (type, value, traceback) tuple"),
    }
}

/// A str's latin-1 bytes, without copying (CPython keeps a str whose
/// characters all fit in one byte as latin-1).
fn latin1_bytes_of<'a>(s: &'a Bound<'_, PyString>, what: &str) -> PyResult<&'a [u8]> {
    // SAFETY: `data` reads the string's storage, which `s` keeps alive for
    // 'a; CPython always stores a str in its narrowest kind, so any other
    // kind has a character above U+00FF.
    match unsafe { s.data() }? {
        PyStringData::Ucs1(bytes) => Ok(bytes),
        _ => Err(PyValueError::new_err(format!(
            "{what} {:?} is not latin-1 (PEP 3333: headers are latin-1 str)",
            s.to_string_lossy()
        ))),
    }
}

/// An object as Python shows it (`'a\x01b'`), for a message.
fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr().map(|r| r.to_string()).unwrap_or_default()
}

fn as_str<'a, 'py>(obj: &'a Bound<'py, PyAny>, what: &str) -> PyResult<&'a Bound<'py, PyString>> {
    obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a str, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

fn parse_head(
    head: &mut Head,
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let status = latin1_bytes_of(as_str(status, "the status")?, "the status")?;
    let code_ok = status.len() >= 3
        && status[..3].iter().all(u8::is_ascii_digit)
        && (status.len() == 3 || status[3] == b' ');
    if !code_ok {
        return Err(PyValueError::new_err(format!(
            "status {:?} is not a three-digit code and a reason, as in '200 OK'",
            String::from_utf8_lossy(status)
        )));
    }
    head.status = status[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let reason = status.get(4..).unwrap_or_default();
    head.bytes.extend_from_slice(reason);
    head.reason_len = reason.len();
    for item in headers.try_iter()? {
        let item = item?;
        let (name, value) = pair(&item)?;
        let name_bytes = latin1_bytes_of(as_str(&name, "a header name")?, "header name")?;
        if !grammar::is_token(name_bytes) {
            return Err(PyValueError::new_err(format!(
                "invalid header name {}: a header name is a token (RFC 9110 §5.6.2)",
                repr(&name)
            )));
        }
        let value_bytes = latin1_bytes_of(as_str(&value, "a header value")?, "header value")?;
        if !grammar::is_field_value(value_bytes) {
            return Err(PyValueError::new_err(format!(
                "header {} has invalid value {}: no control characters but tab \
                 (RFC 9110 §5.5)",
                repr(&name),
                repr(&value)
            )));
        }
        if name_bytes.eq_ignore_ascii_case(b"content-length") {
            let n = grammar::content_length(value_bytes)
                .map_err(|e| e.to_string())
                .and_then(|n| match head.content_length {
                    Some(m) if m != n => Err(format!("it conflicts with {m}, given before")),
                    _ => Ok(n),
                })
                .map_err(|why| {
                    PyValueError::new_err(format!(
                        "header {} has invalid value {}: {why}",
                        repr(&name),
                        repr(&value)
                    ))
                })?;
            head.content_length = Some(n);
        }
        head.bytes.extend_from_slice(name_bytes);
        head.bytes.extend_from_slice(value_bytes);
        head.fields.push((name_bytes.len(), value_bytes.len()));
    }
    Ok(())
}

/// A header as `(name, value)`: a tuple, or a list of two.
fn pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = item.cast::<PyTuple>()
        && t.len() == 2
    {
        return Ok((t.get_item(0)?, t.get_item(1)?));
    }
    if let Ok(l) = item.cast::<PyList>()
        && l.len() == 2
    {
        return Ok((l.get_item(0)?, l.get_item(1)?));
    }
    Err(PyTypeError::new_err(format!(
        "each header must be a (name, value) tuple, not {}",
        item.repr().map(|r| r.to_string()).unwrap_or_default()
    )))
}

/// The `write` callable: one piece of the body, sent at once.
#[pyclass(frozen, module = "rgun", name = "Write")]
pub(crate) struct Write {
    ex: Arc<Exchange>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() takes bytes, not {}",
                data.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        match self.ex.write(py, data.as_bytes()) {
            Ok(()) => Ok(()),
            Err(SendError::Python(e)) => Err(e),
            Err(SendError::Server) => Err(PyOSError::new_err(
                "the response could not be written (the client went away, or the \
                 server refused it: see the error log)",
            )),
        }
    }
}
