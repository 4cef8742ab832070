//! PEP 3333's `environ`, built for each request from the server's
//! `rgun_request`. Speed matters here more than anywhere else in the bridge:
//! the dict starts as a copy of a template holding every key that never
//! changes (and a slot for every key each request sets), keys are interned
//! once, and values that repeat from one request to the next on a thread
//! (method, addresses, the Host header...) are reused, not rebuilt.
//!
//! Header names become `HTTP_*` keys as in Gunicorn: upper case, `-` to
//! `_`; names holding `_` are dropped (they would be indistinguishable from
//! a `-` spelling: a spoofing trick); repeated headers are joined with
//! `", "` (RFC 9110 §5.3; `"; "` for Cookie).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::string::PyStringData;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};
use rgun_gateway::ffi as gw;
use rgun_gateway::grammar::HeaderLines;

use crate::errors::ErrorStream;
use crate::file_wrapper::FileWrapper;
use crate::input::Input;

/// `SERVER_SOFTWARE`: the bridge is built with the server, from the same
/// workspace version.
const SERVER_SOFTWARE: &str = concat!("rgun/", env!("CARGO_PKG_VERSION"));

/// Distinct header-name spellings a thread remembers; past this, new
/// names are converted on every request (a client inventing names must not
/// grow memory).
const MAX_CACHED_NAMES: usize = 256;
/// Longest value kept for reuse by the next request.
const MAX_CACHED_VALUE: usize = 256;
/// Methods a thread remembers.
const MAX_CACHED_METHODS: usize = 16;

/// The keys every request sets, interned.
struct Keys {
    request_method: Py<PyString>,
    script_name: Py<PyString>,
    path_info: Py<PyString>,
    query_string: Py<PyString>,
    content_type: Py<PyString>,
    content_length: Py<PyString>,
    server_name: Py<PyString>,
    server_port: Py<PyString>,
    server_protocol: Py<PyString>,
    remote_addr: Py<PyString>,
    remote_port: Py<PyString>,
    /// The client as the server decided it (a trusted proxy's
    /// X-Forwarded-For), beside REMOTE_ADDR, which keeps Gunicorn's meaning.
    client_addr: Py<PyString>,
    raw_uri: Py<PyString>,
    url_scheme: Py<PyString>,
    input: Py<PyString>,
}

/// What a worker needs to build environs: made by the init hook.
pub(crate) struct Template {
    keys: Keys,
    dict: Py<PyDict>,
    empty: Py<PyString>,
}

/// How the worker runs the application, for `wsgi.multithread` and
/// `wsgi.multiprocess` (the server says so through RGUN_THREADS and
/// RGUN_WORKERS).
pub(crate) struct Concurrency {
    pub multithread: bool,
    pub multiprocess: bool,
}

impl Concurrency {
    pub fn from_env() -> Concurrency {
        let count = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Concurrency {
            multithread: count("RGUN_THREADS").is_some_and(|n| n > 1),
            // Unknown: assume several, the safe answer for an application.
            multiprocess: count("RGUN_WORKERS").is_none_or(|n| n > 1),
        }
    }
}

impl Template {
    pub fn new(py: Python<'_>, concurrency: &Concurrency) -> PyResult<Template> {
        let key = |s: &str| PyString::intern(py, s).unbind();
        let keys = Keys {
            request_method: key("REQUEST_METHOD"),
            script_name: key("SCRIPT_NAME"),
            path_info: key("PATH_INFO"),
            query_string: key("QUERY_STRING"),
            content_type: key("CONTENT_TYPE"),
            content_length: key("CONTENT_LENGTH"),
            server_name: key("SERVER_NAME"),
            server_port: key("SERVER_PORT"),
            server_protocol: key("SERVER_PROTOCOL"),
            remote_addr: key("REMOTE_ADDR"),
            remote_port: key("REMOTE_PORT"),
            client_addr: key("rgun.client_addr"),
            raw_uri: key("RAW_URI"),
            url_scheme: key("wsgi.url_scheme"),
            input: key("wsgi.input"),
        };
        let empty = PyString::intern(py, "");
        let dict = PyDict::new(py);
        // Per-request keys first, so that the copy has their slots.
        for k in [
            &keys.request_method,
            &keys.path_info,
            &keys.query_string,
            &keys.server_name,
            &keys.server_port,
            &keys.server_protocol,
            &keys.remote_addr,
            &keys.remote_port,
            &keys.client_addr,
            &keys.raw_uri,
            &keys.url_scheme,
            &keys.input,
        ] {
            dict.set_item(k, py.None())?;
        }
        dict.set_item(&keys.script_name, &empty)?;
        // As Gunicorn sets it (`gunicorn/21.2.0`): code that reports or
        // checks the server it runs under reads this key (issue 14).
        dict.set_item(PyString::intern(py, "SERVER_SOFTWARE"), SERVER_SOFTWARE)?;
        dict.set_item(
            PyString::intern(py, "wsgi.version"),
            PyTuple::new(py, [1, 0])?,
        )?;
        dict.set_item(
            PyString::intern(py, "wsgi.errors"),
            Bound::new(py, ErrorStream::default())?,
        )?;
        dict.set_item(
            PyString::intern(py, "wsgi.multithread"),
            PyBool::new(py, concurrency.multithread),
        )?;
        dict.set_item(
            PyString::intern(py, "wsgi.multiprocess"),
            PyBool::new(py, concurrency.multiprocess),
        )?;
        dict.set_item(PyString::intern(py, "wsgi.run_once"), false)?;
        // The body ends where the server says (chunked bodies included):
        // Werkzeug and others then read wsgi.input without a length.
        dict.set_item(PyString::intern(py, "wsgi.input_terminated"), true)?;
        dict.set_item(
            PyString::intern(py, "wsgi.file_wrapper"),
            py.get_type::<FileWrapper>(),
        )?;
        Ok(Template {
            keys,
            dict: dict.unbind(),
            empty: empty.unbind(),
        })
    }

    /// The environ of one request.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        request: &gw::Request,
        input: &Bound<'py, Input>,
    ) -> PyResult<Bound<'py, PyDict>> {
        // SAFETY: PyDict_Copy of a dict, with the GIL; a new reference or
        // NULL with an exception set.
        let environ = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyDict_Copy(self.dict.as_ptr()))?
                .cast_into_unchecked::<PyDict>()
        };
        let k = &self.keys;
        // SAFETY: the server promises every `Str` of the request is valid
        // for the call, which outlives this function.
        let (method, path, query, raw_uri, protocol, scheme, server_name, remote_addr, ctype) = unsafe {
            (
                request.method.as_bytes(),
                request.path.as_bytes(),
                request.query.as_bytes(),
                request.raw_uri.as_bytes(),
                request.protocol.as_bytes(),
                request.scheme.as_bytes(),
                request.server_name.as_bytes(),
                request.remote_addr.as_bytes(),
                request.content_type.as_bytes(),
            )
        };
        CACHE.with_borrow_mut(|cache| -> PyResult<()> {
            let set = |key: &Py<PyString>, value: &Bound<'py, PyAny>| {
                environ.set_item(key.bind(py), value)
            };
            set(&k.request_method, cache.methods.get(py, method).as_any())?;
            let path_info = str_from_latin1(py, path);
            set(&k.path_info, path_info.as_any())?;
            if query.is_empty() {
                set(&k.query_string, self.empty.bind(py).as_any())?;
            } else {
                set(&k.query_string, str_from_latin1(py, query).as_any())?;
            }
            // The common `GET /path` sent without escapes: one string.
            if raw_uri == path {
                set(&k.raw_uri, path_info.as_any())?;
            } else {
                set(&k.raw_uri, str_from_latin1(py, raw_uri).as_any())?;
            }
            set(
                &k.server_protocol,
                cache.protocol.get(py, protocol).as_any(),
            )?;
            set(&k.url_scheme, cache.scheme.get(py, scheme).as_any())?;
            set(
                &k.server_name,
                cache.server_name.get(py, server_name).as_any(),
            )?;
            set(
                &k.server_port,
                cache.server_port.get(py, request.server_port).as_any(),
            )?;
            self.peer(py, cache, &environ, request, remote_addr)?;
            if request.script_name.len != 0 {
                // SAFETY: as above.
                let script = unsafe { request.script_name.as_bytes() };
                set(&k.script_name, str_from_latin1(py, script).as_any())?;
            }
            if !ctype.is_empty() {
                set(&k.content_type, cache.content_type.get(py, ctype).as_any())?;
            }
            if request.content_length >= 0 {
                let n = PyString::new(py, &request.content_length.to_string());
                set(&k.content_length, n.as_any())?;
            }
            set(&k.input, input.as_any())?;
            cache.headers(py, &environ, request)?;
            if request.server_port == 0 {
                self.unix_socket_server(py, &environ, request, scheme)?;
            }
            Ok(())
        })?;
        Ok(environ)
    }

    /// REMOTE_ADDR, REMOTE_PORT and `rgun.client_addr` (the forwarded
    /// client, most often the peer itself: then the same string).
    fn peer<'py>(
        &self,
        py: Python<'py>,
        cache: &mut Cache,
        environ: &Bound<'py, PyDict>,
        request: &gw::Request,
        remote_addr: &[u8],
    ) -> PyResult<()> {
        let k = &self.keys;
        let set =
            |key: &Py<PyString>, value: &Bound<'py, PyAny>| environ.set_item(key.bind(py), value);
        set(
            &k.remote_addr,
            cache.remote_addr.get(py, remote_addr).as_any(),
        )?;
        // SAFETY: the server promises every `Str` of the request is valid
        // for the call, which outlives this function.
        let client_addr = unsafe { request.client_addr.as_bytes() };
        if client_addr == remote_addr {
            set(
                &k.client_addr,
                cache.remote_addr.get(py, remote_addr).as_any(),
            )?;
        } else {
            set(
                &k.client_addr,
                cache.client_addr.get(py, client_addr).as_any(),
            )?;
        }
        if request.remote_port == 0 && remote_addr.is_empty() {
            // A Unix socket has no peer port (Gunicorn says '').
            set(&k.remote_port, self.empty.bind(py).as_any())?;
        } else {
            set(
                &k.remote_port,
                cache.remote_port.get(py, request.remote_port).as_any(),
            )?;
        }
        Ok(())
    }

    /// On a Unix socket there is no server address: SERVER_NAME and
    /// SERVER_PORT come from the Host header, or the scheme's port (as in
    /// Gunicorn).
    fn unix_socket_server(
        &self,
        py: Python<'_>,
        environ: &Bound<'_, PyDict>,
        request: &gw::Request,
        scheme: &[u8],
    ) -> PyResult<()> {
        let default_port: &[u8] = if scheme == b"https" { b"443" } else { b"80" };
        let host = headers(request).get(b"host");
        let (name, port) = match host {
            Some(host) => match host.iter().rposition(|&b| b == b':') {
                Some(i) if !host.ends_with(b"]") => (&host[..i], &host[i + 1..]),
                _ => (host, default_port),
            },
            None => {
                return environ.set_item(
                    self.keys.server_port.bind(py),
                    str_from_latin1(py, default_port),
                );
            }
        };
        environ.set_item(self.keys.server_name.bind(py), str_from_latin1(py, name))?;
        environ.set_item(self.keys.server_port.bind(py), str_from_latin1(py, port))
    }
}

/// A str of the latin-1 bytes (PEP 3333's "native string" for bytes off
/// the wire).
fn str_from_latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: decoding `bytes.len()` readable bytes; latin-1 cannot fail
    // but for memory, which panics below like any allocation failure.
    unsafe {
        Bound::from_owned_ptr(
            py,
            ffi::PyUnicode_DecodeLatin1(
                bytes.as_ptr().cast(),
                bytes.len() as ffi::Py_ssize_t,
                core::ptr::null(),
            ),
        )
        .cast_into_unchecked()
    }
}

fn headers(request: &gw::Request) -> HeaderLines<'_> {
    // SAFETY: the server passes `header_count` headers whose names and
    // values are valid for the call, which outlives the borrow of `request`.
    unsafe { HeaderLines::of_request(request) }
}

/// The last string made from some bytes, reused while they repeat.
#[derive(Default)]
struct Last {
    bytes: Vec<u8>,
    value: Option<Py<PyString>>,
}

impl Last {
    fn get<'py>(&mut self, py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
        if let Some(value) = &self.value
            && self.bytes == bytes
        {
            return value.bind(py).clone();
        }
        let value = str_from_latin1(py, bytes);
        if bytes.len() <= MAX_CACHED_VALUE {
            self.bytes.clear();
            self.bytes.extend_from_slice(bytes);
            self.value = Some(value.clone().unbind());
        }
        value
    }
}

/// The last port number's string.
#[derive(Default)]
struct LastPort(Option<(u16, Py<PyString>)>);

impl LastPort {
    fn get<'py>(&mut self, py: Python<'py>, port: u16) -> Bound<'py, PyString> {
        if let Some((p, value)) = &self.0
            && *p == port
        {
            return value.bind(py).clone();
        }
        let value = PyString::new(py, &port.to_string());
        self.0 = Some((port, value.clone().unbind()));
        value
    }
}

/// A few method strings.
#[derive(Default)]
struct Methods(Vec<(Vec<u8>, Py<PyString>)>);

impl Methods {
    fn get<'py>(&mut self, py: Python<'py>, method: &[u8]) -> Bound<'py, PyString> {
        if let Some((_, value)) = self.0.iter().find(|(m, _)| m == method) {
            return value.bind(py).clone();
        }
        let value = str_from_latin1(py, method);
        if self.0.len() < MAX_CACHED_METHODS {
            self.0.push((method.to_vec(), value.clone().unbind()));
        }
        value
    }
}

/// What becomes of a header name.
struct HeaderKey {
    /// The environ key; None: the header is not passed as HTTP_*.
    key: Option<Py<PyString>>,
    separator: &'static [u8],
    last: Last,
}

impl HeaderKey {
    fn new(py: Python<'_>, name: &[u8]) -> HeaderKey {
        let skip = name.contains(&b'_')
            || name.eq_ignore_ascii_case(b"content-type")
            || name.eq_ignore_ascii_case(b"content-length");
        let key = (!skip).then(|| {
            let mut key = String::with_capacity(5 + name.len());
            key.push_str("HTTP_");
            key.extend(name.iter().map(|&b| match b {
                b'-' => '_',
                b => char::from(b.to_ascii_uppercase()),
            }));
            PyString::intern(py, &key).unbind()
        });
        HeaderKey {
            key,
            separator: if name.eq_ignore_ascii_case(b"cookie") {
                b"; "
            } else {
                b", "
            },
            last: Last::default(),
        }
    }
}

/// FNV-1a: header names are short and chosen by clients, but the table is
/// bounded, so a fast hash is enough.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A thread's reusable strings.
#[derive(Default)]
struct Cache {
    methods: Methods,
    protocol: Last,
    scheme: Last,
    server_name: Last,
    server_port: LastPort,
    remote_addr: Last,
    client_addr: Last,
    remote_port: LastPort,
    content_type: Last,
    names: HashMap<Box<[u8]>, HeaderKey, BuildHasherDefault<Fnv>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

impl Cache {
    fn headers(
        &mut self,
        py: Python<'_>,
        environ: &Bound<'_, PyDict>,
        request: &gw::Request,
    ) -> PyResult<()> {
        for (name, value) in headers(request) {
            if !self.names.contains_key(name) && self.names.len() < MAX_CACHED_NAMES {
                self.names.insert(name.into(), HeaderKey::new(py, name));
            }
            match self.names.get_mut(name) {
                Some(entry) => {
                    let Some(key) = &entry.key else { continue };
                    let value = entry.last.get(py, value);
                    set_header(environ, key.bind(py), value, entry.separator)?;
                }
                None => {
                    let entry = HeaderKey::new(py, name);
                    let Some(key) = &entry.key else { continue };
                    set_header(
                        environ,
                        key.bind(py),
                        str_from_latin1(py, value),
                        entry.separator,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Set a header's key, or join the value to the one already there.
fn set_header<'py>(
    environ: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    value: Bound<'py, PyString>,
    separator: &[u8],
) -> PyResult<()> {
    let py = environ.py();
    // SAFETY: a dict and a str key, with the GIL; GetItem returns a
    // borrowed reference or NULL (a str key's lookup cannot fail).
    let current = unsafe {
        Bound::from_borrowed_ptr_or_opt(py, ffi::PyDict_GetItem(environ.as_ptr(), key.as_ptr()))
    };
    let Some(current) = current else {
        return environ.set_item(key, value);
    };
    let current = current.cast_into::<PyString>()?;
    // SAFETY: reading the storage of two live strings.
    let joined = match unsafe { (current.data()?, value.data()?) } {
        (PyStringData::Ucs1(a), PyStringData::Ucs1(b)) => {
            str_from_latin1(py, &[a, separator, b].concat())
        }
        // Not reached: header values are made from latin-1 bytes.
        _ => PyString::new(
            py,
            &format!(
                "{}{}{}",
                current.to_string_lossy(),
                String::from_utf8_lossy(separator),
                value.to_string_lossy()
            ),
        ),
    };
    environ.set_item(key, joined)
}
