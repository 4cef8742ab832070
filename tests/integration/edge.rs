//! What rgun believes about its clients (issue 13): the PROXY protocol
//! header a TCP proxy puts before a connection (`--proxy-protocol`,
//! `--proxy-allow-from`), sent here over raw sockets byte for byte, and a
//! trusted HTTP proxy's `X-Forwarded-*` headers (`--forwarded-allow-ips`),
//! directly and through a real Nginx. Every verdict is read from what the
//! application saw (`/echo`'s `remote_addr`, `client_addr`, `scheme`), from
//! the connection closing, and from the log line that says why.

use crate::affinity::{WATCHER_THREAD, add_second_worker};
use crate::harness::{
    App, Conn, Server, TempDir, WAIT, get, pid_of, request, start_nginx, unique_socket_path,
};

crate::harness::test_each_app!(
    a_v1_header_names_the_client_the_app_sees,
    a_v2_header_names_the_client_the_app_sees,
    a_header_from_a_peer_not_allowed_closes_the_connection,
    a_malformed_header_closes_the_connection,
    a_connection_without_the_header_is_refused,
    the_proxied_address_survives_a_hand_off_to_another_worker,
    x_forwarded_for_names_the_client_only_from_a_trusted_peer,
    scheme_headers_that_disagree_are_a_400_from_a_trusted_peer,
    the_forwarded_client_through_nginx,
);

/// A PROXY protocol v1 line (proxy-protocol.txt §2.1).
fn v1(family: &str, source: &str, destination: &str, ports: (u16, u16)) -> Vec<u8> {
    format!(
        "PROXY {family} {source} {destination} {} {}\r\n",
        ports.0, ports.1
    )
    .into_bytes()
}

/// The v2 signature (§2.2).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: version 2 and `command` (0 LOCAL, 1 PROXY), the family and
/// protocol byte, and the address block.
fn v2(command: u8, family_protocol: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend([0x20 | command, family_protocol]);
    out.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend(block);
    out
}

/// A v2 PROXY command over TCP for two endpoints of one family.
fn v2_tcp(source: std::net::SocketAddr, destination: std::net::SocketAddr) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            block.extend(s.octets());
            block.extend(d.octets());
            0x11
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            block.extend(s.octets());
            block.extend(d.octets());
            0x21
        }
        _ => panic!("one family for both"),
    };
    block.extend(source.port().to_be_bytes());
    block.extend(destination.port().to_be_bytes());
    v2(1, family, &block)
}

/// `header` then `GET /echo` on a new connection; the echo.
#[track_caller]
fn echo_behind(server: &Server, header: &[u8]) -> (Conn, serde_json::Value) {
    let mut conn = server.connect();
    let mut bytes = header.to_vec();
    bytes.extend(get("/echo"));
    conn.send(&bytes);
    let response = conn.read_response();
    response.assert_status(200);
    let echo = response.json();
    (conn, echo)
}

/// `bytes` on a new connection, which the server must close without a
/// byte of answer.
#[track_caller]
fn refused(server: &Server, bytes: &[u8]) {
    let mut conn = server.connect();
    conn.send(bytes);
    let (answer, _) = conn.read_to_end();
    assert!(
        answer.is_empty(),
        "the server answered a refused connection: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[track_caller]
fn assert_addresses(echo: &serde_json::Value, remote: &str, client: &str) {
    assert_eq!(echo["remote_addr"], remote, "{echo}");
    assert_eq!(echo["client_addr"], client, "{echo}");
}

fn a_v1_header_names_the_client_the_app_sees(app: App) {
    let server = app.start_with(["--proxy-protocol", "v1"]);
    let header = v1("TCP4", "203.0.113.7", "192.0.2.1", (40000, 443));
    let (mut conn, echo) = echo_behind(&server, &header);
    // As in Gunicorn, the source is REMOTE_ADDR, and the client.
    assert_addresses(&echo, "203.0.113.7", "203.0.113.7");
    // The header is the connection's, once: its next request is the same
    // client's.
    let echo = conn.request(&get("/echo?again")).json();
    assert_addresses(&echo, "203.0.113.7", "203.0.113.7");
    assert_eq!(echo["query"], "again");

    let header = v1("TCP6", "2001:db8::7", "2001:db8::1", (40000, 443));
    let (_, echo) = echo_behind(&server, &header);
    assert_addresses(&echo, "2001:db8::7", "2001:db8::7");
    // UNKNOWN: the proxy knows no client; the connection's own peer stands.
    let (_, echo) = echo_behind(&server, b"PROXY UNKNOWN\r\n");
    assert_addresses(&echo, "127.0.0.1", "127.0.0.1");
    // The header and the request in pieces, byte by byte.
    let mut conn = server.connect();
    let mut bytes = v1("TCP4", "198.51.100.3", "192.0.2.1", (1, 2));
    bytes.extend(get("/echo"));
    for byte in bytes {
        conn.send(&[byte]);
    }
    assert_addresses(&conn.read_response().json(), "198.51.100.3", "198.51.100.3");
}

fn a_v2_header_names_the_client_the_app_sees(app: App) {
    let server = app.start_with(["--proxy-protocol", "v2"]);
    let header = v2_tcp(
        "198.51.100.9:5555".parse().unwrap(),
        "192.0.2.1:80".parse().unwrap(),
    );
    let (_, echo) = echo_behind(&server, &header);
    assert_addresses(&echo, "198.51.100.9", "198.51.100.9");
    let header = v2_tcp(
        "[2001:db8::9]:5555".parse().unwrap(),
        "[2001:db8::1]:80".parse().unwrap(),
    );
    let (_, echo) = echo_behind(&server, &header);
    assert_addresses(&echo, "2001:db8::9", "2001:db8::9");
    // LOCAL: the proxy's own health check; its own address stands.
    let (_, echo) = echo_behind(&server, &v2(0, 0, b""));
    assert_addresses(&echo, "127.0.0.1", "127.0.0.1");

    // `auto` takes either version; a bare `--proxy-protocol` means auto.
    let auto = app.start_with(["--proxy-protocol"]);
    let (_, echo) = echo_behind(&auto, &header);
    assert_addresses(&echo, "2001:db8::9", "2001:db8::9");
    let (_, echo) = echo_behind(&auto, &v1("TCP4", "203.0.113.8", "192.0.2.1", (1, 2)));
    assert_addresses(&echo, "203.0.113.8", "203.0.113.8");
}

fn a_header_from_a_peer_not_allowed_closes_the_connection(app: App) {
    // The test's connections come from 127.0.0.1, outside this list.
    let server = app.start_with([
        "--proxy-protocol",
        "auto",
        "--proxy-allow-from",
        "10.0.0.0/8",
    ]);
    let mut bytes = v1("TCP4", "203.0.113.7", "192.0.2.1", (1, 2));
    bytes.extend(get("/echo"));
    refused(&server, &bytes);
    server.wait_for_log(
        "closing a connection from 127.0.0.1: it sent a PROXY protocol header, and it is not in --proxy-allow-from",
        WAIT,
    );
    let mut bytes = v2_tcp(
        "198.51.100.9:1".parse().unwrap(),
        "192.0.2.1:2".parse().unwrap(),
    );
    bytes.extend(get("/echo"));
    refused(&server, &bytes);
    // A peer that is no proxy may speak plain HTTP: it is its own client.
    let echo = server.get("/echo").json();
    assert_addresses(&echo, "127.0.0.1", "127.0.0.1");
    // Requests that start as a header's signature would, then differ.
    let echo = server
        .connect()
        .request(&request("POST", "/echo", &[], b"posted"))
        .json();
    assert_eq!(echo["body"], "posted");
    // The same header from an allowed range is taken.
    let allowed = app.start_with([
        "--proxy-protocol",
        "--proxy-allow-from",
        "10.0.0.0/8, 127.0.0.0/8",
    ]);
    let (_, echo) = echo_behind(&allowed, &v1("TCP4", "203.0.113.7", "192.0.2.1", (1, 2)));
    assert_addresses(&echo, "203.0.113.7", "203.0.113.7");
}

fn a_malformed_header_closes_the_connection(app: App) {
    let server = app.start_with(["--proxy-protocol", "v1"]);
    for bad in [
        &b"PROXY TCP4 300.0.113.7 192.0.2.1 1 2\r\n"[..],
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\n",
        b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 01 2\r\n",
        b"PROXY TCP4  203.0.113.7 192.0.2.1 1 2\r\n",
    ] {
        let mut bytes = bad.to_vec();
        bytes.extend(get("/echo"));
        refused(&server, &bytes);
    }
    server.wait_for_log("closing a connection from 127.0.0.1: a malformed PROXY protocol header (--proxy-protocol v1)", WAIT);
    // A v2 header where only v1 is expected.
    let mut bytes = v2_tcp(
        "198.51.100.9:1".parse().unwrap(),
        "192.0.2.1:2".parse().unwrap(),
    );
    bytes.extend(get("/echo"));
    refused(&server, &bytes);
    server.wait_for_log(
        "a PROXY protocol version this listener does not accept (--proxy-protocol v1)",
        WAIT,
    );
    // A v1 line that never ends within its 107 bytes.
    let mut long = b"PROXY TCP6 ".to_vec();
    long.extend([b'1'; 120]);
    refused(&server, &long);
    server.wait_for_log("a PROXY protocol header longer than allowed", WAIT);
    // The server serves on.
    let (_, echo) = echo_behind(&server, &v1("TCP4", "203.0.113.7", "192.0.2.1", (1, 2)));
    assert_addresses(&echo, "203.0.113.7", "203.0.113.7");
}

fn a_connection_without_the_header_is_refused(app: App) {
    // 127.0.0.1 is a proxy by the default --proxy-allow-from: it must send
    // the header.
    let server = app.start_with(["--proxy-protocol", "auto"]);
    refused(&server, &get("/echo"));
    server.wait_for_log(
        "closing a connection from 127.0.0.1: it did not start with the PROXY protocol header --proxy-protocol auto expects",
        WAIT,
    );
    // Nor may it wait with it: the header has a time limit of its own.
    refused(&server, b"PROXY TCP4 203.0.113.7");
    server.wait_for_log(
        "closing a connection from 127.0.0.1: no PROXY protocol header within",
        WAIT,
    );
    // Off (the default), a PROXY line is no request.
    let off = app.start();
    let mut conn = off.connect();
    let mut bytes = v1("TCP4", "203.0.113.7", "192.0.2.1", (1, 2));
    bytes.extend(get("/echo"));
    conn.send(&bytes);
    conn.read_response().assert_status(400);
}

/// A connection whose worker gets busy moves to another worker (see
/// affinity.rs), with the address its PROXY header gave.
fn the_proxied_address_survives_a_hand_off_to_another_worker(app: App) {
    let server = app
        .builder()
        .args([
            "--workers",
            "1",
            "--keep-alive",
            "60",
            "--proxy-protocol",
            "v1",
        ])
        .wait_for_workers(1)
        .start();
    let w1 = server.wait_for_workers(1)[0];
    let mut slow = server.connect();
    slow.send(&v1("TCP4", "198.51.100.1", "192.0.2.1", (1, 2)));
    assert_eq!(pid_of(&mut slow), w1);
    let (mut proxied, echo) = echo_behind(
        &server,
        &v1("TCP4", "203.0.113.7", "192.0.2.1", (40000, 443)),
    );
    assert_addresses(&echo, "203.0.113.7", "203.0.113.7");
    let w2 = add_second_worker(&server, WATCHER_THREAD);

    // W1 goes into a long call; its idle connection moves to W2.
    slow.send(&get("/sleep?ms=3000"));
    slow.wait_until_server_read();
    assert_eq!(pid_of(&mut proxied), w2, "the connection did not move");
    let echo = proxied.request(&get("/echo")).json();
    assert_addresses(&echo, "203.0.113.7", "203.0.113.7");
    slow.read_response().assert_status(200);
}

fn x_forwarded_for_names_the_client_only_from_a_trusted_peer(app: App) {
    let forwarded = |server: &Server, headers: &[(&str, &str)]| {
        server
            .connect()
            .request(&request("GET", "/echo", headers, b""))
            .json()
    };
    // 127.0.0.1 is a trusted proxy by default: the hop it appended is the
    // client; REMOTE_ADDR stays the peer, as in Gunicorn.
    let trusting = app.start();
    let echo = forwarded(&trusting, &[("X-Forwarded-For", "198.51.100.7")]);
    assert_addresses(&echo, "127.0.0.1", "198.51.100.7");
    // Hops a client wrote itself, left of the first untrusted one, are not
    // believed; trusted proxies on the right are passed over, over several
    // lines.
    let echo = forwarded(
        &trusting,
        &[
            ("X-Forwarded-For", "6.6.6.6, 198.51.100.7"),
            ("X-Forwarded-For", "127.0.0.1"),
        ],
    );
    assert_addresses(&echo, "127.0.0.1", "198.51.100.7");
    // A hop that is no address ends the walk at the last one that was.
    let echo = forwarded(&trusting, &[("X-Forwarded-For", "unknown, ::1")]);
    assert_addresses(&echo, "127.0.0.1", "::1");
    // A name with `_` is another header, and not believed (Gunicorn drops
    // it from the environ).
    let echo = forwarded(&trusting, &[("X_Forwarded_For", "198.51.100.7")]);
    assert_addresses(&echo, "127.0.0.1", "127.0.0.1");
    if app == App::Wsgi {
        assert!(echo["headers"].get("x-forwarded-for").is_none(), "{echo}");
    }
    // Outside --forwarded-allow-ips (a range here), the header is the
    // client's word only.
    let wary = app.start_with(["--forwarded-allow-ips", "10.0.0.0/8"]);
    let echo = forwarded(&wary, &[("X-Forwarded-For", "198.51.100.7")]);
    assert_addresses(&echo, "127.0.0.1", "127.0.0.1");
    // A range that holds the peer trusts it.
    let ranged = app.start_with(["--forwarded-allow-ips", "10.0.0.0/8,127.0.0.0/8"]);
    let echo = forwarded(&ranged, &[("X-Forwarded-For", "198.51.100.7")]);
    assert_addresses(&echo, "127.0.0.1", "198.51.100.7");
    let echo = forwarded(&ranged, &[("X-Forwarded-Proto", "https")]);
    assert_eq!(echo["scheme"], "https");
    // Behind a TCP proxy, the forwarded headers are those of the PROXY
    // source, which is no trusted proxy here: not believed.
    let proxied = app.start_with(["--proxy-protocol", "v1"]);
    let mut bytes = v1("TCP4", "203.0.113.7", "192.0.2.1", (1, 2));
    bytes.extend(request(
        "GET",
        "/echo",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ],
        b"",
    ));
    let mut conn = proxied.connect();
    conn.send(&bytes);
    let echo = conn.read_response().json();
    assert_addresses(&echo, "203.0.113.7", "203.0.113.7");
    assert_eq!(echo["scheme"], "http");
}

fn scheme_headers_that_disagree_are_a_400_from_a_trusted_peer(app: App) {
    let ask = |server: &Server, headers: &[(&str, &str)]| {
        server
            .connect()
            .request(&request("GET", "/echo", headers, b""))
    };
    let trusting = app.start();
    for disagreeing in [
        &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")][..],
        &[
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Protocol", "ssl"),
        ],
        &[("X-Forwarded-Ssl", "on"), ("X-Forwarded-Proto", "http")],
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Proto", "http"),
        ],
    ] {
        let response = ask(&trusting, disagreeing);
        response.assert_status(400);
        assert!(response.connection_has("close"), "{disagreeing:?}");
    }
    for (agreeing, scheme) in [
        (
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Ssl", "on"),
                ("X-Forwarded-Protocol", "ssl"),
            ][..],
            "https",
        ),
        (&[("X-Forwarded-Ssl", "on")], "https"),
        (&[("X-Forwarded-Protocol", "ssl")], "https"),
        (
            &[("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "off")],
            "http",
        ),
    ] {
        let echo = ask(&trusting, agreeing).json();
        assert_eq!(echo["scheme"], scheme, "{agreeing:?}");
    }
    // From a peer that is not trusted, the headers are ignored whole.
    let wary = app.start_with(["--forwarded-allow-ips", "10.0.0.1"]);
    let echo = ask(
        &wary,
        &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")],
    )
    .json();
    assert_eq!(echo["scheme"], "http");
}

/// Nginx as config/nginx-site.conf ships it, on a Unix socket (a local
/// proxy, always trusted): it appends the client's address to
/// X-Forwarded-For.
fn the_forwarded_client_through_nginx(app: App) {
    let dir = TempDir::new("edge-nginx");
    let socket = unique_socket_path("edge-nginx");
    // Nginx's client, the test, is at 127.0.0.1: trusted by default, so a
    // hop it forged is believed. Outside a narrower list, it is not.
    let _server = app
        .builder()
        .bind(format!("unix:{}", socket.display()))
        .args(["--forwarded-allow-ips", "10.0.0.0/8"])
        .start();
    let nginx = start_nginx(&dir, &socket);
    let mut conn = Conn::tcp(nginx.addr());
    let echo = conn.request(&get("/echo")).json();
    // A Unix socket has no peer address; the client is Nginx's client.
    assert_addresses(&echo, "", "127.0.0.1");
    let echo = conn
        .request(&request(
            "GET",
            "/echo",
            &[("X-Forwarded-For", "6.6.6.6")],
            b"",
        ))
        .json();
    assert_eq!(echo["headers"]["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_addresses(&echo, "", "127.0.0.1");
}

/// A bad entry in either list, or a bad mode, stops rgun with one line
/// naming the flag and the entry.
#[test]
fn bad_allow_lists_and_modes_are_refused_with_one_line() {
    for (args, says) in [
        (
            ["--forwarded-allow-ips", "127.0.0.1,10.0.0.0/33"],
            "invalid --forwarded-allow-ips entry: \"10.0.0.0/33\" is not an IP address",
        ),
        (
            ["--proxy-allow-from", "localhost"],
            "invalid --proxy-allow-from entry: \"localhost\" is not an IP address",
        ),
        (["--proxy-protocol", "v3"], "expected off, v1, v2 or auto"),
    ] {
        let mut server = App::Native.builder().args(args).spawn();
        let status = server.wait_exit(WAIT);
        assert!(!status.success(), "{args:?}");
        let log = server.stderr.text();
        assert!(log.contains(says), "{args:?}: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}
