//! One request through the application: build `environ`, call the
//! callable, send what it returns, and always call its `close()` (PEP
//! 3333). A list of one bytes object goes to the server whole (`respond`,
//! the fast path), a `wsgi.file_wrapper` around a real file by sendfile(2),
//! anything else piece by piece as the iterable yields it.
//!
//! The objects handed to the application (`start_response`, `wsgi.input`)
//! are reused by the thread's next request when nothing kept them.

use std::cell::RefCell;
use std::sync::Arc;

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use pyo3::{intern, types::PyTuple};
use rgun_gateway::ffi;

use crate::environ::Template;
use crate::exchange::{Exchange, HeadState, SendError};
use crate::file_wrapper::FileWrapper;
use crate::input::Input;
use crate::logging;
use crate::start_response::StartResponse;

/// What a worker serves with, made by its init hook.
pub(crate) struct Worker {
    pub app: Py<PyAny>,
    pub environ: Template,
}

/// The Python objects of one request, over its `Exchange`.
struct Handles {
    ex: Arc<Exchange>,
    start_response: Py<StartResponse>,
    input: Py<Input>,
}

thread_local! {
    static SPARE: RefCell<Option<Handles>> = const { RefCell::new(None) };
}

impl Handles {
    fn take(
        py: Python<'_>,
        server: &'static ffi::Server,
        call: *mut ffi::Call,
        request: &ffi::Request,
    ) -> PyResult<Handles> {
        let handles = match SPARE.with_borrow_mut(Option::take) {
            Some(handles) => handles,
            None => {
                let ex = Arc::new(Exchange::new(server));
                Handles {
                    start_response: Py::new(py, StartResponse::new(Arc::clone(&ex)))?,
                    input: Py::new(py, Input::new(Arc::clone(&ex)))?,
                    ex,
                }
            }
        };
        handles.ex.begin(call, request);
        Ok(handles)
    }

    /// End the request; keep the objects for the next one if the
    /// application kept no reference to any of them.
    fn put_back(self) {
        self.ex.end();
        let unshared = crate::refcount(&self.start_response) == 1
            && crate::refcount(&self.input) == 1
            && self.start_response.get().write_unshared();
        if unshared {
            SPARE.with_borrow_mut(|spare| *spare = Some(self));
        }
    }
}

/// Serve one request: the gateway's `handle`.
pub(crate) fn serve(
    py: Python<'_>,
    worker: &Worker,
    server: &'static ffi::Server,
    call: *mut ffi::Call,
    request: &ffi::Request,
) -> i32 {
    let handles = match Handles::take(py, server, call, request) {
        Ok(handles) => handles,
        Err(err) => {
            logging::exception(py, "Cannot set up the request:", &err);
            return ffi::ERR;
        }
    };
    let rc = run(py, worker, &handles, request);
    handles.put_back();
    rc
}

fn run(py: Python<'_>, worker: &Worker, handles: &Handles, request: &ffi::Request) -> i32 {
    match crate::hooks::get().filter(|h| h.pre_request || h.post_request) {
        None => call_app(py, worker, handles, request, &mut None),
        Some(hooks) => run_hooked(py, hooks, worker, handles, request),
    }
}

/// The request between the server hooks `pre_request` and `post_request`
/// (Gunicorn's order: a `pre_request` that raises fails the request with a
/// `500`; `post_request` runs whatever happened).
fn run_hooked(
    py: Python<'_>,
    hooks: &crate::hooks::Hooks,
    worker: &Worker,
    handles: &Handles,
    request: &ffi::Request,
) -> i32 {
    let (req, pre) = hooks.pre_request(py, request);
    let mut environ = None;
    let rc = match pre {
        Ok(()) => call_app(py, worker, handles, request, &mut environ),
        Err(err) => failed(py, &handles.ex, request, SendError::Python(err)),
    };
    let status = (handles.ex.state.get() != HeadState::Unset).then(|| head_of(&handles.ex));
    hooks.post_request(py, &req, environ.as_ref(), status);
    rc
}

/// The status, reason and headers the application gave, for post_request.
fn head_of(ex: &Exchange) -> crate::hooks::AnswerHead {
    let head = ex.head.borrow();
    let latin1 = |b: &[u8]| b.iter().map(|&c| c as char).collect::<String>();
    let mut at = head.reason_len;
    let headers = head
        .fields
        .iter()
        .map(|&(name, value)| {
            let field = (
                latin1(&head.bytes[at..at + name]),
                latin1(&head.bytes[at + name..at + name + value]),
            );
            at += name + value;
            field
        })
        .collect();
    crate::hooks::AnswerHead {
        status: head.status,
        reason: latin1(&head.bytes[..head.reason_len]),
        headers,
    }
}

/// Build the environ (kept in `environ_out` for post_request), call the
/// application and send what it returns.
fn call_app<'py>(
    py: Python<'py>,
    worker: &Worker,
    handles: &Handles,
    request: &ffi::Request,
    environ_out: &mut Option<Bound<'py, PyDict>>,
) -> i32 {
    let ex = &handles.ex;
    let result = worker
        .environ
        .build(py, request, handles.input.bind(py))
        .and_then(|environ| {
            *environ_out = Some(environ.clone());
            worker
                .app
                .bind(py)
                .call1((environ, handles.start_response.bind(py)))
        });
    let result = match result {
        Ok(result) => result,
        Err(err) => return failed(py, ex, request, SendError::Python(err)),
    };
    let sent = send(py, ex, &result);
    let closed = close(py, &result);
    drop(result);
    if let Err(err) = &closed {
        logging::exception(
            py,
            &format!(
                "Error closing the response to {}",
                describe_request(request)
            ),
            err,
        );
    }
    match sent {
        Ok(()) => ffi::OK,
        Err(err) => failed(py, ex, request, err),
    }
}

/// Send what the application returned.
fn send(py: Python<'_>, ex: &Exchange, result: &Bound<'_, PyAny>) -> Result<(), SendError> {
    if let Ok(list) = result.cast_exact::<PyList>()
        && list.len() == 1
        && let Ok(item) = list.get_item(0)
        && let Ok(body) = item.cast_exact::<PyBytes>()
        && ex.respond(body.as_bytes())?
    {
        return Ok(());
    }
    if let Ok(wrapper) = result.cast_exact::<FileWrapper>()
        && send_file(py, ex, wrapper.get())?
    {
        return Ok(());
    }
    for item in result.try_iter()? {
        let item = item?;
        let piece = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the response iterable must yield bytes, not {}",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        ex.write(py, piece.as_bytes())?;
    }
    ex.finish()
}

/// A file wrapper over a regular file with a descriptor goes by
/// sendfile(2), from the file's position: `Ok(false)` when it cannot.
fn send_file(py: Python<'_>, ex: &Exchange, wrapper: &FileWrapper) -> Result<bool, SendError> {
    if ex.state.get() != HeadState::Set {
        return Ok(false);
    }
    let file = wrapper.filelike.bind(py);
    let Ok(fd) = file
        .call_method0(intern!(py, "fileno"))
        .and_then(|fd| fd.extract::<i32>())
    else {
        return Ok(false);
    };
    // SAFETY: fstat on a descriptor the file object owns, into a zeroed
    // plain-data struct.
    let regular = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
    };
    if !regular {
        return Ok(false);
    }
    // A buffered file's position is its tell(), not the descriptor's.
    let offset = match file
        .call_method0(intern!(py, "tell"))
        .and_then(|t| t.extract::<i64>())
    {
        Ok(offset) => offset,
        // SAFETY: lseek on the file's own descriptor, not moving it.
        Err(_) => unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) },
    };
    if offset < 0 {
        return Ok(false);
    }
    let len = ex
        .head
        .borrow()
        .content_length
        .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    ex.send_file(py, fd, offset, len)?;
    Ok(true)
}

/// PEP 3333: the iterable's close(), if it has one, whatever happened.
fn close(py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<()> {
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match result.getattr(intern!(py, "close")) {
        Ok(close) => close.call0().map(drop),
        Err(err) if err.is_instance_of::<PyAttributeError>(py) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Log why the request failed; the server answers 500 if nothing was sent
/// yet, or cuts the connection.
fn failed(py: Python<'_>, ex: &Exchange, request: &ffi::Request, err: SendError) -> i32 {
    match err {
        SendError::Python(_) | SendError::Server if ex.broken.get() => logging::line(
            logging::Level::Debug,
            &format!(
                "the response to {} could not be completed (the client went away?)",
                describe_request(request)
            ),
        ),
        SendError::Python(err) => logging::exception(
            py,
            &format!("Error handling request {}", describe_request(request)),
            &err,
        ),
        // The server refused what it was given, and logged why.
        SendError::Server => {}
    }
    ffi::ERR
}

fn describe_request(request: &ffi::Request) -> String {
    // SAFETY: the request's strings are valid for the call.
    let (method, target) = unsafe { (request.method.as_bytes(), request.raw_uri.as_bytes()) };
    format!(
        "{} {}",
        String::from_utf8_lossy(method),
        String::from_utf8_lossy(target)
    )
}
