//! The HTTP/1.1 grammar both sides of the gateway check against, so that
//! they agree: what a token and a field value are (RFC 9110 §5.6.2, §5.5),
//! what a Content-Length is (RFC 9110 §8.6, RFC 9112 §6.3), and a safe view
//! of a request's header lines. It judges bytes only: framing, limits and
//! what to answer stay with whoever calls it.

use crate::ffi;

/// A byte table of the ASCII letters and digits and the bytes of `extra`,
/// built at compile time: the shape of most of RFC 3986's and RFC 9110's
/// character classes.
pub const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// tchar (RFC 9110 §5.6.2): `!#$%&'*+-.^_`|~`, digits and letters.
const TOKEN_BYTES: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// field-vchar / SP / HTAB (RFC 9110 §5.5): VCHAR (0x21-0x7E), obs-text
/// (0x80-0xFF), SP and HTAB; no other control byte (so no CR, LF, NUL or
/// DEL).
const FIELD_VALUE_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c == b'\t' || (c >= 0x20 && c != 0x7f);
        b += 1;
    }
    table
};

/// A byte of a token (RFC 9110 §5.6.2).
#[inline]
pub fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[usize::from(b)]
}

/// Every byte of `s` is one `table` allows. One look-up per byte and no
/// branch: it runs on every header line of every request and answer, whose
/// bytes are nearly always good, so a bad one found early saves nothing
/// worth a branch per byte.
#[inline]
pub fn all_bytes_in(table: &[bool; 256], s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| ok & table[usize::from(b)])
}

/// `token = 1*tchar` (RFC 9110 §5.6.2): what a field name is (§5.1).
#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && all_bytes_in(&TOKEN_BYTES, s)
}

/// A byte a field value may hold (RFC 9110 §5.5).
#[inline]
pub fn is_field_value_byte(b: u8) -> bool {
    FIELD_VALUE_BYTES[usize::from(b)]
}

/// A field value (RFC 9110 §5.5): visible bytes, obs-text, SP and HTAB; an
/// empty value is one. Leading and trailing whitespace is not checked for:
/// it is allowed on the wire and not part of the value.
#[inline]
pub fn is_field_value(s: &[u8]) -> bool {
    // The rule as arithmetic rather than a table, and without a branch per
    // byte, so that the compiler can check many bytes at a time.
    s.iter().fold(true, |ok, &b| {
        ok & ((b == b'\t') | ((b >= 0x20) & (b != 0x7f)))
    })
}

/// Why a Content-Length value is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentLengthError {
    #[error("Content-Length is empty (RFC 9110 §8.6: 1*DIGIT)")]
    Empty,
    #[error("Content-Length holds a byte that is no digit (RFC 9110 §8.6: 1*DIGIT)")]
    NotDigits,
    #[error("Content-Length does not fit in 64 bits")]
    TooLarge,
    #[error("Content-Length lists different values (RFC 9112 §6.3)")]
    Conflicting,
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6), strictly: no sign, no
/// whitespace, no list, nothing that overflows a `u64`. What a sender
/// (an application handing the server its response) must write.
pub fn content_length(value: &[u8]) -> Result<u64, ContentLengthError> {
    if value.is_empty() {
        return Err(ContentLengthError::Empty);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(ContentLengthError::NotDigits);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(ContentLengthError::TooLarge)
    })
}

/// A received Content-Length line (RFC 9112 §6.3 ¶5): a comma-separated
/// list of the same `1*DIGIT`, optional whitespace around each element, is
/// that one value (`5, 5` is 5); an empty element, or two that differ, make
/// it invalid. Repeated lines are the same list: a caller compares each
/// line's value with the one before.
pub fn content_length_list(value: &[u8]) -> Result<u64, ContentLengthError> {
    let mut agreed = None;
    for element in value.split(|&b| b == b',') {
        let n = content_length(trim_ows(element))?;
        if agreed.is_some_and(|seen| seen != n) {
            return Err(ContentLengthError::Conflicting);
        }
        agreed = Some(n);
    }
    // `split` yields at least one element, and each one was checked.
    agreed.ok_or(ContentLengthError::Empty)
}

/// `OWS` (RFC 9110 §5.6.3) trimmed from both ends.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The header lines of a request (or of a response an application hands
/// the server), as `(name, value)` byte slices: a safe view over the raw
/// pointer and count of the ABI. Names keep the case they were sent in;
/// lines keep their order, repeats included.
#[derive(Clone, Copy, Debug)]
pub struct HeaderLines<'a> {
    lines: &'a [ffi::Header],
}

impl<'a> HeaderLines<'a> {
    /// No header lines at all.
    pub const EMPTY: HeaderLines<'static> = HeaderLines { lines: &[] };

    /// The header lines of `request`.
    ///
    /// # Safety
    /// Unless `request.header_count` is 0 or `request.headers` is null,
    /// `request.headers` must point at `request.header_count` headers, each
    /// name and value readable for `'a`: what the server promises for the
    /// duration of a call.
    pub unsafe fn of_request(request: &'a ffi::Request) -> HeaderLines<'a> {
        // SAFETY: the caller's promise, passed on.
        unsafe { HeaderLines::from_raw(request.headers, request.header_count) }
    }

    /// The `count` header lines at `headers`; none when `count` is 0 or
    /// `headers` is null.
    ///
    /// # Safety
    /// Unless `count` is 0 or `headers` is null, `headers` must point at
    /// `count` headers, each name and value readable for `'a`.
    pub unsafe fn from_raw(headers: *const ffi::Header, count: usize) -> HeaderLines<'a> {
        if count == 0 || headers.is_null() {
            return HeaderLines { lines: &[] };
        }
        // SAFETY: the caller promises `count` headers at `headers`,
        // readable for 'a.
        let lines = unsafe { core::slice::from_raw_parts(headers, count) };
        HeaderLines { lines }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Every line, in order, as `(name, value)`.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            lines: self.lines.iter(),
        }
    }

    /// The value of the first line called `name` (compared without regard
    /// to ASCII case).
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for HeaderLines<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// The lines of a [`HeaderLines`], as `(name, value)`.
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    lines: core::slice::Iter<'a, ffi::Header>,
}

/// A line's name and value.
///
/// # Safety
/// Both must be readable for `'a`.
unsafe fn line_bytes<'a>(header: &ffi::Header) -> (&'a [u8], &'a [u8]) {
    // SAFETY: the caller's promise.
    unsafe { (header.name.as_bytes(), header.value.as_bytes()) }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // SAFETY: a `HeaderIter` only comes from a `HeaderLines`, which
        // its unsafe constructors make only over lines readable for 'a.
        self.lines.next().map(|h| unsafe { line_bytes(h) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.lines.size_hint()
    }
}

impl DoubleEndedIterator for HeaderIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        // SAFETY: as in `next`.
        self.lines.next_back().map(|h| unsafe { line_bytes(h) })
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}

impl core::iter::FusedIterator for HeaderIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    const TCHAR_SPECIALS: &[u8] = b"!#$%&'*+-.^_`|~";

    #[test]
    fn token_bytes_are_exactly_tchar() {
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || TCHAR_SPECIALS.contains(&b);
            assert_eq!(is_token_byte(b), want, "byte {b:#04x}");
        }
    }

    #[test]
    fn tokens() {
        for good in [
            &b"X-Test_1"[..],
            b"a",
            b"Content-Length",
            b"!#$%&'*+-.^_`|~09azAZ",
        ] {
            assert!(is_token(good), "{good:?}");
        }
        for bad in [
            &b""[..],
            b"X Test",
            b"X:Test",
            b"X(A)",
            b"a\"b",
            b"a,b",
            b"a/b",
            b"a;b",
            b"a=b",
            b"a@b",
            b"a[b]",
            b"a{b}",
            b"a\\b",
            b"a?b",
            b"a<b>",
            b"a\tb",
            b"a\x01",
            b"a\x7f",
            b"caf\xe9",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn field_value_bytes_are_vchar_obs_text_sp_htab() {
        for b in 0..=255u8 {
            let want = b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
            assert_eq!(is_field_value_byte(b), want, "byte {b:#04x}");
        }
    }

    #[test]
    fn field_values() {
        for good in [
            &b""[..],
            b"a b\tc \xff",
            b" padded ",
            b"\"quoted\"",
            b"\x80",
        ] {
            assert!(is_field_value(good), "{good:?}");
        }
        for bad in [
            &b"a\rb"[..],
            b"a\nb",
            b"a\0b",
            b"\x7f",
            b"a\x01",
            b"\x1b[31m",
            b"\x0b",
            b"\x0c",
        ] {
            assert!(!is_field_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn strict_content_length() {
        assert_eq!(content_length(b"0"), Ok(0));
        assert_eq!(content_length(b"00012"), Ok(12));
        assert_eq!(content_length(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            content_length(b"18446744073709551616"),
            Err(ContentLengthError::TooLarge)
        );
        assert_eq!(
            content_length(b"99999999999999999999999"),
            Err(ContentLengthError::TooLarge)
        );
        assert_eq!(content_length(b""), Err(ContentLengthError::Empty));
        for bad in [
            &b" 5"[..],
            b"5 ",
            b"+5",
            b"-1",
            b"5,5",
            b"0x10",
            b"1e3",
            b"12a",
            b"\xd9\xa1",
        ] {
            assert_eq!(
                content_length(bad),
                Err(ContentLengthError::NotDigits),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn content_length_lists_of_one_value() {
        assert_eq!(content_length_list(b"5"), Ok(5));
        assert_eq!(content_length_list(b"5, 5"), Ok(5));
        assert_eq!(content_length_list(b"5 ,\t5,5"), Ok(5));
        assert_eq!(content_length_list(b" 7 "), Ok(7));
        assert_eq!(content_length_list(b"05, 5"), Ok(5));
        assert_eq!(
            content_length_list(b"5, 6"),
            Err(ContentLengthError::Conflicting)
        );
        for empty in [&b""[..], b" ", b"5,", b",5", b"5,,5", b"5, ,5"] {
            assert_eq!(
                content_length_list(empty),
                Err(ContentLengthError::Empty),
                "{empty:?}"
            );
        }
        for bad in [&b"5;5"[..], b"+5", b"5 5", b"-1, -1"] {
            assert_eq!(
                content_length_list(bad),
                Err(ContentLengthError::NotDigits),
                "{bad:?}"
            );
        }
        assert_eq!(
            content_length_list(b"1, 99999999999999999999999"),
            Err(ContentLengthError::TooLarge)
        );
    }

    #[test]
    fn ows_is_trimmed_from_both_ends_only() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"\ra\r"), b"\ra\r");
    }

    fn header(name: &'static [u8], value: &'static [u8]) -> ffi::Header {
        ffi::Header {
            name: ffi::Str::new(name),
            value: ffi::Str::new(value),
        }
    }

    #[test]
    fn header_lines_of_a_request() {
        let lines = [
            header(b"Host", b"example.com"),
            header(b"Accept", b"text/html"),
            header(b"accept", b""),
        ];
        let mut request = ffi::Request {
            method: ffi::Str::new(b"GET"),
            raw_uri: ffi::Str::new(b"/"),
            path: ffi::Str::new(b"/"),
            query: ffi::Str::EMPTY,
            script_name: ffi::Str::EMPTY,
            protocol: ffi::Str::new(b"HTTP/1.1"),
            scheme: ffi::Str::new(b"http"),
            server_name: ffi::Str::new(b"localhost"),
            remote_addr: ffi::Str::EMPTY,
            content_type: ffi::Str::EMPTY,
            headers: lines.as_ptr(),
            header_count: lines.len(),
            content_length: -1,
            server_port: 80,
            remote_port: 0,
            body_chunked: 0,
            client_addr: ffi::Str::EMPTY,
        };
        // SAFETY: `lines` and the statics they point at outlive the view.
        let view = unsafe { HeaderLines::of_request(&request) };
        assert_eq!(view.len(), 3);
        assert!(!view.is_empty());
        let all: Vec<_> = view.iter().collect();
        assert_eq!(
            all,
            [
                (&b"Host"[..], &b"example.com"[..]),
                (b"Accept", b"text/html"),
                (b"accept", b""),
            ]
        );
        assert_eq!(view.get(b"ACCEPT"), Some(&b"text/html"[..]));
        assert_eq!(view.get(b"host"), Some(&b"example.com"[..]));
        assert_eq!(view.get(b"cookie"), None);
        assert_eq!(view.iter().next_back(), Some((&b"accept"[..], &b""[..])));
        assert_eq!(view.into_iter().len(), 3);
        assert_eq!(view.iter().skip(1).len(), 2);

        // No lines: a count of 0 whatever the pointer, or a null pointer.
        request.header_count = 0;
        // SAFETY: a count of 0 reads nothing.
        assert!(unsafe { HeaderLines::of_request(&request) }.is_empty());
        request.headers = core::ptr::null();
        request.header_count = 3;
        // SAFETY: a null pointer is read as no lines.
        assert!(unsafe { HeaderLines::of_request(&request) }.is_empty());
        assert_eq!(HeaderLines::EMPTY.iter().count(), 0);
    }
}
