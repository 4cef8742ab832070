//! `wsgi.file_wrapper` (PEP 3333, "Optional Platform-Specific File
//! Handling"): an iterable over a file-like object in blocks. When an
//! application returns one and the file is a real file, `response` sends it
//! with the server's `send_file` (sendfile(2)) instead of iterating.

use pyo3::prelude::*;

#[pyclass(frozen, module = "rgun", name = "FileWrapper")]
pub(crate) struct FileWrapper {
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok(Some(block).filter(|b| b.is_truthy().unwrap_or(false)))
    }

    /// Closes the file, as PEP 3333 asks of the wrapper's close().
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}
