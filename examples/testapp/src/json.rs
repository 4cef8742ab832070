//! Just enough JSON for the testapp's answers (flat objects of strings,
//! numbers and one nested object), written as Python's `json.dumps` writes
//! it: ASCII only, `", "` and `": "`, keys in insertion order, so that an
//! answer reads exactly as testapp_wsgi.py's for the same request.

/// A JSON object being written; [`Object::finish`] closes it.
pub struct Object {
    out: String,
    empty: bool,
}

impl Object {
    pub fn with_capacity(capacity: usize) -> Object {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Object { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push_str(", ");
        }
        self.empty = false;
        push_string(&mut self.out, key.chars());
        self.out.push_str(": ");
    }

    /// A string member; the value is given as characters so that the caller
    /// picks how bytes become text (ISO-8859-1 or lossy UTF-8).
    pub fn string(&mut self, key: &str, value: impl IntoIterator<Item = char>) -> &mut Self {
        self.key(key);
        push_string(&mut self.out, value);
        self
    }

    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.out.push_str(&value.to_string());
        self
    }

    pub fn object(&mut self, key: &str, value: Object) -> &mut Self {
        self.key(key);
        self.out.push_str(&value.finish());
        self
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Bytes read as ISO-8859-1, one character per byte: what a PEP 3333
/// "native string" holds for the request line and headers.
pub fn latin1(bytes: &[u8]) -> impl Iterator<Item = char> + '_ {
    bytes.iter().map(|&b| char::from(b))
}

/// A quoted JSON string with Python's `ensure_ascii` escaping: printable
/// ASCII as is, the usual short escapes, and `\uXXXX` (lower-case hex, a
/// surrogate pair above U+FFFF) for every other character, DEL included.
fn push_string(out: &mut String, chars: impl IntoIterator<Item = char>) {
    out.push('"');
    for c in chars {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, s.chars());
        out
    }

    #[test]
    fn escapes_as_python_json_dumps() {
        // Expected values are Python 3's `json.dumps(s)`.
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(quoted("plain text ~!"), r#""plain text ~!""#);
        assert_eq!(quoted("q\"b\\s/"), r#""q\"b\\s/""#);
        assert_eq!(quoted("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(quoted("\u{0}\u{1f}\u{7f}"), r#""\u0000\u001f\u007f""#);
        assert_eq!(quoted("é€\u{fffd}"), r#""\u00e9\u20ac\ufffd""#);
        assert_eq!(quoted("😀"), r#""\ud83d\ude00""#);
    }

    #[test]
    fn objects_as_python_json_dumps() {
        let mut inner = Object::with_capacity(0);
        inner.string("a", "1".chars()).string("b", latin1(b"\xe9"));
        let mut outer = Object::with_capacity(0);
        outer
            .string("s", "x".chars())
            .object("h", inner)
            .object("e", Object::with_capacity(0))
            .number("n", 42);
        assert_eq!(
            outer.finish(),
            r#"{"s": "x", "h": {"a": "1", "b": "\u00e9"}, "e": {}, "n": 42}"#
        );
        assert_eq!(Object::with_capacity(0).finish(), "{}");
    }
}
