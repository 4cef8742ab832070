//! The parser's cases: one request head, one expectation.
use super::*;

fn limits() -> Limits {
    Limits {
        request_line: 4094,
        request_fields: 100,
        request_field_size: 8190,
        request_body: 0,
    }
}

fn parse(raw: &[u8]) -> Result<Option<(Framing, bool, usize)>, HeadError> {
    let mut fields = Vec::new();
    parse_head(raw, &limits(), &mut fields).map(|h| h.map(|h| (h.framing, h.keep_alive, h.len)))
}

fn status(raw: &str) -> u16 {
    match parse(raw.as_bytes()) {
        Err(e) => e.status(),
        Ok(Some(_)) => 200,
        Ok(None) => 0,
    }
}

#[test]
fn complete_heads_and_their_framing() {
    let raw = b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(
        parse(raw),
        Ok(Some((Framing::Length(5), true, raw.len() - 5)))
    );
    let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(parse(raw), Ok(Some((Framing::Chunked, true, raw.len()))));
    let raw = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(parse(raw), Ok(Some((Framing::None, false, raw.len()))));
    let raw = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
    assert_eq!(parse(raw), Ok(Some((Framing::None, true, raw.len()))));
    let raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n";
    assert_eq!(parse(raw), Ok(Some((Framing::None, false, raw.len()))));
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n"),
        200
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
        200
    );
}

#[test]
fn incomplete_heads_wait() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    assert_eq!(parse(b"GE"), Ok(None));
}

#[test]
fn every_malformed_class_gets_its_status() {
    let cases: &[(&str, u16)] = &[
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX(A): a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\n",
            400,
        ),
        // The same media type twice is still two lines of a field that
        // is no list.
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: a/b\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type:\r\nContent-Type: a/b\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nAccept: a/b\r\nAccept: c/d\r\n\r\n",
            200,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
            200,
        ),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        // Served as HTTP/1.1 by the caller (higher_minor_version).
        ("GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
        ("GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
        ("GARBAGE\r\n\r\n", 400),
        ("GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (
            "GET http://example.com/a?b HTTP/1.1\r\nHost: x\r\n\r\n",
            200,
        ),
        // A space in the target is a bad request line, not a bad version.
        ("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("\r\nGET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x:99z\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n", 200),
        ("GET / HTTP/1.1\r\nHost: example.com:8000\r\n\r\n", 200),
        ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200),
        ("GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET http://u@h/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
        ("GET / HTTP/1.0\r\nExpect: 200-ok\r\n\r\n", 200),
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            501,
        ),
        ("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ];
    for (raw, want) in cases {
        assert_eq!(status(raw), *want, "{raw:?}");
    }
}

#[test]
fn limits_are_enforced() {
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    assert_eq!(status(&long), 414);
    let partial_long = format!("GET /{}", "a".repeat(5000));
    assert_eq!(status(&partial_long), 414);
    // A method that long is a bad request, not a long URI.
    assert_eq!(status(&"A".repeat(5000)), 400);
    let long_method = format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(5000));
    assert_eq!(status(&long_method), 400);
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
        431
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(9000)
    );
    assert_eq!(status(&big), 431);
    let mut fields = Vec::new();
    let small_body = Limits {
        request_body: 10,
        ..limits()
    };
    let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n";
    assert_eq!(
        parse_head(raw, &small_body, &mut fields)
            .unwrap_err()
            .status(),
        413
    );
}

#[test]
fn targets_split_into_path_and_query() {
    let mut fields = Vec::new();
    let raw = b"GET http://h:1?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
    assert_eq!((head.path, head.query), (&b"/"[..], &b"x=1"[..]));
    let raw = b"GET /a%20b?q=%41 HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
    assert_eq!((head.path, head.query), (&b"/a%20b"[..], &b"q=%41"[..]));
    assert_eq!(fields.len(), 1);
    // Absolute form: the target's authority is the Host the app sees.
    let raw = b"GET http://other.example:8080/p HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
    assert_eq!(head.path, b"/p");
    // SAFETY: the field points into `raw`, alive here.
    let host = unsafe { fields[0].value.as_bytes() };
    assert_eq!(host, b"other.example:8080");
}

#[test]
fn content_type_and_length_are_single_values() {
    let mut fields = Vec::new();
    let raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Length: 3, 3\r\n\r\n";
    let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
    assert_eq!(head.content_type, b"a/b");
    assert_eq!(head.content_length, Some(3));
    assert_eq!(head.framing, Framing::Length(3));
    let raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n";
    assert_eq!(
        parse_head(raw, &limits(), &mut fields).unwrap_err(),
        HeadError::RepeatedContentType
    );
    let raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
    assert_eq!(head.content_type, b"");
    assert_eq!(head.content_length, None);
}

#[test]
fn percent_decoding_keeps_stray_percents() {
    let mut out = Vec::new();
    percent_decode(b"/a%20b%zz%4", &mut out);
    assert_eq!(out, b"/a b%zz%4");
}

#[test]
fn forwarded_scheme_headers_agree_or_conflict() {
    let scheme = |lines: &str| {
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{lines}\r\n");
        let mut fields = Vec::new();
        let head = parse_head(raw.as_bytes(), &limits(), &mut fields)
            .unwrap()
            .unwrap();
        (head.forwarded_scheme, head.forwarded_for)
    };
    use ForwardedScheme::*;
    assert_eq!(scheme(""), (Absent, false));
    assert_eq!(scheme("X-Forwarded-Proto: https\r\n"), (Https, false));
    assert_eq!(scheme("x-forwarded-proto: HTTPS\r\n"), (Https, false));
    assert_eq!(scheme("X-Forwarded-Proto: http\r\n"), (Http, false));
    assert_eq!(scheme("X-Forwarded-Ssl: on\r\n"), (Https, false));
    assert_eq!(scheme("X-Forwarded-Protocol: ssl\r\n"), (Https, false));
    assert_eq!(
        scheme("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Protocol: ssl\r\n"),
        (Https, false)
    );
    assert_eq!(
        scheme("X-Forwarded-Proto: http\r\nX-Forwarded-Ssl: off\r\n"),
        (Http, false)
    );
    assert_eq!(
        scheme("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"),
        (Conflict, false)
    );
    assert_eq!(
        scheme("X-Forwarded-Proto: http\r\nX-Forwarded-Protocol: ssl\r\n"),
        (Conflict, false)
    );
    // The same header twice, saying two things.
    assert_eq!(
        scheme("X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n"),
        (Conflict, false)
    );
    // Underscores are another name: not a forwarded header at all.
    assert_eq!(
        scheme("X_Forwarded_Proto: https\r\nX_Forwarded_For: 1.2.3.4\r\n"),
        (Absent, false)
    );
    assert_eq!(scheme("X-Forwarded-For: 1.2.3.4\r\n"), (Absent, true));
}

/// RFC 3986 §3.2.2's host, as RFC 9112 §3.2 has an invalid one refused:
/// an IP-literal is IPv6 or IPvFuture, a reg-name's `%` starts two hex
/// digits.
#[test]
fn hosts_follow_rfc_3986() {
    use super::target::is_valid_host;
    for good in [
        "example.com",
        "example.com:8080",
        "a%20b",
        "a%20b:80",
        "%41",
        "[::1]",
        "[::1]:8000",
        "[2001:db8::ffff:192.0.2.1]",
        "[v1.fe80::a+en1]",
        "127.0.0.1:80",
    ] {
        assert!(is_valid_host(good.as_bytes()), "{good} refused");
    }
    for bad in [
        "",
        "[zz]",
        "[127.0.0.1]",
        "[::1",
        "[]",
        "[v.x]",
        "[v1.]",
        "a%zz",
        "a%2",
        "a%2:80",
        "a:b:80",
        ":80",
        "a b",
        "a:b",
        "[::1]x",
    ] {
        assert!(!is_valid_host(bad.as_bytes()), "{bad} accepted");
    }
}
