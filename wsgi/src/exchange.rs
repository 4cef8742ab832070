//! One request's link to the server, shared by the Python objects the
//! application gets for it (`start_response`, its `write`, `wsgi.input`):
//! the status and headers kept until the first body byte (PEP 3333 says
//! they must not go out before), and every server callback, made with the
//! GIL released where the server may block. It does not decide what the
//! response is made of: see `response`.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use rgun_gateway::ffi;

use crate::input::BodyReader;

/// Where the response head is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadState {
    /// `start_response` not called yet.
    Unset,
    /// Called; the head waits for the first body byte.
    Set,
    /// Handed to the server: it can no longer change.
    Sent,
}

/// The status and headers from `start_response`, as latin-1 bytes.
#[derive(Default)]
pub(crate) struct Head {
    pub status: u16,
    /// The reason phrase, then each header's name and value, back to back.
    pub bytes: Vec<u8>,
    pub reason_len: usize,
    /// (name length, value length) of each header, in order, in `bytes`.
    pub fields: Vec<(usize, usize)>,
    /// The Content-Length the application declared, if any.
    pub content_length: Option<u64>,
    /// The headers as the ABI wants them, rebuilt each time they are sent.
    ffi: Vec<ffi::Header>,
}

impl Head {
    pub fn clear(&mut self) {
        self.status = 0;
        self.bytes.clear();
        self.reason_len = 0;
        self.fields.clear();
        self.content_length = None;
    }

    /// The reason phrase and the header array, pointing into `bytes`.
    fn for_server(&mut self) -> (ffi::Str, &[ffi::Header]) {
        self.ffi.clear();
        let mut at = self.reason_len;
        for &(name, value) in &self.fields {
            self.ffi.push(ffi::Header {
                name: ffi::Str::new(&self.bytes[at..at + name]),
                value: ffi::Str::new(&self.bytes[at + name..at + name + value]),
            });
            at += name + value;
        }
        (ffi::Str::new(&self.bytes[..self.reason_len]), &self.ffi)
    }
}

/// Why the response could not go on.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Python raised (the application, or a check of what it gave).
    Python(PyErr),
    /// The server refused a piece (and logged why) or the client is gone.
    Server,
}

impl From<PyErr> for SendError {
    fn from(err: PyErr) -> Self {
        SendError::Python(err)
    }
}

/// The server and call pointers, to cross into `Python::detach`: the
/// closure runs on this same thread (detach only demands `Send` to keep
/// Python references out), so sending them is sound.
#[derive(Clone, Copy)]
struct CallRef {
    server: &'static ffi::Server,
    call: *mut ffi::Call,
}

// SAFETY: see above; the pointers are only used on the thread that handles
// the request, during the request.
unsafe impl Send for CallRef {}

/// The per-request state. Python objects referring to it may outlive the
/// request or reach other threads, so every use goes through `call()`,
/// which checks that the request is live and that it runs on the thread
/// handling it; the cells are only touched after that check, hence on one
/// thread at a time.
pub(crate) struct Exchange {
    server: &'static ffi::Server,
    call: AtomicPtr<ffi::Call>,
    owner: AtomicU64,
    pub state: Cell<HeadState>,
    pub head: RefCell<Head>,
    pub body: RefCell<BodyReader>,
    /// A server callback failed: the response cannot be completed.
    pub broken: Cell<bool>,
}

// SAFETY: the atomics are safe to share; the cells are only used on the
// owner thread after `call()` or `begin()` checked or set it (see above),
// and dropping needs exclusive access anyway.
unsafe impl Send for Exchange {}
// SAFETY: as above.
unsafe impl Sync for Exchange {}

fn this_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

impl Exchange {
    pub fn new(server: &'static ffi::Server) -> Exchange {
        Exchange {
            server,
            call: AtomicPtr::new(core::ptr::null_mut()),
            owner: AtomicU64::new(0),
            state: Cell::new(HeadState::Unset),
            head: RefCell::new(Head::default()),
            body: RefCell::new(BodyReader::default()),
            broken: Cell::new(false),
        }
    }

    /// Attach to a new request, on the thread that handles it.
    pub fn begin(&self, call: *mut ffi::Call, request: &ffi::Request) {
        self.owner.store(this_thread(), Ordering::Relaxed);
        self.call.store(call, Ordering::Relaxed);
        self.state.set(HeadState::Unset);
        self.head.borrow_mut().clear();
        self.body.borrow_mut().reset(request);
        self.broken.set(false);
    }

    /// The request is over: every later use raises.
    pub fn end(&self) {
        self.call.store(core::ptr::null_mut(), Ordering::Relaxed);
    }

    /// The live call, on its own thread; a Python error otherwise.
    fn call(&self) -> PyResult<CallRef> {
        let call = self.call.load(Ordering::Relaxed);
        if call.is_null() {
            return Err(PyOSError::new_err(
                "the request this object belongs to is over",
            ));
        }
        if self.owner.load(Ordering::Relaxed) != this_thread() {
            return Err(PyRuntimeError::new_err(
                "a request's wsgi.input, start_response and write may only be used \
                 on the thread that handles the request",
            ));
        }
        Ok(CallRef {
            server: self.server,
            call,
        })
    }

    /// Check that this object may be used now (see `call`).
    pub fn check(&self) -> PyResult<()> {
        self.call().map(|_| ())
    }

    /// Read up to `buf.len()` body bytes, without the GIL: the count, 0 at
    /// the end of the body.
    pub fn read_body(&self, py: Python<'_>, buf: &mut [u8]) -> PyResult<usize> {
        let call = self.call()?;
        let n = py.detach(move || {
            let call = call;
            // SAFETY: the live call on its own thread; `buf` is writable.
            unsafe { (call.server.read_body)(call.call, buf.as_mut_ptr(), buf.len()) }
        });
        usize::try_from(n).map_err(|_| {
            PyOSError::new_err(
                "the request body could not be read (the client went away, sent a \
                 malformed chunked body, or went past the body size limit)",
            )
        })
    }

    /// Hand the head to the server (it buffers it; nothing blocks).
    fn send_head(&self, call: CallRef) -> Result<(), SendError> {
        let mut head = self.head.borrow_mut();
        let status = head.status;
        let (reason, headers) = head.for_server();
        // SAFETY: the live call; the reason and headers point into `head`,
        // borrowed for the call.
        let rc = unsafe {
            (call.server.start_response)(call.call, status, reason, headers.as_ptr(), headers.len())
        };
        self.state.set(HeadState::Sent);
        self.server_result(rc)
    }

    fn server_result(&self, rc: i32) -> Result<(), SendError> {
        if rc == ffi::OK {
            Ok(())
        } else {
            self.broken.set(true);
            Err(SendError::Server)
        }
    }

    fn require_head(&self) -> PyResult<()> {
        if self.state.get() == HeadState::Unset {
            return Err(PyRuntimeError::new_err(
                "the response body began before start_response was called",
            ));
        }
        Ok(())
    }

    /// One piece of the body (the head first, if it has not gone yet). The
    /// server sends it before returning, so the GIL is let go meanwhile.
    pub fn write(&self, py: Python<'_>, data: &[u8]) -> Result<(), SendError> {
        let call = self.call()?;
        if data.is_empty() {
            return Ok(());
        }
        self.require_head()?;
        if self.broken.get() {
            return Err(SendError::Server);
        }
        if self.state.get() == HeadState::Set {
            self.send_head(call)?;
        }
        let rc = py.detach(move || {
            let call = call;
            // SAFETY: the live call on its own thread; `data` is readable.
            unsafe { (call.server.write_body)(call.call, data.as_ptr(), data.len()) }
        });
        self.server_result(rc)
    }

    /// The whole response at once, if the head allows it (it is not sent
    /// yet and any Content-Length it declares is right): `Ok(false)` if not.
    /// The server only buffers it, so the GIL is kept.
    pub fn respond(&self, data: &[u8]) -> Result<bool, SendError> {
        let call = self.call()?;
        if self.state.get() != HeadState::Set {
            return Ok(false);
        }
        let mut head = self.head.borrow_mut();
        if head.content_length.is_some_and(|n| n != data.len() as u64) {
            return Ok(false);
        }
        let status = head.status;
        let (reason, headers) = head.for_server();
        // SAFETY: the live call; every pointer is valid for the call.
        let rc = unsafe {
            (call.server.respond)(
                call.call,
                status,
                reason,
                headers.as_ptr(),
                headers.len(),
                data.as_ptr(),
                data.len(),
            )
        };
        self.state.set(HeadState::Sent);
        drop(head);
        self.server_result(rc).map(|()| true)
    }

    /// `len` bytes (-1: to the end) of the open file `fd` from `offset`,
    /// by sendfile(2), without the GIL.
    pub fn send_file(
        &self,
        py: Python<'_>,
        fd: i32,
        offset: i64,
        len: i64,
    ) -> Result<(), SendError> {
        let call = self.call()?;
        self.require_head()?;
        if self.state.get() == HeadState::Set {
            self.send_head(call)?;
        }
        let rc = py.detach(move || {
            let call = call;
            // SAFETY: the live call on its own thread; the application
            // keeps `fd` open until the call returns.
            unsafe { (call.server.send_file)(call.call, fd, offset, len) }
        });
        self.server_result(rc)
    }

    /// After the iterable is exhausted: a head not sent yet goes now, with
    /// an empty body.
    pub fn finish(&self) -> Result<(), SendError> {
        let call = self.call()?;
        match self.state.get() {
            HeadState::Sent => Ok(()),
            HeadState::Unset => Err(SendError::Python(PyRuntimeError::new_err(
                "the application returned without calling start_response",
            ))),
            HeadState::Set => {
                // An empty body whose length may be stated: Content-Length:
                // 0, rather than an empty chunked body. A HEAD answer keeps
                // the length the application declared.
                if self.respond(b"")? {
                    return Ok(());
                }
                self.send_head(call)
            }
        }
    }
}
