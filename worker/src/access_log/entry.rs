//! What one access log line says of a request and its answer, and how the
//! atoms that are not plain fields are found in it: the Basic user, a
//! header's last value, a variable of the request's environ.

use std::time::Duration;

use rgun_gateway::grammar::HeaderLines;

use crate::parse::Version;

/// One request and its answer, as the connection saw them.
pub struct Entry<'a> {
    pub remote_addr: &'a [u8],
    pub remote_port: u16,
    /// The forwarded client (`rgun.client_addr`): the peer unless a
    /// trusted proxy named another.
    pub client_addr: &'a [u8],
    pub method: &'a [u8],
    /// The request target as sent.
    pub target: &'a [u8],
    /// The path, percent-decoded (PATH_INFO).
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub version: Version,
    pub scheme: &'a [u8],
    pub server_name: &'a [u8],
    pub server_port: u16,
    pub content_type: &'a [u8],
    pub content_length: Option<u64>,
    pub headers: HeaderLines<'a>,
    /// The response headers the format asks for.
    pub response: &'a ResponseFields,
    pub status: u16,
    pub body_bytes: u64,
    /// From the parsed head to the end of the call, when the format has a
    /// duration atom.
    pub duration: Option<Duration>,
}

/// The values of the response headers a format's `{name}o` atoms ask for,
/// captured when the application starts its answer; reused from request
/// to request.
#[derive(Default)]
pub struct ResponseFields {
    values: Vec<u8>,
    spans: Vec<Option<(u32, u32)>>,
}

impl ResponseFields {
    /// Keep the values of `names` in `headers` (the last of repeated
    /// lines, as Gunicorn's dictionary of atoms does).
    pub fn capture(&mut self, names: &[Box<[u8]>], headers: HeaderLines<'_>) {
        self.clear();
        self.spans.resize(names.len(), None);
        for (name, value) in headers {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name)) {
                let start = self.values.len() as u32;
                self.values.extend_from_slice(value);
                self.spans[i] = Some((start, self.values.len() as u32));
            }
        }
    }

    /// The application's answer was replaced by the server's own.
    pub fn clear(&mut self) {
        self.values.clear();
        self.spans.iter_mut().for_each(|s| *s = None);
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let (start, end) = (*self.spans.get(index)?)?;
        Some(&self.values[start as usize..end as usize])
    }
}

/// Where a call keeps the response headers its access log line shows.
pub struct Capture<'a> {
    pub names: &'a [Box<[u8]>],
    pub fields: &'a mut ResponseFields,
}

impl Capture<'_> {
    pub fn record(&mut self, headers: HeaderLines<'_>) {
        self.fields.capture(self.names, headers);
    }

    pub fn clear(&mut self) {
        self.fields.clear();
    }
}

/// A variable of the request's environ, as the server hands the request to
/// the application (the WSGI bridge's `environ` before the call).
pub enum EnvValue<'a> {
    Bytes(&'a [u8]),
    Number(u64),
    /// `HTTP_*`: every line of the header, joined as PEP 3333 joins them.
    Header(&'a [u8]),
}

impl<'a> Entry<'a> {
    /// The value of the last `name` line (names compared without regard to
    /// case).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Referer and User-Agent as the combined format has always shown
    /// them: the first line, absent when empty.
    pub fn first_header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers.get(name).filter(|v| !v.is_empty())
    }

    /// The user of `Authorization: Basic`, as Gunicorn finds it: the
    /// decoded credentials up to the first ':', if they are UTF-8.
    pub fn user<'b>(&self, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
        let value = self.header(b"authorization")?;
        if value.len() < 5 || !value[..5].eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let space = value.iter().position(|&b| b == b' ')?;
        base64_decode(value[space + 1..].trim_ascii(), buf)?;
        let user = match buf.iter().position(|&b| b == b':') {
            Some(colon) => &buf[..colon],
            None => &buf[..],
        };
        let user = std::str::from_utf8(user).ok()?;
        (!user.is_empty()).then_some(user.as_bytes())
    }

    /// `{name}e`: `name` in lower case.
    pub fn environ<'s>(&'s self, name: &'s [u8]) -> Option<EnvValue<'s>> {
        if let Some(header) = name.strip_prefix(b"http_") {
            let found = self.headers.iter().any(|(n, _)| environ_header(n, header));
            return found.then_some(EnvValue::Header(header));
        }
        let value = match name {
            b"request_method" => EnvValue::Bytes(self.method),
            b"script_name" => EnvValue::Bytes(b""),
            b"path_info" => EnvValue::Bytes(self.path),
            b"query_string" => EnvValue::Bytes(self.query),
            b"raw_uri" => EnvValue::Bytes(self.target),
            b"server_protocol" => EnvValue::Bytes(self.version.as_bytes()),
            b"server_name" | b"server_port" if self.server_port == 0 => {
                let (host, port) = self.unix_socket_server();
                EnvValue::Bytes(if name == b"server_name" { host } else { port })
            }
            b"server_name" => EnvValue::Bytes(self.server_name),
            b"server_port" => EnvValue::Number(self.server_port.into()),
            b"remote_addr" => EnvValue::Bytes(self.remote_addr),
            b"remote_port" if self.remote_addr.is_empty() => EnvValue::Bytes(b""),
            b"remote_port" => EnvValue::Number(self.remote_port.into()),
            b"content_type" if !self.content_type.is_empty() => EnvValue::Bytes(self.content_type),
            b"content_length" => EnvValue::Number(self.content_length?),
            b"wsgi.url_scheme" => EnvValue::Bytes(self.scheme),
            b"rgun.client_addr" => EnvValue::Bytes(self.client_addr),
            _ => return None,
        };
        Some(value)
    }

    /// On a Unix socket there is no server address: SERVER_NAME and
    /// SERVER_PORT come from the Host header, or the scheme's port, as the
    /// WSGI bridge (and Gunicorn) set them.
    fn unix_socket_server(&self) -> (&'a [u8], &'a [u8]) {
        let default_port: &'static [u8] = if self.scheme == b"https" {
            b"443"
        } else {
            b"80"
        };
        match self.headers.get(b"host") {
            Some(host) => match host.iter().rposition(|&b| b == b':') {
                Some(i) if !host.ends_with(b"]") => (&host[..i], &host[i + 1..]),
                _ => (host, default_port),
            },
            None => (self.server_name, default_port),
        }
    }

    /// Write an `HTTP_*` variable's value: the header's lines joined with
    /// `, ` (`; ` for Cookie), each through `escape`.
    pub fn write_environ_header(
        &self,
        header: &[u8],
        line: &mut Vec<u8>,
        escape: fn(&mut Vec<u8>, &[u8]),
    ) {
        let separator: &[u8] = if header == b"cookie" { b"; " } else { b", " };
        let mut first = true;
        for (name, value) in self.headers {
            if environ_header(name, header) {
                if !first {
                    escape(line, separator);
                }
                escape(line, value);
                first = false;
            }
        }
    }
}

/// Whether header `name` is the variable `HTTP_<key>` (key lower case,
/// `_` for `-`). As in the WSGI bridge: names holding `_` are not passed
/// on, nor Content-Type and Content-Length (CGI's own variables).
fn environ_header(name: &[u8], key: &[u8]) -> bool {
    name.len() == key.len()
        && !name.contains(&b'_')
        && !name.eq_ignore_ascii_case(b"content-type")
        && !name.eq_ignore_ascii_case(b"content-length")
        && name.iter().zip(key).all(|(&n, &k)| {
            (if n == b'-' {
                b'_'
            } else {
                n.to_ascii_lowercase()
            }) == k
        })
}

/// Base64 as Python's `b64decode` reads it by default: characters outside
/// the alphabet skipped, padding required. `None`: not decodable.
fn base64_decode(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let (mut acc, mut bits, mut count, mut pads) = (0u32, 0u32, 0usize, 0usize);
    for &c in text {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pads += 1;
                continue;
            }
            _ => continue,
        };
        if pads > 0 {
            return None;
        }
        count += 1;
        acc = ((acc << 6) | u32::from(sextet)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (count % 4 != 1 && (count + pads) % 4 == 0).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_python_reads_it() {
        let mut out = Vec::new();
        assert_eq!(base64_decode(b"YWxpY2U6c2VjcmV0", &mut out), Some(()));
        assert_eq!(out, b"alice:secret");
        assert_eq!(base64_decode(b"YWI=", &mut out), Some(()));
        assert_eq!(out, b"ab");
        assert_eq!(base64_decode(b"Y W\tI=", &mut out), Some(()));
        assert_eq!(out, b"ab");
        assert_eq!(base64_decode(b"YWI", &mut out), None);
        assert_eq!(base64_decode(b"YWJjZ", &mut out), None);
    }

    #[test]
    fn environ_header_names() {
        assert!(environ_header(b"X-Forwarded-For", b"x_forwarded_for"));
        assert!(!environ_header(b"X_Forwarded-For", b"x_forwarded_for"));
        assert!(!environ_header(b"Content-Type", b"content_type"));
    }
}
