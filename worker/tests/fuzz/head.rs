//! The request head parser, `parse::next_head` as a connection calls it
//! and `parse::parse_head` under it: no panic on any input; a head cut
//! anywhere parses as incomplete or as the same refusal, never as another
//! request; every accepted head, written out again, parses to the same
//! request.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use rgun_gateway::ffi;
use rgun_worker::parse::{self, ForwardedScheme, Framing, Head, HeadError, Limits, Version};

use crate::keep::{self, Raw, Saved, seeds_file};

/// The server's defaults (`src/cli.rs`), and limits small enough that
/// short inputs cross them.
fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits {
            request_line: 8190,
            request_fields: 100,
            request_field_size: 8190,
            request_body: 0,
        }),
        Just(Limits {
            request_line: 40,
            request_fields: 4,
            request_field_size: 30,
            request_body: 10,
        }),
    ]
}

/// What a parse gave, owned, to compare one parse with another.
#[derive(Debug, PartialEq)]
enum Parsed {
    Incomplete,
    Refused(HeadError),
    Request(Box<Request>),
}

#[derive(Debug, PartialEq)]
struct Request {
    len: usize,
    method: Raw,
    target: Raw,
    path: Raw,
    query: Raw,
    version: Version,
    framing: Framing,
    content_length: Option<u64>,
    keep_alive: bool,
    expect_continue: bool,
    content_type: Raw,
    forwarded_scheme: ForwardedScheme,
    forwarded_for: bool,
    fields: Vec<(Raw, Raw)>,
}

impl Request {
    fn new(head: &Head<'_>, fields: &[ffi::Header]) -> Request {
        let raw = |bytes: &[u8]| Raw(bytes.to_vec());
        Request {
            len: head.len,
            method: raw(head.method),
            target: raw(head.target),
            path: raw(head.path),
            query: raw(head.query),
            version: head.version,
            framing: head.framing,
            content_length: head.content_length,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            content_type: raw(head.content_type),
            forwarded_scheme: head.forwarded_scheme,
            forwarded_for: head.forwarded_for,
            fields: fields
                .iter()
                // SAFETY: the fields point into the buffer just parsed,
                // alive for this call.
                .map(|f| unsafe { (raw(f.name.as_bytes()), raw(f.value.as_bytes())) })
                .collect(),
        }
    }

    /// The head written out again the plain way: one space between the
    /// parts of the request line, `name: value`, CRLF everywhere.
    fn serialise(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [&self.method.0[..], b" ", &self.target.0, b" "] {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(match self.version {
            Version::Http10 => b"HTTP/1.0\r\n",
            Version::Http11 => b"HTTP/1.1\r\n",
        });
        for (name, value) in &self.fields {
            out.extend_from_slice(&name.0);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&value.0);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// `next_head` on a copy of `raw`, as the connection calls it.
fn next_head(raw: &[u8], limits: &Limits) -> Parsed {
    let mut buf = raw.to_vec();
    let mut fields = Vec::new();
    match parse::next_head(&mut buf, limits, &mut fields) {
        Ok(None) => Parsed::Incomplete,
        Ok(Some(head)) => Parsed::Request(Box::new(Request::new(&head, &fields))),
        Err(e) => Parsed::Refused(e),
    }
}

fn parse_head(raw: &[u8], limits: &Limits) -> Parsed {
    let mut fields = Vec::new();
    match parse::parse_head(raw, limits, &mut fields) {
        Ok(None) => Parsed::Incomplete,
        Ok(Some(head)) => Parsed::Request(Box::new(Request::new(&head, &fields))),
        Err(e) => Parsed::Refused(e),
    }
}

fn saved(raw: &[u8]) -> impl FnOnce() -> Saved {
    move || Saved {
        bytes: raw.to_vec(),
        extension: "http",
    }
}

/// The parts of a request head, each with its near misses: what a request
/// is built from is valid, and then, now and then, one part is swapped for
/// one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Method,
    /// A space of the request line.
    Space,
    Target,
    Version,
    Name,
    Separator,
    Value,
    LineEnd,
}

impl Part {
    fn near_misses(self) -> &'static [&'static str] {
        match self {
            Part::Method => &["G\0T", "GE T", "GET\t", "(GET)", "", "CONNECT", "\u{e9}"],
            Part::Space => &["  ", "", "\t", "\r\n", "\x0b"],
            Part::Target => &[
                "*",
                "http:///x",
                "http://u@h/",
                "h:443",
                "/a#f",
                "/caf\u{e9}",
                "/a b",
                "",
                "/\t",
                "http://h:8x/",
                "ftp://h/",
            ],
            Part::Version => &[
                "HTTP/2.0",
                "HTTP/0.9",
                "HTTP/3",
                "http/1.1",
                "HTTP/1.10",
                "HTTP/11",
                "HTTP/1.1 ",
                "HTTX/1.1",
                "HTTP/1.a",
                "HTTP/1",
                "",
            ],
            Part::Name => &[
                "Host ",
                " Host",
                "X@A",
                "",
                "X A",
                "Content-Length\0",
                "\u{e9}",
                "Host\t",
            ],
            Part::Separator => &[" : ", "", " :", "\t:"],
            Part::Value => &[
                "h:99z",
                "-1",
                "+5",
                "1_0",
                "x\0y",
                "x\ry",
                "a:b:c",
                "[::1",
                "\x7f",
                "5, 6",
                "18446744073709551616",
                "gzip, chunked",
                "chunked, chunked",
                "chunked, gzip",
                "identity",
                "200-ok",
                "",
                " ",
            ],
            Part::LineEnd => &[
                "\n",
                "\r",
                "\r\r\n",
                "",
                "\r\n folded\r\n",
                "\r\n\tfolded\r\n",
            ],
        }
    }
}

/// Field lines that are valid alone (together they may well conflict).
const FIELDS: &[(&str, &[&str])] = &[
    (
        "Content-Length",
        &["0", "5", "3", "5, 5", "05", "9223372036854775807"],
    ),
    ("Transfer-Encoding", &["chunked", "Chunked"]),
    ("Expect", &["100-continue", "100-Continue"]),
    (
        "Connection",
        &["close", "keep-alive", "Keep-Alive, close", "upgrade"],
    ),
    ("Content-Type", &["text/plain", "a/b; c=\"d e\""]),
    ("X-Forwarded-Proto", &["https", "http"]),
    ("Cookie", &["a=b", "c=d"]),
    ("X-A", &["x", " padded\t", "caf\u{e9}", "a, b", "\"q\""]),
    ("Content_Length", &["5"]),
];

const HOSTS: &[&str] = &["x", "a.example:8000", "[::1]:80", "127.0.0.1", "h:"];

fn text(values: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    select(values).prop_map(|v| v.as_bytes().to_vec())
}

/// A field line's name, separator and value, the name in any case.
fn field() -> impl Strategy<Value = (Vec<u8>, &'static str, Vec<u8>)> {
    let separator = select(&[": ", ":", ":\t", ":  "][..]);
    let named = (0..FIELDS.len()).prop_flat_map(|i| {
        let (name, values) = FIELDS[i];
        (Just(name.as_bytes().to_vec()), text(values))
    });
    let other = (
        "X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,6}".prop_map(String::into_bytes),
        "[ -~]{0,10}".prop_map(String::into_bytes),
    );
    (
        prop_oneof![4 => named, 1 => other],
        separator,
        any::<bool>(),
    )
        .prop_map(|((mut name, value), separator, lower)| {
            if lower {
                name.make_ascii_lowercase();
            }
            (name, separator, value)
        })
}

/// The request line's parts, valid; `*` only with OPTIONS.
fn request_line() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<u8>)> {
    let method = text(&[
        "GET",
        "GET",
        "POST",
        "POST",
        "PUT",
        "HEAD",
        "OPTIONS",
        "DELETE",
        "PATCH",
        "M-SEARCH",
        "X!#$%&'*+.^_`|~",
    ]);
    let target = prop_oneof![
        4 => text(&[
            "/", "/echo", "/a?b=c", "/a%20b?q=%41", "/?", "//x", "http://h/x", "HTTPS://h:8/x?y",
            "http://h", "http://h?q", "http://[::1]:8/", "/%zz",
        ]),
        1 => "/[!-~&&[^#]]{0,10}".prop_map(String::into_bytes),
    ];
    let version = text(&[
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/1.9",
    ]);
    (method, target, version, any::<bool>()).prop_map(|(method, target, version, asterisk)| {
        if asterisk && method == b"OPTIONS" {
            (method, b"*".to_vec(), version)
        } else {
            (method, target, version)
        }
    })
}

/// How a built request is spoilt, if it is.
#[derive(Clone, Debug)]
enum Fault {
    None,
    /// The part at the first index, swapped for its near miss at the
    /// second.
    NearMiss(prop::sample::Index, prop::sample::Index),
    Edits(Vec<Edit>),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        2 => Just(Fault::None),
        2 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(part, miss)| Fault::NearMiss(part, miss)),
        1 => vec(edit(), 1..4).prop_map(Fault::Edits),
    ]
}

/// One change to the bytes: at a position (as a fraction of the length),
/// replace, insert or remove a byte.
#[derive(Clone, Debug)]
pub enum Edit {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        select(&b"\r\n\0 \t:,;\"\\/?#%HTP1.0x\x7f\x80\xff"[..]),
        any::<u8>()
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
    ]
}

pub fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for edit in edits {
        match *edit {
            Edit::Replace(at, b) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            Edit::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), b),
            Edit::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            _ => {}
        }
    }
}

/// A request head: maybe empty lines before it, a request line, Host
/// (almost always, somewhere among the fields), other field lines, the
/// empty line, and some bytes after it (a body or the next request);
/// valid, or spoilt by one near miss or a few changed bytes.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        select(vec![&b""[..], b"", b"", b"\r\n", b"\r\n\r\n", b"\n"]),
        request_line(),
        prop::option::weighted(0.9, text(HOSTS)),
        any::<prop::sample::Index>(),
        vec(field(), 0..5),
        vec(any::<u8>(), 0..8),
        fault(),
    )
        .prop_map(
            |(lead, (method, target, version), host, at, fields, after, fault)| {
                let mut parts: Vec<(Part, Vec<u8>)> = vec![
                    (Part::Method, method),
                    (Part::Space, b" ".to_vec()),
                    (Part::Target, target),
                    (Part::Space, b" ".to_vec()),
                    (Part::Version, version),
                    (Part::LineEnd, b"\r\n".to_vec()),
                ];
                let mut lines: Vec<(Vec<u8>, &str, Vec<u8>)> = fields;
                if let Some(host) = host {
                    lines.insert(at.index(lines.len() + 1), (b"Host".to_vec(), ": ", host));
                }
                for (name, separator, value) in lines {
                    parts.push((Part::Name, name));
                    parts.push((Part::Separator, separator.as_bytes().to_vec()));
                    parts.push((Part::Value, value));
                    parts.push((Part::LineEnd, b"\r\n".to_vec()));
                }
                parts.push((Part::LineEnd, b"\r\n".to_vec()));
                let mut edits = Vec::new();
                match fault {
                    Fault::None => {}
                    Fault::NearMiss(part, miss) => {
                        let at = part.index(parts.len());
                        let (kind, bytes) = &mut parts[at];
                        *bytes = miss.get(kind.near_misses()).as_bytes().to_vec();
                    }
                    Fault::Edits(e) => edits = e,
                }
                let mut raw = lead.to_vec();
                parts
                    .iter()
                    .for_each(|(_, bytes)| raw.extend_from_slice(bytes));
                raw.extend_from_slice(&after);
                apply(&mut raw, &edits);
                raw
            },
        )
}

/// Inputs of every kind: built requests, and bytes of any value.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => request(),
        1 => vec(any::<u8>(), 0..64),
        1 => vec(select(&b"GET / HTTP/1.1\r\n:"[..]), 0..64),
    ]
}

/// Where the parser is known to answer a prefix otherwise than the whole:
/// found here, reported, and left for the parser's owners to fix. Both
/// answers are refusals, of the kinds decided before a head is complete,
/// and only the status depends on where the bytes were cut. `GET / HTTP/2`
/// is malformed (400) while `GET / HTTP/2.0` is a version not supported
/// (505, RFC 9110 §15.6.6) and `GET / HTTP/2.0\r\r` malformed again; a
/// long line of garbage with a space in it is too long (414) until its LF
/// comes and malformed (400) after, or over the head's size bound (431)
/// once that many bytes are in, while its first byte alone, if no token
/// byte, was already 400.
fn known_disagreement(part: HeadError, whole: HeadError) -> bool {
    use HeadError::{FieldTooLarge, LineTooLong, Malformed, TooManyFields, Version};
    let early = |e| {
        matches!(
            e,
            Malformed | LineTooLong | FieldTooLarge | TooManyFields | Version
        )
    };
    early(part) && early(whole)
}

proptest! {
    #![proptest_config(keep::config(seeds_file!("head"), "head"))]

    /// A head cut anywhere is incomplete, or refused as the whole is: a
    /// request must not depend on how the network cut it.
    #[test]
    fn a_prefix_is_incomplete_or_the_same_answer(
        Raw(raw) in input().prop_map(Raw),
        limits in limits(),
    ) {
        keep::check(saved(&raw), || {
            let whole = next_head(&raw, &limits);
            for end in 0..raw.len() {
                let part = next_head(&raw[..end], &limits);
                let agrees = match (&whole, &part) {
                    (_, Parsed::Incomplete) => match &whole {
                        Parsed::Request(request) => end < request.len,
                        _ => true,
                    },
                    // The same answer: the same status.
                    (Parsed::Refused(a), Parsed::Refused(b)) => {
                        a.status() == b.status() || known_disagreement(*b, *a)
                    }
                    (Parsed::Request(a), Parsed::Request(b)) => a == b && end >= a.len,
                    _ => false,
                };
                prop_assert!(
                    agrees,
                    "cut at {end} of {:?}: {part:?}, but the whole: {whole:?}",
                    Raw(raw.clone())
                );
            }
            Ok(())
        })?;
    }

    /// `next_head` is `parse_head` but for HTTP/1.2 and up, which it serves
    /// as HTTP/1.1.
    #[test]
    fn next_head_is_parse_head_but_for_higher_minor_versions(
        Raw(raw) in input().prop_map(Raw),
        limits in limits(),
    ) {
        keep::check(saved(&raw), || {
            let served = next_head(&raw, &limits);
            match parse_head(&raw, &limits) {
                Parsed::Refused(HeadError::Version) => {}
                parsed => prop_assert_eq!(parsed, served, "{:?}", Raw(raw.clone())),
            }
            Ok(())
        })?;
    }

    /// An accepted head, written out the plain way, is the same request.
    #[test]
    fn an_accepted_head_written_out_again_parses_the_same(
        Raw(raw) in request().prop_map(Raw),
        limits in limits(),
    ) {
        keep::check(saved(&raw), || {
            let Parsed::Request(first) = next_head(&raw, &limits) else {
                return Ok(());
            };
            let again = first.serialise();
            match next_head(&again, &limits) {
                Parsed::Request(second) => {
                    prop_assert_eq!(second.len, again.len());
                    prop_assert_eq!(
                        Request {
                            len: first.len,
                            ..*second
                        },
                        *first,
                        "{:?} written out as {:?}",
                        Raw(raw.clone()),
                        Raw(again.clone())
                    );
                }
                other => prop_assert!(
                    false,
                    "{:?} written out as {:?}: {other:?}",
                    Raw(raw.clone()),
                    Raw(again.clone())
                ),
            }
            Ok(())
        })?;
    }
}
