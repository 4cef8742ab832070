//! The deployment the README and config/ describe, run for real: a real
//! Nginx process with config/nginx-site.conf in front of rgun on a Unix
//! socket, and systemd's notification protocol (NOTIFY_SOCKET).

use std::os::unix::net::UnixDatagram;

use sha2::{Digest, Sha256};

use crate::harness::{
    Conn, Server, TempDir, WAIT, get, request, start_nginx, testapp, unique_socket_path,
};

#[test]
fn serves_behind_nginx_over_a_unix_socket() {
    let dir = TempDir::new("nginx");
    let socket = unique_socket_path("nginx");
    let _server = Server::builder(testapp())
        .bind(format!("unix:{}", socket.display()))
        .start();
    let nginx = start_nginx(&dir, &socket);
    let addr = nginx.addr();

    // Keep-alive through nginx: several requests on one connection.
    let mut conn = Conn::tcp(addr);
    for _ in 0..3 {
        let r = conn.request(&get("/"));
        r.assert_status(200);
        assert_eq!(r.text(), "Hello, World!");
    }
    let echo = conn
        .request(&request(
            "POST",
            "/echo?via=nginx",
            &[],
            b"through the proxy",
        ))
        .json();
    assert_eq!(echo["body"], "through the proxy");
    assert_eq!(echo["query"], "via=nginx");
    assert!(
        echo["headers"]["x-forwarded-for"].as_str().is_some(),
        "{echo}"
    );
    // The site passes X-Forwarded-Proto $scheme; nginx here speaks http.
    assert_eq!(echo["scheme"], "http");

    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let upload = conn.request(&request("POST", "/upload", &[], &body)).json();
    assert_eq!(upload["body_length"], 1_000_000);
    assert_eq!(upload["sha256"], hex(&Sha256::digest(&body)));

    let stream = conn.request(&get("/stream?chunks=4&size=1000"));
    stream.assert_status(200);
    assert_eq!(stream.body, vec![b'y'; 4000]);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tells_systemd_ready_reloading_and_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(WAIT)).unwrap();
    let mut server = Server::builder(testapp())
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start();
    let next = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a notification from rgun");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains(&format!("MAINPID={}", server.pid())),
        "{ready:?}"
    );
    server.get("/").assert_status(200);

    server.signal(libc::SIGHUP);
    assert!(next().starts_with("RELOADING=1"));
    // READY again only once a new worker has loaded the application.
    assert!(next().starts_with("READY=1\n"));
    let booted = server.wait_for_workers(2);
    assert_eq!(booted.len(), 2);

    server.signal(libc::SIGTERM);
    assert!(next().starts_with("STOPPING=1"));
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn x_forwarded_proto_sets_the_scheme_only_from_a_trusted_proxy() {
    let forwarded = request("GET", "/echo", &[("X-Forwarded-Proto", "https")], b"");
    // Gunicorn's default trusts 127.0.0.1: a local Nginx terminating TLS.
    let trusting = Server::testapp();
    assert_eq!(
        trusting.connect().request(&forwarded).json()["scheme"],
        "https"
    );
    assert_eq!(trusting.get("/echo").json()["scheme"], "http");
    // A peer outside --forwarded-allow-ips cannot make itself https.
    let wary = Server::testapp_with(["--forwarded-allow-ips", "10.9.8.7"]);
    assert_eq!(wary.connect().request(&forwarded).json()["scheme"], "http");
    let any = Server::testapp_with(["--forwarded-allow-ips", "*"]);
    assert_eq!(any.connect().request(&forwarded).json()["scheme"], "https");
}

/// config/kubernetes.yaml is only written, never applied here (no
/// cluster): this parses it with a real YAML parser (Python's) and checks
/// what the README says of it, so that an edit cannot quietly break it.
#[test]
fn the_kubernetes_example_parses_and_holds_what_the_readme_says() {
    let path = crate::harness::manifest_dir().join("config/kubernetes.yaml");
    let script = r#"
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
print(json.dumps(docs))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 (.ci/run installs python3-yaml)");
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command[0], "rgun");
    assert!(
        command.contains(&"--metrics-bind=0.0.0.0:9090"),
        "{command:?}"
    );
    let graceful: u64 = command
        .iter()
        .find_map(|a| a.strip_prefix("--graceful-timeout="))
        .expect("--graceful-timeout")
        .parse()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop = &container["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(pre_stop[0], "sleep", "{pre_stop}");
    let pre_stop_secs: u64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    assert!(
        grace > graceful + pre_stop_secs,
        "terminationGracePeriodSeconds {grace} must cover preStop {pre_stop_secs} s and \
         --graceful-timeout {graceful} s"
    );
    let ports = container["ports"].as_array().unwrap();
    let metrics = ports.iter().find(|p| p["name"] == "metrics").unwrap();
    assert_eq!(metrics["containerPort"], 9090);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert!(docs.iter().any(|d| d["kind"] == "Service"));
}
