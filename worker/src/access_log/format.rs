//! `--access-logformat`: Gunicorn's access log format, Python's
//! `%(name)s` over a dictionary of atoms, parsed once at startup into
//! pieces. It does not render lines (see `text` and `json`).

/// Gunicorn's default `access_log_format`: Apache's combined format.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// The fields of a JSON line when `--access-logformat` is not given: the
/// combined format's, and the request's parts and duration that a log
/// pipeline wants apart.
pub const DEFAULT_JSON_FORMAT: &str =
    "%(h)s %(u)s %(t)s %(r)s %(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %(f)s %(a)s %(D)s %(p)s";

/// One atom of the format, named as in Gunicorn's documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Atom {
    /// `h`: the remote address.
    RemoteAddr,
    /// `l`: always `-` (identd).
    Ident,
    /// `u`: the user name of HTTP Basic authentication.
    User,
    /// `t`: the time, `[21/Nov/2026:03:37:36 +0000]`.
    Time,
    /// `r`: the request line, `GET /path?q HTTP/1.1`.
    RequestLine,
    /// `m`: the method.
    Method,
    /// `U`: the path, percent-decoded (PATH_INFO), without the query.
    Path,
    /// `q`: the query string.
    Query,
    /// `H`: the protocol, `HTTP/1.1`.
    Protocol,
    /// `s`: the status.
    Status,
    /// `B`: the body bytes sent.
    Bytes,
    /// `b`: the body bytes sent, `-` for none (Apache's CLF).
    BytesClf,
    /// `f`: the Referer header.
    Referer,
    /// `a`: the User-Agent header.
    UserAgent,
    /// `T`: the request's time in whole seconds.
    Seconds,
    /// `M`: in milliseconds.
    Millis,
    /// `D`: in microseconds.
    Micros,
    /// `L`: in decimal seconds, `0.000123`.
    DecimalSeconds,
    /// `p`: the worker's pid, `<1234>`.
    Pid,
    /// `{name}i`: a request header (name in lower case).
    RequestHeader(Box<[u8]>),
    /// `{name}o`: a response header; the index into
    /// [`Format::response_headers`].
    ResponseHeader(usize),
    /// `{name}e`: a variable of the request's environ (name in lower case).
    Environ(Box<[u8]>),
    /// Anything else: `-`, as in Gunicorn.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(Box<[u8]>),
    Atom(Atom),
}

/// A parsed format, and what rendering it needs from a request.
#[derive(Clone, Debug)]
pub struct Format {
    pub pieces: Vec<Piece>,
    /// The response headers `{name}o` asks for, lower case, each once:
    /// captured while the application answers, only these.
    pub response_headers: Vec<Box<[u8]>>,
    /// The format has `T`, `M`, `D` or `L`: the request is timed.
    pub timed: bool,
}

/// Why a format is refused at startup.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("'%' at byte {0} starts neither '%(ATOM)s' nor '%%'")]
    StrayPercent(usize),
    #[error("'%(' at byte {0} has no closing ')'")]
    Unclosed(usize),
    #[error("'%({0})' is not followed by 's' or 'd'")]
    Conversion(String),
}

impl Format {
    pub fn parse(format: &str) -> Result<Format, FormatError> {
        let bytes = format.as_bytes();
        let mut parsed = Format {
            pieces: Vec::new(),
            response_headers: Vec::new(),
            timed: false,
        };
        let mut text = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1)) {
                (b'%', Some(b'%')) => {
                    text.push(b'%');
                    i += 2;
                }
                (b'%', Some(b'(')) => {
                    let close = bytes[i + 2..]
                        .iter()
                        .position(|&b| b == b')')
                        .ok_or(FormatError::Unclosed(i))?
                        + i
                        + 2;
                    let name = &format[i + 2..close];
                    if !matches!(bytes.get(close + 1), Some(b's' | b'd')) {
                        return Err(FormatError::Conversion(name.to_string()));
                    }
                    if !text.is_empty() {
                        let literal = std::mem::take(&mut text).into_boxed_slice();
                        parsed.pieces.push(Piece::Text(literal));
                    }
                    let atom = parsed.atom(name);
                    parsed.pieces.push(Piece::Atom(atom));
                    i = close + 2;
                }
                (b'%', _) => return Err(FormatError::StrayPercent(i)),
                (b, _) => {
                    text.push(b);
                    i += 1;
                }
            }
        }
        if !text.is_empty() {
            parsed.pieces.push(Piece::Text(text.into_boxed_slice()));
        }
        Ok(parsed)
    }

    fn atom(&mut self, name: &str) -> Atom {
        let atom = match name {
            "h" => Atom::RemoteAddr,
            "l" => Atom::Ident,
            "u" => Atom::User,
            "t" => Atom::Time,
            "r" => Atom::RequestLine,
            "m" => Atom::Method,
            "U" => Atom::Path,
            "q" => Atom::Query,
            "H" => Atom::Protocol,
            "s" => Atom::Status,
            "B" => Atom::Bytes,
            "b" => Atom::BytesClf,
            "f" => Atom::Referer,
            "a" => Atom::UserAgent,
            "T" => Atom::Seconds,
            "M" => Atom::Millis,
            "D" => Atom::Micros,
            "L" => Atom::DecimalSeconds,
            "p" => Atom::Pid,
            _ => return self.braced(name),
        };
        if matches!(
            atom,
            Atom::Seconds | Atom::Millis | Atom::Micros | Atom::DecimalSeconds
        ) {
            self.timed = true;
        }
        atom
    }

    /// `{name}i`, `{name}o`, `{name}e`; names compared without regard to
    /// case, as Gunicorn lowers them.
    fn braced(&mut self, name: &str) -> Atom {
        let Some(inner) = name.strip_prefix('{') else {
            return Atom::Unknown;
        };
        let Some((key, kind)) = inner.rsplit_once('}') else {
            return Atom::Unknown;
        };
        let key: Box<[u8]> = key.to_ascii_lowercase().into_bytes().into();
        match kind.to_ascii_lowercase().as_str() {
            "i" => Atom::RequestHeader(key),
            "e" => Atom::Environ(key),
            "o" => {
                let index = match self.response_headers.iter().position(|k| *k == key) {
                    Some(index) => index,
                    None => {
                        self.response_headers.push(key);
                        self.response_headers.len() - 1
                    }
                };
                Atom::ResponseHeader(index)
            }
            _ => Atom::Unknown,
        }
    }

    /// The atoms, in order.
    pub fn atoms(&self) -> impl Iterator<Item = &Atom> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Atom(atom) => Some(atom),
            Piece::Text(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_combined() {
        let format = Format::parse(DEFAULT_FORMAT).unwrap();
        let atoms: Vec<_> = format.atoms().cloned().collect();
        assert_eq!(
            atoms,
            [
                Atom::RemoteAddr,
                Atom::Ident,
                Atom::User,
                Atom::Time,
                Atom::RequestLine,
                Atom::Status,
                Atom::BytesClf,
                Atom::Referer,
                Atom::UserAgent
            ]
        );
        assert!(!format.timed);
        assert_eq!(format.pieces[1], Piece::Text(b" ".to_vec().into()));
    }

    #[test]
    fn braced_atoms_are_lower_cased_and_response_headers_listed_once() {
        let format =
            Format::parse("%({X-Id}i)s %({Server}o)s %({server}O)s %({SERVER}o)d %%%(zz)s %(L)s")
                .unwrap();
        let atoms: Vec<_> = format.atoms().cloned().collect();
        assert_eq!(
            atoms,
            [
                Atom::RequestHeader(b"x-id".to_vec().into()),
                Atom::ResponseHeader(0),
                Atom::ResponseHeader(0),
                Atom::ResponseHeader(0),
                Atom::Unknown,
                Atom::DecimalSeconds
            ]
        );
        assert_eq!(format.response_headers, [b"server".to_vec().into()]);
        assert!(format.timed);
        assert!(format.pieces.contains(&Piece::Text(b" %".to_vec().into())));
    }

    #[test]
    fn malformed_formats_are_refused() {
        assert_eq!(
            Format::parse("a %").unwrap_err(),
            FormatError::StrayPercent(2)
        );
        assert_eq!(
            Format::parse("%h").unwrap_err(),
            FormatError::StrayPercent(0)
        );
        assert_eq!(
            Format::parse("x %(h").unwrap_err(),
            FormatError::Unclosed(2)
        );
        assert_eq!(
            Format::parse("%(h)x").unwrap_err(),
            FormatError::Conversion("h".into())
        );
        assert_eq!(
            Format::parse("%(h)").unwrap_err(),
            FormatError::Conversion("h".into())
        );
    }
}
