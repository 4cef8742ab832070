//! `wsgi.input`: the request body as a file-like object, streamed from the
//! server's `read_body` on demand (PEP 3333's input stream: `read`,
//! `readline`, `readlines`, iteration, plus `readinto`). Nothing is read
//! ahead of what the application asks, except what `readline` must look at
//! to find a line's end, which is kept for the next call.

use std::sync::Arc;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rgun_gateway::ffi;

use crate::exchange::Exchange;

/// How much `readline` asks the server for at a time.
const LINE_CHUNK: usize = 8192;
/// The first allocation for a body of unknown length read whole.
const UNKNOWN_CHUNK: usize = 64 * 1024;

/// The body's reading state, inside the request's `Exchange`.
#[derive(Default)]
pub(crate) struct BodyReader {
    /// Bytes the server gave `readline` beyond a line's end: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// Body bytes the server still holds, when the length is known.
    remaining: Option<u64>,
    /// The server said the body ended.
    done: bool,
}

impl BodyReader {
    pub fn reset(&mut self, request: &ffi::Request) {
        self.buf.clear();
        self.pos = 0;
        self.remaining = if request.body_chunked != 0 {
            None
        } else {
            Some(u64::try_from(request.content_length).unwrap_or(0))
        };
        self.done = self.remaining == Some(0);
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// How many bytes are left, if the server said how many.
    fn left(&self) -> Option<u64> {
        self.remaining
            .map(|r| r + (self.buf.len() - self.pos) as u64)
    }

    /// One read from the server into `out`; 0 at the end.
    fn read_server(&mut self, py: Python<'_>, ex: &Exchange, out: &mut [u8]) -> PyResult<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        let want = match self.remaining {
            Some(r) => out.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
            None => out.len(),
        };
        let n = ex.read_body(py, &mut out[..want])?;
        if n == 0 {
            self.done = true;
        }
        if let Some(r) = &mut self.remaining {
            *r -= n as u64;
            if *r == 0 {
                self.done = true;
            }
        }
        Ok(n)
    }

    /// Fill `out` from the buffer, then the server, until it is full or the
    /// body ends; the count.
    fn fill(&mut self, py: Python<'_>, ex: &Exchange, out: &mut [u8]) -> PyResult<usize> {
        let take = self.buffered().len().min(out.len());
        out[..take].copy_from_slice(&self.buffered()[..take]);
        self.consume(take);
        let mut got = take;
        while got < out.len() {
            let n = self.read_server(py, ex, &mut out[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    }

    /// Up to `limit` bytes (None: all) as a new bytes object.
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        ex: &Exchange,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(left) = self.left() {
            // Known length: the bytes object is made at its final size and
            // filled in place.
            let want = limit.map_or(left, |l| left.min(l as u64));
            let want =
                usize::try_from(want).map_err(|_| PyValueError::new_err("body too large"))?;
            let mut got = 0;
            let bytes = PyBytes::new_with(py, want, |out| {
                got = self.fill(py, ex, out)?;
                Ok(())
            })?;
            if got == want {
                return Ok(bytes);
            }
            return Ok(PyBytes::new(py, &bytes.as_bytes()[..got]));
        }
        let mut out = Vec::new();
        loop {
            let room = match limit {
                Some(l) if out.len() >= l => break,
                Some(l) => (l - out.len()).min(UNKNOWN_CHUNK.max(out.len())),
                None => UNKNOWN_CHUNK.max(out.len()),
            };
            let start = out.len();
            out.resize(start + room, 0);
            let n = self.fill(py, ex, &mut out[start..])?;
            out.truncate(start + n);
            if n < room {
                break;
            }
        }
        Ok(PyBytes::new(py, &out))
    }

    /// One line, its `\n` included, of at most `limit` bytes.
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        ex: &Exchange,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut searched = 0;
        loop {
            let buffered = self.buffered();
            let cap = limit.unwrap_or(usize::MAX).min(buffered.len());
            if let Some(i) = buffered[searched.min(cap)..cap]
                .iter()
                .position(|&b| b == b'\n')
            {
                return Ok(self.take(py, searched.min(cap) + i + 1));
            }
            if limit.is_some_and(|l| buffered.len() >= l) || self.done {
                return Ok(self.take(py, cap));
            }
            searched = buffered.len();
            // Ask for more, keeping what is buffered.
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let start = self.buf.len();
            let want = limit.map_or(LINE_CHUNK, |l| (l - start).min(LINE_CHUNK));
            // Taken out of `self` while the server fills its tail.
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(start + want, 0);
            let read = self.read_server(py, ex, &mut buf[start..]);
            buf.truncate(start + read.as_ref().copied().unwrap_or(0));
            self.buf = buf;
            read?;
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let bytes = PyBytes::new(py, &self.buffered()[..n]);
        self.consume(n);
        bytes
    }
}

/// A size argument: None or negative means no limit.
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

/// `wsgi.input`.
#[pyclass(frozen, module = "rgun", name = "Input")]
pub(crate) struct Input {
    ex: Arc<Exchange>,
}

impl Input {
    pub fn new(ex: Arc<Exchange>) -> Input {
        Input { ex }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.ex.check()?;
        self.ex.body.borrow_mut().read(py, &self.ex, limit(size))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.ex.check()?;
        self.ex
            .body
            .borrow_mut()
            .readline(py, &self.ex, limit(size))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        self.ex.check()?;
        let hint = limit(hint).filter(|&h| h > 0);
        let mut body = self.ex.body.borrow_mut();
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = body.readline(py, &self.ex, None)?;
            if line.as_bytes().is_empty() {
                break;
            }
            total += line.as_bytes().len();
            lines.push(line);
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    /// Read into a writable buffer (a bytearray, a memoryview): the count.
    fn readinto(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.ex.check()?;
        let view = PyBuffer::<u8>::get(buffer)?;
        if view.readonly() || !view.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "readinto needs a writable, contiguous buffer",
            ));
        }
        // SAFETY: the buffer is writable, contiguous and `len_bytes` long,
        // and `view` keeps it exported, so alive and unresizable, until it
        // is dropped after the fill (as socket.recv_into does, the GIL is
        // let go while the server writes into it).
        let out = unsafe {
            std::slice::from_raw_parts_mut(view.buf_ptr().cast::<u8>(), view.len_bytes())
        };
        self.ex.body.borrow_mut().fill(py, &self.ex, out)
    }

    fn readable(&self) -> bool {
        true
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok(Some(line).filter(|l| !l.as_bytes().is_empty()))
    }
}
