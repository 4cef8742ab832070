//! The application every rgun test and benchmark talks to: the routes of
//! `shared/spec/testapp.md`, answering as `testapp_wsgi.py` (beside this
//! crate, a copy of the shared one) does under a WSGI server. It checks
//! nothing the server is meant to check (`/header` passes its input on as
//! given).

mod json;
mod query;

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::thread;
use std::time::Duration;

use rgun_gateway::{Error, Request, Response, export_app};
use sha2::{Digest, Sha256};

#[cfg(test)]
mod tests;

/// The largest piece `/upload` reads at once (the contract's 64 KiB), and
/// the size of the ready-made bodies below.
const PIECE: usize = 64 * 1024;

/// Bodies of `x` and `y` up to one piece long are slices of these, so that
/// `/bytes` and `/stream` allocate nothing in the usual case.
static XS: [u8; PIECE] = [b'x'; PIECE];
static YS: [u8; PIECE] = [b'y'; PIECE];

export_app!(app, handler = handle);

fn handle(request: &mut Request<'_>) -> Result<Response<'static>, Error> {
    let path = request.path_bytes();
    // The benchmark route: first, and nothing but the constant answer.
    if path == b"/" {
        return Ok(Response::text(200, "Hello, World!"));
    }
    let query = request.query();
    match path {
        b"/echo" => echo(request),
        b"/upload" => upload(request),
        b"/bytes" => bytes(query),
        b"/stream" => stream(query),
        b"/status" => status(query),
        b"/sleep" => sleep(query),
        b"/pid" => Ok(Response::text(200, std::process::id().to_string())),
        b"/panic" => panic!("testapp: /panic asked for a failure"),
        b"/crash" => std::process::abort(),
        b"/header" => header(query),
        _ => Ok(Response::text(404, "not found")),
    }
}

/// The request as the app sees it. Text fields read as ISO-8859-1, as PEP
/// 3333 hands them to a WSGI app; the body as lossy UTF-8, as the WSGI
/// version decodes it.
fn echo(request: &mut Request<'_>) -> Result<Response<'static>, Error> {
    let mut body = Vec::new();
    request.body().read_to_end(&mut body)?;

    // Names lower-cased, a repeated field joined with ", " (RFC 9110 §5.3),
    // in the order each name first appears.
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (name, value) in request.headers() {
        let name = name.to_ascii_lowercase();
        match fields.iter_mut().find(|(seen, _)| *seen == name) {
            Some((_, joined)) => {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(value);
            }
            None => fields.push((name, value.to_vec())),
        }
    }
    let mut headers = json::Object::with_capacity(64 * fields.len());
    for (name, value) in &fields {
        headers.string(&String::from_utf8_lossy(name), json::latin1(value));
    }

    let mut answer = json::Object::with_capacity(512 + 2 * body.len());
    answer
        .string("method", json::latin1(request.method().as_bytes()))
        .string("path", json::latin1(request.path_bytes()))
        .string("raw_uri", json::latin1(request.raw_uri()))
        .string("query", json::latin1(request.query()))
        .object("headers", headers)
        .string("body", String::from_utf8_lossy(&body).chars())
        .number("body_length", body.len() as u64)
        .string(
            "remote_addr",
            json::latin1(request.remote_addr().as_bytes()),
        )
        // The client as the server decided it (a PROXY header or a trusted
        // X-Forwarded-For can name another than the peer).
        .string(
            "client_addr",
            json::latin1(request.client_addr().as_bytes()),
        )
        .string("scheme", json::latin1(request.scheme().as_bytes()))
        .string("protocol", json::latin1(request.protocol().as_bytes()));
    Ok(json_response(answer))
}

/// Hashes the body without ever holding more than one piece of it.
fn upload(request: &mut Request<'_>) -> Result<Response<'static>, Error> {
    let mut piece = vec![0; PIECE];
    let mut body = request.body();
    let mut digest = Sha256::new();
    let mut length = 0u64;
    loop {
        let n = match body.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        digest.update(&piece[..n]);
        length += n as u64;
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut answer = json::Object::with_capacity(128);
    answer
        .number("body_length", length)
        .string("sha256", hex.chars());
    Ok(json_response(answer))
}

fn json_response(answer: json::Object) -> Response<'static> {
    Response::new(200)
        .header("Content-Type", "application/json")
        .body(answer.finish())
}

/// `n` bytes of `x`, whole, so that the server sets Content-Length.
fn bytes(query: &[u8]) -> Result<Response<'static>, Error> {
    // A negative count is an empty body, as `b"x" * -1` is in Python.
    let n = query::int(query, "n", 0)?.max(0);
    Ok(Response::text(200, filled(&XS, n)?))
}

/// `chunks` pieces of `size` bytes, each handed over on its own with no
/// Content-Length, so that the server must frame them (chunked on HTTP/1.1).
fn stream(query: &[u8]) -> Result<Response<'static>, Error> {
    let chunks = query::int(query, "chunks", 1)?.max(0);
    let piece = filled(&YS, query::int(query, "size", 1)?.max(0))?;
    let delay = Duration::from_millis(non_negative(query, "delay_ms")?);
    Ok(Response::new(200)
        .header("Content-Type", "text/plain")
        .stream(move |out| {
            for i in 0..chunks {
                // Between pieces, never before the first.
                if i > 0 && !delay.is_zero() {
                    thread::sleep(delay);
                }
                // One `write` per piece rather than `write_all`, which would
                // skip an empty piece: a server must cope with those too.
                if out.write(&piece)? != piece.len() {
                    return Err(io::ErrorKind::WriteZero.into());
                }
            }
            Ok(())
        }))
}

/// Any status the client names, passed to the server unchecked: an invalid
/// one is the server's to refuse.
fn status(query: &[u8]) -> Result<Response<'static>, Error> {
    let code = query::int(query, "code", 200)?;
    let code = u16::try_from(code).map_err(|_| format!("status {code} is out of range"))?;
    // RFC 9110 §15.3.5, §15.4.5: 204 and 304 carry no content.
    Ok(if code == 204 || code == 304 {
        Response::new(code)
    } else {
        Response::text(code, format!("status {code}"))
    })
}

fn sleep(query: &[u8]) -> Result<Response<'static>, Error> {
    let ms = non_negative(query, "ms")?;
    thread::sleep(Duration::from_millis(ms));
    Ok(Response::text(200, format!("slept {ms}")))
}

/// Sets the header as given: the point is to see the server refuse a name
/// or value it must not send (CR or LF, passed as `%0D%0A`).
fn header(query: &[u8]) -> Result<Response<'static>, Error> {
    let name = query::arg(query, "name").unwrap_or_else(|| b"X-Test".to_vec());
    let value = query::arg(query, "value").unwrap_or_default();
    Ok(Response::text(200, "ok").header(name, value))
}

/// A duration in ms; negative is an error, as `time.sleep(-1)` raises.
fn non_negative(query: &[u8], name: &str) -> Result<u64, Error> {
    let ms = query::int(query, name, 0)?;
    u64::try_from(ms).map_err(|_| format!("{name}={ms} must not be negative").into())
}

/// `n` copies of the byte `ready` is filled with: a slice of `ready` when it
/// is long enough, else allocated, with a failed allocation an error (a
/// `500`) rather than an abort.
fn filled(ready: &'static [u8; PIECE], n: i64) -> Result<Cow<'static, [u8]>, Error> {
    let n = usize::try_from(n)?;
    if n <= PIECE {
        return Ok(Cow::Borrowed(&ready[..n]));
    }
    let mut body = Vec::new();
    body.try_reserve_exact(n)?;
    body.resize(n, ready[0]);
    Ok(Cow::Owned(body))
}
