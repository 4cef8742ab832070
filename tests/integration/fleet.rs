//! Several hosts behind one balancer (issue 13), on this one machine: three
//! "hosts" made as network namespaces, each joined to this namespace by a
//! veth pair with its own addresses, each running `rgun` (`ip netns exec`),
//! and one real Nginx with config/nginx-balancer.conf as shipped in front.
//! Under a bounded load through Nginx, the hosts are restarted one after
//! another (graceful `TERM`, then started again), then each is upgraded
//! with `USR2`, `WINCH`, `QUIT`; every request sent must be answered, and
//! is counted. Nothing waits on a clock: on log lines, process exits and
//! answers.
//!
//! Needs root and iproute2 (`.ci/run` installs it); the namespaces and
//! links have names unique to the run and go on drop, whatever happened.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{App, Conn, Server, TempDir, WAIT, get, start_balancer, wait_retired};
use crate::upgrade::{Load, process_gone, stop_new_master, wait_for_new_master};

/// The port rgun listens on in every host, as in the shipped file.
const HOST_PORT: u16 = 8000;
/// Clients sending through the balancer all along.
const CLIENTS: usize = 4;
/// Answers to wait for between two steps: enough that each step happens
/// under load, few enough to keep the test short.
const ANSWERS_PER_STEP: usize = 200;
/// Each host's rgun: two workers (an upgrade's helpers expect two), and a
/// short drain.
const HOST_ARGS: [&str; 4] = ["-w", "2", "--graceful-timeout", "10"];

/// Makes names unique among the fleets of one test process.
static FLEETS: AtomicUsize = AtomicUsize::new(0);

/// The namespaces and links of one run, removed on drop.
struct Fleet {
    /// `10.NET.0.0/16` holds every address of this fleet.
    net: u8,
    namespaces: Vec<String>,
    /// The veth ends in this namespace (deleting a namespace deletes the
    /// end inside it and, with it, its peer; these go too, in case).
    links: Vec<String>,
}

/// Run `ip ARGS`; panics with what it said if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (.ci/run installs iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second octet for `10.X.0.0/16` that no address of this machine uses.
fn free_net() -> u8 {
    let out = Command::new("ip")
        .args(["-4", "addr"])
        .output()
        .expect("run ip (.ci/run installs iproute2)");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = (std::process::id() % 100) as u8;
    (0..100u8)
        .map(|i| 100 + (start + i) % 100)
        .find(|net| !used.contains(&format!("inet 10.{net}.")))
        .expect("a free 10.X.0.0/16")
}

impl Fleet {
    fn new(hosts: usize) -> Fleet {
        let tag = format!(
            "{:x}{}",
            std::process::id() & 0xffff,
            FLEETS.fetch_add(1, Ordering::SeqCst)
        );
        let mut fleet = Fleet {
            net: free_net(),
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        for i in 0..hosts {
            let ns = format!("rgun-{tag}-{i}");
            // Interface names: at most 15 bytes.
            let (outside, inside) = (format!("rgo{tag}{i}"), format!("rgi{tag}{i}"));
            ip(&["netns", "add", &ns]);
            fleet.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            fleet.links.push(outside.clone());
            ip(&["link", "set", &inside, "netns", &ns]);
            let gateway = format!("{}/24", fleet.gateway(i));
            ip(&["addr", "add", &gateway, "dev", &outside]);
            ip(&["link", "set", &outside, "up"]);
            let host = format!("{}/24", fleet.host(i).ip());
            for args in [
                &["addr", "add", &host, "dev", &inside][..],
                &["link", "set", &inside, "up"],
                &["link", "set", "lo", "up"],
            ] {
                let mut command = vec!["netns", "exec", &ns, "ip"];
                command.extend_from_slice(args);
                ip(&command);
            }
        }
        fleet
    }

    /// Host `i`'s rgun, as the balancer reaches it.
    fn host(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(10, self.net, i as u8 + 1, 2), HOST_PORT))
    }

    /// This namespace's end of host `i`'s link: where the balancer's
    /// connections to it come from.
    fn gateway(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, i as u8 + 1, 1)
    }

    fn hosts(&self) -> [SocketAddr; 3] {
        [self.host(0), self.host(1), self.host(2)]
    }

    /// rgun on host `i`, trusting the balancer's forwarded headers; no
    /// controlling terminal (a master with one ignores `WINCH`).
    fn start_rgun(&self, i: usize) -> Server {
        let ns = self.namespaces[i].as_str();
        App::Native
            .builder()
            .within(["ip", "netns", "exec", ns])
            .new_session()
            .bind(self.host(i).to_string())
            .args(HOST_ARGS)
            .args(["--forwarded-allow-ips", &format!("10.{}.0.0/16", self.net)])
            .wait_for_workers(2)
            .start()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

/// The pids of `server`'s workers so far.
fn workers_of(server: &Server) -> HashSet<u32> {
    server.wait_for_workers(2).into_iter().collect()
}

#[test]
fn three_hosts_behind_nginx_restart_and_upgrade_one_by_one_losing_no_request() {
    let dir = TempDir::new("fleet");
    let fleet = Fleet::new(3);
    let mut hosts: Vec<Server> = (0..3).map(|i| fleet.start_rgun(i)).collect();
    let nginx = start_balancer(&dir, &fleet.hosts());

    // The balancer's client is the test, at 127.0.0.1: the host sees the
    // balancer as its peer, and the client through its X-Forwarded-For.
    let echo = Conn::tcp(nginx.addr()).request(&get("/echo")).json();
    let gateways: Vec<String> = (0..3).map(|i| fleet.gateway(i).to_string()).collect();
    assert!(
        gateways.contains(&echo["remote_addr"].as_str().unwrap_or("").to_string()),
        "{echo}"
    );
    assert_eq!(echo["client_addr"], "127.0.0.1", "{echo}");

    let mut load = Load::start(nginx.addr(), CLIENTS);
    load.wait_for_more(ANSWERS_PER_STEP);
    // Every host serves a share.
    for host in &hosts {
        let workers = workers_of(host);
        load.wait_for("an answer from every host", |_, seen| {
            !seen.all.is_disjoint(&workers)
        });
    }

    // Graceful restarts, one host after another.
    for (i, host) in hosts.iter_mut().enumerate() {
        host.signal(libc::SIGTERM);
        let status = host.wait_exit(WAIT);
        assert_eq!(
            status.code(),
            Some(0),
            "host {i}: {}",
            Server::describe(status)
        );
        // The others carry the load while it is down.
        load.wait_for_more(ANSWERS_PER_STEP);
        *host = fleet.start_rgun(i);
        let workers = workers_of(host);
        load.wait_for("an answer from the restarted host", |_, seen| {
            !seen.all.is_disjoint(&workers)
        });
    }

    // Binary upgrades, one host after another: USR2, WINCH, QUIT.
    let mut new_masters = Vec::new();
    for host in &mut hosts {
        let old_master = host.pid();
        let old = workers_of(host);
        host.signal(libc::SIGUSR2);
        let (new_master, new_workers) = wait_for_new_master(host, old_master, &old);
        let new: HashSet<u32> = new_workers.iter().copied().collect();
        load.wait_for(
            "an answer from the upgraded host's new workers",
            |_, seen| !seen.all.is_disjoint(&new),
        );
        host.signal(libc::SIGWINCH);
        for pid in &old {
            wait_retired(host, *pid);
        }
        host.signal(libc::SIGQUIT);
        let status = host.reap(WAIT);
        assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
        assert!(
            !process_gone(new_master),
            "the new master went with the old"
        );
        load.wait_for_more(ANSWERS_PER_STEP);
        new_masters.push((new_master, new_workers));
    }

    let sent = load.finish();
    eprintln!("{sent} requests through the balancer, every one answered");
    for (host, (master, workers)) in hosts.iter().zip(&new_masters) {
        stop_new_master(host, *master, workers);
    }
}
