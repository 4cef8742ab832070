//! Query-string arguments read the way Python's `urllib.parse.parse_qs` reads
//! them (testapp_wsgi.py uses it), so both apps agree on odd input. It only
//! finds one argument; it builds no map, since each route reads one or two.

use rgun_gateway::Error;

/// The first value of `name`, percent-decoded, as bytes (not text: `/header`
/// must be able to pass any byte on). As in `parse_qs`, pairs are split on
/// `&` only, a pair without `=` or with an empty value is dropped (so
/// `n=&n=5` gives `5`), and names are compared after decoding.
pub fn arg(query: &[u8], name: &str) -> Option<Vec<u8>> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if value.is_empty() || decode(key) != name.as_bytes() {
            return None;
        }
        Some(decode(value))
    })
}

/// An integer argument, `default` when absent. Surrounding whitespace is
/// allowed and a sign too, as Python's `int()` allows; anything else is an
/// error, which the server answers with a `500` as it would the WSGI app's
/// `ValueError`.
pub fn int(query: &[u8], name: &str, default: i64) -> Result<i64, Error> {
    let Some(raw) = arg(query, name) else {
        return Ok(default);
    };
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            let shown = String::from_utf8_lossy(&raw);
            format!("query argument {name}={shown:?} is not an integer").into()
        })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XY` a
/// byte, and a `%` not followed by two hex digits is kept as it is
/// (Python's `unquote` does the same rather than failing).
pub fn decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(digit: Option<&u8>) -> Option<u8> {
    match *digit? {
        d @ b'0'..=b'9' => Some(d - b'0'),
        d @ b'a'..=b'f' => Some(d - b'a' + 10),
        d @ b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Option<Vec<u8>>) -> Option<String> {
        v.map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn decodes_like_unquote_plus() {
        assert_eq!(decode(b"a+b%20c"), b"a b c");
        assert_eq!(decode(b"%0D%0a"), b"\r\n");
        assert_eq!(decode(b"%2B+"), b"+ ");
        assert_eq!(decode(b"%FF%00"), [0xff, 0]);
        // Malformed escapes are kept as they are.
        assert_eq!(decode(b"100%"), b"100%");
        assert_eq!(decode(b"%4"), b"%4");
        assert_eq!(decode(b"%zz%41"), b"%zzA");
        assert_eq!(decode(b""), b"");
    }

    #[test]
    fn first_non_empty_value_wins() {
        assert_eq!(text(arg(b"n=1&n=2", "n")), Some("1".into()));
        assert_eq!(text(arg(b"n=&n=2", "n")), Some("2".into()));
        assert_eq!(text(arg(b"n", "n")), None);
        assert_eq!(text(arg(b"n=", "n")), None);
        assert_eq!(text(arg(b"", "n")), None);
        assert_eq!(text(arg(b"&&m=1&&n=3&", "n")), Some("3".into()));
        assert_eq!(text(arg(b"nn=1", "n")), None);
        // Only the first `=` splits; the name is decoded before comparing.
        assert_eq!(text(arg(b"v=a=b", "v")), Some("a=b".into()));
        assert_eq!(text(arg(b"%6E=4", "n")), Some("4".into()));
        assert_eq!(text(arg(b"a+b=c", "a b")), Some("c".into()));
        // `;` is no separator (Python >= 3.10).
        assert_eq!(text(arg(b"n=1;m=2", "n")), Some("1;m=2".into()));
    }

    #[test]
    fn integers() {
        assert_eq!(int(b"", "n", 7).unwrap(), 7);
        assert_eq!(int(b"n=12", "n", 0).unwrap(), 12);
        assert_eq!(int(b"n=+12", "n", 0).unwrap(), 12);
        assert_eq!(int(b"n=-3", "n", 0).unwrap(), -3);
        assert_eq!(int(b"n=+4+", "n", 0).unwrap(), 4);
        assert_eq!(int(b"n=%205", "n", 0).unwrap(), 5);
        assert!(int(b"n=abc", "n", 0).is_err());
        assert!(int(b"n=1.5", "n", 0).is_err());
        assert!(int(b"n=99999999999999999999", "n", 0).is_err());
    }
}
