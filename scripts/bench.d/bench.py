#!/usr/bin/env python3
"""Run the issue-4 benchmark: every server x every scenario, one run.

Called by scripts/bench after it has built rgun and installed the reference
servers; standard library only. The server runs pinned to CPU 0 with one
worker (four for /sleep), wrk and this script on CPU 1, 64 connections, all
on 127.0.0.1. Each (server, scenario) gets a fresh server on its own port, a
short warm-up, the measured run, the RSS of the whole process group, and a
kill of that group. Results: a table on stdout, the issue-4 targets, JSON and
a gnuplot PNG chart.

The "mixed" scenario (keep-alive affinity) differs: each server runs four
workers on a Unix socket behind a real nginx (keepalive 32 to the upstream,
as in config/nginx-site.conf), and the p99 of GET / from 16 connections is
measured twice, alone and while 2 other connections keep asking
/sleep?ms=100 (see measure_mixed).
"""

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import pwd
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
RELEASE = os.path.join(ROOT, "target", "release")
VENV_BIN = os.path.join(ROOT, "target", "bench-venv", "bin")
WORK = os.path.join(ROOT, "target", "bench")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results")
SCRATCH_OUT = os.path.join(WORK, "results")

SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 64
PORT_BASE = 18100
READY_TIMEOUT = 30.0  # seconds a server gets to answer 200 on /
STOP_TIMEOUT = 5.0  # seconds per signal (TERM, then KILL) for the group to go
KEEPALIVE_S = 120  # idle keep-alive timeout where the server lets us set it
# A CPU busier than this during a run had no time to spare: if it is wrk's,
# the load generator, not the server, set the pace of that run.
SATURATED = 0.97

# id, label, path, extra wrk args, workers
SCENARIOS = [
    {"id": "get", "label": "GET / keep-alive", "path": "/", "wrk": [], "workers": 1},
    {"id": "close", "label": "GET / Connection: close", "path": "/",
     "wrk": ["-H", "Connection: close"], "workers": 1},
    {"id": "pipelined", "label": "GET / pipelined x16", "path": "/",
     "wrk": ["-s", os.path.join(HERE, "pipeline.lua")], "workers": 1, "latency": False},
    {"id": "bytes64k", "label": "GET /bytes?n=65536", "path": "/bytes?n=65536", "wrk": [], "workers": 1},
    {"id": "upload1m", "label": "POST /upload 1 MiB", "path": "/upload",
     "wrk": ["-s", os.path.join(HERE, "upload.lua")], "workers": 1},
    {"id": "sleep10ms", "label": "GET /sleep?ms=10, 4 workers", "path": "/sleep?ms=10", "wrk": [], "workers": 4},
    {"id": "idle10k", "label": "10,000 idle keep-alive conns", "path": "/", "wrk": None, "workers": 1},
    # Not a throughput run: see measure_mixed and the MIXED_* constants.
    {"id": "mixed", "label": "behind nginx: GET / p99, with 2 slow streams", "path": "/", "wrk": [],
     "workers": 4, "kind": "mixed"},
]
SCN = {s["id"]: s for s in SCENARIOS}
THROUGHPUT = [s["id"] for s in SCENARIOS if s["wrk"] is not None and "kind" not in s]

# The mixed scenario (keep-alive affinity): nginx in front of a 4-worker
# server, wrk -t1 -c16 on GET / (the fast requests) measured without, then
# with, 2 connections that loop on GET /sleep?ms=100 (the slow streams: they
# hold 2 of the 4 workers, the other 2 are free at any time). Goal for rgun,
# native and WSGI, with default settings: fast p99 with the slow streams at
# most 1.5x the p99 without them, and no worse than Gunicorn sync's p99 with
# them in the same run.
MIXED_FAST_CONNS = 16
MIXED_SLOW_CONNS = 2
MIXED_SLOW_PATH = "/sleep?ms=100"
MIXED_UPSTREAM_KEEPALIVE = 32  # nginx's idle connections kept to the server
MIXED_SLOW_LEAD = 1  # s the slow streams start before the fast run and run past it
MIXED_MAX_RATIO = 1.5
MIXED_REFERENCE = "gunicorn-sync"
# Servers that can listen on a Unix socket (nginx reaches the others on TCP).
UDS_SERVERS = ("rgun", "rgun-wsgi", "granian", "gunicorn-sync", "gunicorn-gthread")

SERVERS = [
    {"id": "rgun", "label": "rgun (native)", "short": "rgun", "color": 0xD62728},
    {"id": "nginx", "label": "nginx (static)", "short": "nginx", "color": 0x7F7F7F,
     "scenarios": ["get", "close", "pipelined", "idle10k"]},
    {"id": "rgun-wsgi", "label": "rgun (wsgi)", "short": "rgun wsgi", "color": 0xFF9896},
    {"id": "granian", "label": "granian (wsgi)", "short": "granian", "color": 0x1F77B4},
    {"id": "gunicorn-sync", "label": "gunicorn sync", "short": "gunicorn sync", "color": 0x2CA02C},
    {"id": "gunicorn-gthread", "label": "gunicorn gthread", "short": "gunicorn gthread", "color": 0x98DF8A},
    {"id": "uwsgi", "label": "uwsgi", "short": "uwsgi", "color": 0x9467BD,
     "scenarios": [s for s in SCN if s != "mixed"]},
]
SRV = {s["id"]: s for s in SERVERS}


def log(msg):
    print(f"\033[1m[bench]\033[0m {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- locations

def find_wsgi_app():
    """testapp_wsgi.py: ../shared/spec beside the checkout, else $RGUN_SHARED,
    else the repository's own copy in examples/testapp/ (a plain clone)."""
    cands = [os.path.join(os.path.dirname(ROOT), "shared", "spec")]
    env = os.environ.get("RGUN_SHARED")
    if env:
        cands += [os.path.join(env, "spec"), env]
    cands.append(os.path.join(ROOT, "examples", "testapp"))
    for d in cands:
        if os.path.isfile(os.path.join(d, "testapp_wsgi.py")):
            return os.path.abspath(d)
    return None


def which(name, *extra_dirs):
    for d in extra_dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)


# ---------------------------------------------------------------- commands

def nginx_conf(port):
    d = os.path.join(WORK, "nginx")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"""# written by scripts/bench: the one-core ceiling, a fixed 13-byte answer
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {d}/nginx-{port}.pid;
error_log {d}/error-{port}.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout {KEEPALIVE_S}s;
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location = / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
""")
    return conf


def mixed_socket(sid):
    """The Unix socket a server listens on behind nginx: in target/bench/sock,
    or in the temporary folder when that path is too long for sun_path."""
    path = os.path.join(WORK, "sock", f"{sid}.sock")
    if len(path.encode()) > 100:
        path = os.path.join(tempfile.gettempdir(), f"rgun-bench-{os.getpid()}-{sid}.sock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def proxy_conf(port, sid, upstream):
    """nginx in front of one server (mixed scenario): the upstream block and
    proxy settings of config/nginx-site.conf, keepalive 32."""
    d = os.path.join(WORK, "nginx")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, f"proxy-{sid}-{port}.conf")
    # Run as root, nginx's workers would drop to "nobody", which may not
    # connect to a socket the server (root) made with its default mode: keep
    # the workers as the user that runs the benchmark.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""# written by scripts/bench (scenario mixed): nginx in front of {sid},
# proxying as config/nginx-site.conf does
daemon off;
master_process on;
worker_processes 1;
{user}pid {d}/proxy-{port}.pid;
error_log {d}/proxy-error-{port}.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # wrk's own connections stay open for the whole run
    keepalive_requests 1000000000;
    keepalive_timeout {KEEPALIVE_S}s;
    upstream app {{
        server {upstream} fail_timeout=0;
        keepalive {MIXED_UPSTREAM_KEEPALIVE};
    }}
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
}}
""")
    return conf, os.path.join(d, f"proxy-error-{port}.log")


def metrics_args(ctx, port):
    """`--metrics-bind` on a Unix socket of its own when the run measures
    rgun with its metrics on (`--metrics`): every request is then counted
    in the scoreboard, as in production with Prometheus scraping."""
    if not ctx.get("metrics"):
        return []
    return ["--metrics-bind", f"unix:{os.path.join(WORK, f'metrics-{port}.sock')}"]


def server_command(sid, port, workers, scn, ctx, uds=None):
    """argv and cwd for one server, or (None, reason) when it cannot run. Every
    server keeps its defaults except for logging, and, for the idle test, the
    limits that would stop it from holding 10,000 connections. With `uds` it
    listens on that Unix socket instead of 127.0.0.1:port."""
    bind = f"unix:{uds}" if uds else f"127.0.0.1:{port}"
    idle = scn == "idle10k"
    spec = ctx["spec_dir"]
    if sid == "rgun":
        rgun, lib = os.path.join(RELEASE, "rgun"), os.path.join(RELEASE, "libtestapp.so")
        if not (os.path.exists(rgun) and os.path.exists(lib)):
            return None, "target/release/rgun or libtestapp.so missing (build failed?)"
        more = ["--keep-alive", str(KEEPALIVE_S)] if idle else []  # default 2 s
        more += metrics_args(ctx, port)
        return [rgun, f"{lib}:app", "-w", str(workers), "-b", bind, "--log-level", "warning", *more], ROOT
    if sid == "nginx":
        nginx = which("nginx")
        if not nginx:
            return None, "nginx not installed"
        d = os.path.join(WORK, "nginx")
        return [nginx, "-p", d, "-e", os.path.join(d, f"error-{port}.log"), "-c", nginx_conf(port)], d
    if spec is None:
        return None, "testapp_wsgi.py not found (../shared/spec, $RGUN_SHARED or examples/testapp)"
    if sid == "rgun-wsgi":
        rgun = os.path.join(RELEASE, "rgun")
        if not os.path.exists(rgun):
            return None, "target/release/rgun missing"
        more = ["--keep-alive", str(KEEPALIVE_S)] if idle else []
        more += metrics_args(ctx, port)
        return [rgun, "testapp_wsgi:app", "--chdir", spec, "-w", str(workers), "-b", bind,
                "--log-level", "warning", *more], spec
    exe = {"granian": "granian", "gunicorn-sync": "gunicorn", "gunicorn-gthread": "gunicorn",
           "uwsgi": "uwsgi"}[sid]
    path = os.path.join(VENV_BIN, exe)
    if not os.access(path, os.X_OK):
        return None, f"{exe} not installed in target/bench-venv"
    if sid == "granian":
        # Idle test: --backpressure (default backlog/workers = 1024) caps the
        # connections it holds; raised, with the blocking threads it derives
        # from it (backpressure/2) kept at their one-worker default, 512.
        more = ["--backpressure", "20000", "--blocking-threads", "512"] if idle else []
        where = ["--uds", uds] if uds else ["--host", "127.0.0.1", "--port", str(port)]
        return [path, "--interface", "wsgi", *where,
                "--workers", str(workers), "--no-access-log", "--log-level", "warning", *more,
                "--working-dir", spec, "testapp_wsgi:app"], spec
    if sid == "gunicorn-sync":
        return [path, "-w", str(workers), "-k", "sync", "-b", bind, "--chdir", spec,
                "--log-level", "warning", "testapp_wsgi:app"], spec
    if sid == "gunicorn-gthread":
        # Idle test: --worker-connections (default 1000) caps the connections
        # it holds, and --keep-alive (default 2 s) would close them.
        more = ["--keep-alive", str(KEEPALIVE_S), "--worker-connections", "20000"] if idle else []
        return [path, "-w", str(workers), "-k", "gthread", "--threads", "4", "-b", bind,
                "--chdir", spec, "--log-level", "warning", *more, "testapp_wsgi:app"], spec
    if sid == "uwsgi":
        # --http-socket: uWSGI's native HTTP, one request per connection (with
        # --http11-socket's keep-alive, one wrk connection would hog the only
        # sync worker and starve the other 63).
        return [path, "--http-socket", bind, "--wsgi-file", os.path.join(spec, "testapp_wsgi.py"),
                "--callable", "app", "--master", "--processes", str(workers), "--need-app",
                "--die-on-term", "--disable-logging", "--listen", "1024", "--ignore-sigpipe",
                # say that it closes, so clients reconnect instead of erroring
                "--add-header", "Connection: close",
                "--ignore-write-errors", "--disable-write-exception", "--chdir", spec], spec
    raise ValueError(sid)


# ---------------------------------------------------------------- processes

def group_pids(pgid):
    """Live (non-zombie) processes of a process group."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(name))
    return pids


def rss_kib(pgid):
    """Sum of VmRSS (KiB) over the group: master + workers."""
    total, n = 0, 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        n += 1
                        break
        except OSError:
            pass
    return total, n


def port_busy(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path, n=2):
    """The gist of a server log: its first panic/error line and its last lines,
    without backtrace frames."""
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f.read().splitlines()[1:] if l.strip()]
    except OSError:
        return ""
    lines = [l for l in lines if not re.match(r"(\d+: |at |stack backtrace:|note: )", l)]
    first = [l for l in lines if re.search(r"panicked|error|Error|ERROR|Traceback|fail", l)][:1]
    pick = first + [l for l in lines[-n:] if l not in first]
    return " | ".join(pick)[:300]


class Server:
    def __init__(self, sid, scenario, port, ctx, uds=None):
        self.sid, self.port, self.uds = sid, port, uds
        self.cpu = SERVER_CPU
        self.workers = SCN[scenario]["workers"]
        self.argv, self.cwd = server_command(sid, port, self.workers, scenario, ctx, uds=uds)
        self.logfile = os.path.join(WORK, "logs", f"{sid}-{scenario}.log")
        self.proc = None

    def start(self):
        """Start pinned to self.cpu in its own process group; wait until / answers 200.
        Returns None when ready, else the reason it is not."""
        if self.argv is None:
            return self.cwd
        if self.uds:
            try:
                os.unlink(self.uds)  # a socket file left by an earlier run
            except FileNotFoundError:
                pass
        elif port_busy(self.port):
            return f"port {self.port} already in use"
        os.makedirs(os.path.dirname(self.logfile), exist_ok=True)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        env.pop("WEB_CONCURRENCY", None)
        env.pop("RUST_BACKTRACE", None)  # a panic is one line in the log, not a page
        with open(self.logfile, "w") as out:
            out.write("$ " + shlex.join(self.argv) + "\n")
            out.flush()
            self.proc = subprocess.Popen(["taskset", "-c", str(self.cpu)] + self.argv, cwd=self.cwd,
                                         env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        code = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode} at start: {tail(self.logfile)}"
            where = ["--unix-socket", self.uds, "http://localhost/"] if self.uds else \
                [f"http://127.0.0.1:{self.port}/"]
            try:
                code = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", *where],
                    capture_output=True, text=True, timeout=5).stdout
            except subprocess.TimeoutExpired:
                code = "timeout"
            if code == "200":
                return self.wait_workers(deadline)
            time.sleep(0.1)
        return f"no 200 on / within {READY_TIMEOUT:.0f} s (last: {code or 'no answer'}): {tail(self.logfile)}"

    def wait_workers(self, deadline):
        """/ answers as soon as one worker is up; wait (bounded) for all of
        them, master + workers processes in the group, so that wrk's
        connections spread over every worker (rgun, for one, starts its
        workers over about a second)."""
        want = 1 + self.workers
        stable_since, last = None, -1
        while time.monotonic() < deadline:
            n = len(group_pids(self.proc.pid))
            if n != last:
                stable_since, last = time.monotonic(), n
            if n >= want and time.monotonic() - stable_since >= 0.3:
                return None
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode} at start: {tail(self.logfile)}"
            time.sleep(0.05)
        log(f"warning: {self.sid}: {last} processes, expected {want}; measuring anyway")
        return None

    def rss(self):
        return rss_kib(self.proc.pid) if self.proc else (0, 0)

    def stop(self):
        if not self.proc:
            return
        pgid = self.proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline:
                self.proc.poll()
                if not group_pids(pgid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        left = group_pids(pgid)
        if left:
            log(f"warning: {self.sid} left processes {left} after SIGKILL")
        if self.uds:
            try:
                os.unlink(self.uds)
            except FileNotFoundError:
                pass


class Proxy(Server):
    """nginx in front of a server (mixed scenario): one worker, pinned to the
    load's CPU, on 127.0.0.1:port; ready when GET / through it answers 200."""

    def __init__(self, backend, port):
        self.sid, self.port, self.uds = "nginx-proxy", port, None
        self.cpu = LOAD_CPU
        self.workers = 1
        self.logfile = os.path.join(WORK, "logs", f"nginx-proxy-{backend.sid}.log")
        self.proc = None
        nginx = which("nginx")
        if not nginx:
            self.argv, self.cwd, self.error_log = None, "nginx not installed (it is the proxy)", None
            return
        upstream = f"unix:{backend.uds}" if backend.uds else f"127.0.0.1:{backend.port}"
        conf, self.error_log = proxy_conf(port, backend.sid, upstream)
        d = os.path.dirname(conf)
        self.argv, self.cwd = [nginx, "-p", d, "-e", self.error_log, "-c", conf], d
        if os.path.exists(self.error_log):
            os.unlink(self.error_log)

    def log_mark(self):
        try:
            return os.path.getsize(self.error_log)
        except (OSError, TypeError):
            return 0

    def log_since(self, mark):
        """nginx's warnings and errors logged since mark (a retry on a
        cached upstream connection shows here and nowhere else)."""
        try:
            with open(self.error_log, "rb") as f:
                f.seek(mark)
                lines = f.read().decode(errors="replace").splitlines()
        except (OSError, TypeError):
            return {"lines": 0, "first": []}
        lines = [l for l in lines if re.search(r"\[(warn|error|crit|alert|emerg)\]", l)]
        # the message without date, pid and connection number, for the sample
        first = []
        for l in lines:
            m = re.sub(r"^\S+ \S+ \[(\w+)\] \d+#\d+: (\*\d+ )?", r"[\1] ", l)[:200]
            if m not in first:
                first.append(m)
            if len(first) == 3:
                break
        return {"lines": len(lines), "first": first}


def stat_ticks(name="cpu"):
    """The tick counters of one /proc/stat line: "cpu" for all CPUs, "cpuN"
    for one (user, nice, system, idle, iowait, irq, softirq, ...)."""
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == name:
                return [int(x) for x in fields[1:]]
    return [0] * 8


def cpu_busy(interval=0.5):
    """Busy fraction of all CPUs over `interval` seconds (from /proc/stat)."""
    def snap():
        v = stat_ticks()
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t1, i1 = snap()
    time.sleep(interval)
    t2, i2 = snap()
    return 1 - (i2 - i1) / max(1, t2 - t1)


CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISE_LIMIT = 0.10  # other work, in CPUs, above which a run is measured again (once)


def busy_ticks():
    """user + nice + system ticks of all CPUs (interrupt time left out: on
    loopback that is the benchmark's own traffic)."""
    v = stat_ticks()
    return v[0] + v[1] + v[2]


def cpu_ticks(cpu):
    """(busy, total) ticks of one CPU from /proc/stat; busy counts interrupt
    and softirq time too: on loopback that is TCP work done for the traffic."""
    v = stat_ticks(f"cpu{cpu}")
    return sum(v) - v[3] - v[4], sum(v)


class CoreUse:
    """How busy the server's CPU and wrk's CPU were over a run."""

    def __init__(self):
        self.start = {c: cpu_ticks(c) for c in (SERVER_CPU, LOAD_CPU)}

    def busy(self):
        out = {}
        for c, (b0, t0) in self.start.items():
            b1, t1 = cpu_ticks(c)
            out[c] = round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else None
        return out.get(SERVER_CPU), out.get(LOAD_CPU)


def group_ticks(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rfind(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


class Noise:
    """CPU time spent during a run by processes that are not part of it (the
    server's group, wrk, this script; with several groups, each of them, as
    the proxy's): other work on the machine, as a fraction of one CPU. Child
    processes (wrk) count once they have been waited for."""

    def __init__(self, *pgids):
        self.pgids = pgids
        self.t = time.monotonic()
        self.busy = busy_ticks()
        self.group = self.groups()
        self.me = resource.getrusage(resource.RUSAGE_SELF)
        self.kids = resource.getrusage(resource.RUSAGE_CHILDREN)

    def others(self):
        wall = time.monotonic() - self.t
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = (self.groups() - self.group) / CLK_TCK
        ours += (me.ru_utime + me.ru_stime - self.me.ru_utime - self.me.ru_stime)
        ours += (kids.ru_utime + kids.ru_stime - self.kids.ru_utime - self.kids.ru_stime)
        return round(max(0.0, ((busy_ticks() - self.busy) / CLK_TCK - ours) / max(wall, 0.001)), 3)

    def groups(self):
        return sum(group_ticks(g) for g in self.pgids)


def wait_quiet(limit=0.15, max_wait=30.0):
    """Before a run, wait (bounded) until the machine is nearly idle: other
    work on these two CPUs is noise in the numbers. Returns the last busy
    fraction seen, recorded with the result."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > limit and time.monotonic() < deadline:
        busy = cpu_busy()
    return round(busy, 3)


# ---------------------------------------------------------------- the right answer

UPLOAD_BODY = b"x" * 1048576  # what upload.lua sends


def check_answer(port, scn_id):
    """One request of the scenario, checked against testapp.md, so that a fast
    wrong answer is not measured. Returns None if right, else what is wrong."""
    scn = SCN[scn_id]
    method, body = ("POST", UPLOAD_BODY) if scn_id == "upload1m" else ("GET", None)
    headers = {"Content-Type": "application/octet-stream"} if body else {}
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request(method, scn["path"], body=body, headers=headers)
        r = c.getresponse()
        got = r.read()
        c.close()
    except (OSError, http.client.HTTPException) as e:
        return f"{method} {scn['path']}: {e!r}"
    if r.status != 200:
        return f"{method} {scn['path']}: status {r.status}"
    if scn_id in ("get", "close", "idle10k"):
        ok = got == b"Hello, World!"
    elif scn_id == "bytes64k":
        ok = got == b"x" * 65536
    elif scn_id == "upload1m":
        try:
            j = json.loads(got)
            ok = j.get("body_length") == len(UPLOAD_BODY) and \
                j.get("sha256") == hashlib.sha256(UPLOAD_BODY).hexdigest()
        except ValueError:
            ok = False
    elif scn_id == "sleep10ms":
        ok = got == b"slept 10"
    else:
        ok = True
    return None if ok else f"{method} {scn['path']}: unexpected body {got[:60]!r}"


# ---------------------------------------------------------------- wrk

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        return None
    r["rps"] = float(m.group(1))
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        r[f"p{pct}_ms"] = float(m.group(1)) * UNIT_MS[m.group(2)] if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+\w+) read", out)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)", out, re.M)
    r["max_ms"] = float(m.group(5)) * UNIT_MS[m.group(6)] if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else \
        {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs["non2xx"] = int(m.group(1)) if m else 0
    errs["total"] = sum(errs.values())
    r["errors"] = errs
    m = re.search(r"Transfer/sec:\s+(\S+)", out)
    r["transfer_per_s"] = m.group(1) if m else None
    return r


def wrk_argv(port, path, duration, conns=CONNECTIONS, latency=True, extra=()):
    argv = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{conns}", f"-d{duration}s"]
    if latency:
        argv.append("--latency")
    return argv + list(extra) + [f"http://127.0.0.1:{port}{path}"]


def wrk(port, scn, duration, latency=True, conns=CONNECTIONS):
    argv = wrk_argv(port, scn["path"], duration, conns, latency, scn["wrk"])
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        return argv, None, "wrk did not finish in time"
    return argv, p.stdout, (None if p.returncode == 0 else f"wrk exit {p.returncode}: {p.stderr.strip()[:200]}")


# ---------------------------------------------------------------- idle keep-alive connections

def response_complete(buf):
    """(done, keeps_alive, status) for a response to GET / in buf."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False, False, None
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip().lower()
    keeps = "close" not in headers.get("connection", "") and parts[0] == "HTTP/1.1"
    if "content-length" in headers:
        return len(buf) >= end + 4 + int(headers["content-length"]), keeps, status
    if "chunked" in headers.get("transfer-encoding", ""):
        return buf.endswith(b"0\r\n\r\n"), keeps, status
    return False, False, status  # close-delimited: never a keep-alive


def hold_idle(port, count, budget_s=60.0, batch=500, batch_timeout=10.0):
    """Open `count` connections, send GET / on each and read the answer, keep
    them open and idle. Returns (sockets still open, stats)."""
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: rgun-bench-idle\r\n\r\n"
    sel = selectors.DefaultSelector()
    idle, stats = [], {"attempted": 0, "answered": 0, "refused": 0, "closed_by_server": 0,
                       "timed_out": 0, "non200": 0, "announced_close": 0}
    t0 = time.monotonic()
    for start in range(0, count, batch):
        if time.monotonic() - t0 > budget_s:
            break
        pending = {}
        for _ in range(min(batch, count - start)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            pending[s] = bytearray()
            sel.register(s, selectors.EVENT_WRITE, "connecting")
        stats["attempted"] += len(pending)
        bdeadline = time.monotonic() + batch_timeout
        ok_in_batch = 0
        while pending and time.monotonic() < bdeadline:
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                if key.data == "connecting":
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        stats["refused"] += 1
                    else:
                        try:
                            s.send(req)
                            sel.modify(s, selectors.EVENT_READ, "reading")
                            continue
                        except OSError:
                            stats["closed_by_server"] += 1
                    sel.unregister(s)
                    s.close()
                    pending.pop(s)
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                buf = pending[s]
                buf += data
                done, keeps, status = response_complete(bytes(buf))
                if not data or done:
                    sel.unregister(s)
                    pending.pop(s)
                    if done and status == 200:
                        stats["answered"] += 1
                        ok_in_batch += 1
                        if keeps:
                            idle.append(s)
                            continue
                        # "Connection: close" (or HTTP/1.0): not a keep-alive
                        # connection; close our side as a client would (some
                        # servers linger until the client has closed).
                        stats["announced_close"] += 1
                    stats["non200" if done else "closed_by_server"] += 1
                    s.close()
        for s in list(pending):
            stats["timed_out"] += 1
            sel.unregister(s)
            s.close()
        if pending or ok_in_batch == 0:
            break  # the server takes no more: stop opening
    sel.close()
    stats["open_seconds"] = round(time.monotonic() - t0, 2)
    return idle, stats


def still_open(socks):
    """Sockets the server has not closed (a peek finds no EOF)."""
    alive = []
    for s in socks:
        try:
            data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if data:
                alive.append(s)  # unexpected bytes, but the connection is open
        except BlockingIOError:
            alive.append(s)
        except OSError:
            pass
    return alive


# ---------------------------------------------------------------- one measurement

def measure(sid, scn_id, port, ctx):
    scn = SCN[scn_id]
    if scn.get("kind") == "mixed":
        return measure_mixed(sid, port, ctx)
    row = {"server": sid, "scenario": scn_id, "port": port, "workers": scn["workers"],
           "status": "na", "reason": None}
    srv = Server(sid, scn_id, port, ctx)
    row["command"] = shlex.join(srv.argv).replace(ROOT + "/", "") if srv.argv else None
    if srv.argv:
        row["cpu_busy_before"] = wait_quiet()
        if row["cpu_busy_before"] > 0.15:
            log(f"warning: CPUs {row['cpu_busy_before']:.0%} busy with other work before {sid} {scn_id}")
    try:
        why = srv.start()
        if why:
            row["reason"] = why
            row["start_failed"] = srv.proc is not None and not why.startswith("port ")
            return row
        wrong = check_answer(port, scn_id)
        if wrong:
            row["reason"] = f"wrong answer, not measured: {wrong}"
            row["status"] = "error"
            return row
        if scn["wrk"] is not None:
            _, _, err = wrk(port, scn, ctx["warmup"], latency=False)
            if err:
                row["reason"] = f"warm-up: {err}"
                return row
            best = None
            for attempt in (1, 2):
                noise = Noise(srv.proc.pid)
                cores = CoreUse()
                argv, out, err = wrk(port, scn, ctx["duration"], latency=scn.get("latency", True))
                server_cpu, load_cpu = cores.busy()
                other = noise.others()
                row["wrk_command"] = shlex.join(argv).replace(ROOT + "/", "")
                parsed = parse_wrk(out or "")
                if err or not parsed:
                    row["reason"] = err or "could not parse wrk output"
                    row["status"] = "error"
                    return row
                parsed["other_cpu"], parsed["attempts"] = other, attempt
                parsed["server_cpu"], parsed["load_cpu"] = server_cpu, load_cpu
                if server_cpu is not None and parsed["rps"] and SERVER_CPU != LOAD_CPU:
                    # the server's CPU time per answer, at the pace this run had
                    parsed["server_us_per_req"] = round(server_cpu * 1e6 / parsed["rps"], 3)
                if best is None or other < best["other_cpu"]:
                    best = parsed
                if other <= NOISE_LIMIT or attempt == 2:
                    break
                log(f"{sid} {scn_id}: other work took {other:.2f} CPU during the run: measuring again")
                wait_quiet()
            row.update(best)
            row["rss_kib"], row["procs"] = srv.rss()
            row["status"] = "ok"
            if srv.proc.poll() is not None:
                row["note"] = f"server exited during the run ({srv.proc.returncode})"
            return row
        # idle keep-alive connections
        _, _, err = wrk(port, SCN["get"], ctx["warmup"], latency=False)
        if err:
            row["reason"] = f"warm-up: {err}"
            return row
        time.sleep(1.0)
        before, procs = srv.rss()
        socks, stats = hold_idle(port, ctx["idle_conns"])
        time.sleep(2.0)  # settle: let the server reach its idle state
        alive = still_open(socks)
        after, _ = srv.rss()
        alive = still_open(alive)  # and still open once measured
        for s in socks:
            s.close()
        stats["held"] = len(alive)
        row.update({"idle": stats, "rss_before_kib": before, "rss_kib": after, "procs": procs,
                    "status": "ok"})
        if alive:
            row["bytes_per_conn"] = round((after - before) * 1024 / len(alive))
        elif stats["answered"] and stats["announced_close"] == stats["answered"]:
            row["reason"] = "no keep-alive: it answers with Connection: close"
        else:
            row["reason"] = "the server kept no connection open after its answer"
        return row
    finally:
        srv.stop()


# ---------------------------------------------------------------- behind nginx, with slow streams

def http_get(port, path, timeout=10):
    """(status, body) of one GET on 127.0.0.1:port, or (None, what went wrong)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e)


def sum_errors(*errs):
    out = {}
    for e in errs:
        for k, v in (e or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def mixed_run(srv, proxy, port, ctx, slow):
    """One measured run: wrk -t1 -c16 on GET / through nginx, alone, or (slow)
    while a second wrk keeps 2 connections looping on GET /sleep?ms=100 from
    MIXED_SLOW_LEAD s before the fast run to as long after it, so that the
    slow calls are in flight during the whole of it. Returns (result, error)."""
    d = ctx["duration"]
    fast_argv = wrk_argv(port, "/", d, MIXED_FAST_CONNS)
    slow_argv = wrk_argv(port, MIXED_SLOW_PATH, d + 2 * MIXED_SLOW_LEAD, MIXED_SLOW_CONNS)
    noise = Noise(srv.proc.pid, proxy.proc.pid)
    mark = proxy.log_mark()
    slow_p, slow_res = None, None
    try:
        if slow:
            slow_p = subprocess.Popen(slow_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(MIXED_SLOW_LEAD)
            if slow_p.poll() is not None:
                return None, f"the slow streams' wrk exited at start ({slow_p.returncode})"
        cores = CoreUse()  # over the fast run only
        try:
            p = subprocess.run(fast_argv, capture_output=True, text=True, timeout=d + 30)
        except subprocess.TimeoutExpired:
            return None, "wrk (GET /) did not finish in time"
        server_cpu, load_cpu = cores.busy()
        if p.returncode != 0:
            return None, f"wrk exit {p.returncode}: {p.stderr.strip()[:200]}"
        fast = parse_wrk(p.stdout)
        if not fast:
            return None, "could not parse wrk output (GET /)"
        if slow_p is not None:
            try:
                out, err = slow_p.communicate(timeout=2 * MIXED_SLOW_LEAD + 30)
            except subprocess.TimeoutExpired:
                return None, "the slow streams' wrk did not finish in time"
            if slow_p.returncode != 0:
                return None, f"slow streams' wrk exit {slow_p.returncode}: {err.strip()[:200]}"
            slow_res = parse_wrk(out)
            if not slow_res:
                return None, "could not parse wrk output (slow streams)"
    finally:
        if slow_p is not None and slow_p.poll() is None:
            slow_p.kill()
            slow_p.wait()
    fast["server_cpu"], fast["load_cpu"] = server_cpu, load_cpu
    fast["other_cpu"] = noise.others()
    fast["nginx_log"] = proxy.log_since(mark)
    fast["wrk_command"] = shlex.join(fast_argv)
    if slow_res is not None:
        fast["slow"] = {k: slow_res.get(k) for k in ("requests", "rps", "p50_ms", "p99_ms", "max_ms", "errors")}
        fast["slow"]["seconds"] = d + 2 * MIXED_SLOW_LEAD
        fast["slow"]["wrk_command"] = shlex.join(slow_argv)
    return fast, None


def quieter(run, what):
    """run() once more when other work took more than NOISE_LIMIT of a CPU
    during it; the quieter of the two is kept."""
    best = None
    for attempt in (1, 2):
        res, err = run()
        if err:
            return None, err
        res["attempts"] = attempt
        if best is None or res["other_cpu"] < best["other_cpu"]:
            best = res
        if res["other_cpu"] <= NOISE_LIMIT or attempt == 2:
            break
        log(f"{what}: other work took {res['other_cpu']:.2f} CPU during the run: measuring again")
        wait_quiet()
    return best, None


def measure_mixed(sid, port, ctx):
    """Keep-alive affinity: a 4-worker server on a Unix socket behind nginx
    (upstream keepalive 32), GET / p99 without, then with, 2 slow streams.

    CPU pinning: the server alone on SERVER_CPU, as in the other scenarios;
    nginx (one worker), both wrks and this script share LOAD_CPU. What is
    compared is the server's tail latency, so its workers compete only with
    each other for their CPU (the slow calls sleep, they take none), and the
    client side, the same for every server, keeps out of its way. The cost:
    one CPU serves nginx and wrk, so req/s behind nginx is bounded by that
    CPU (its busy share is recorded as load_cpu) and is not a throughput
    figure for the server."""
    scn = SCN["mixed"]
    row = {"server": sid, "scenario": "mixed", "port": port, "workers": scn["workers"],
           "status": "na", "reason": None}
    uds = mixed_socket(sid) if sid in UDS_SERVERS else None
    srv = Server(sid, "mixed", port + 1000, ctx, uds=uds)  # port + 1000: the backend, on TCP only
    row["command"] = shlex.join(srv.argv).replace(ROOT + "/", "") if srv.argv else None
    row["backend"] = f"unix:{uds}" if uds else f"127.0.0.1:{port + 1000}"
    if srv.argv:
        row["cpu_busy_before"] = wait_quiet()
        if row["cpu_busy_before"] > 0.15:
            log(f"warning: CPUs {row['cpu_busy_before']:.0%} busy with other work before {sid} mixed")
    proxy = None
    try:
        why = srv.start()
        if why:
            row["reason"] = why
            row["start_failed"] = srv.proc is not None and not why.startswith("port ")
            return row
        proxy = Proxy(srv, port)
        row["proxy_command"] = shlex.join(proxy.argv).replace(ROOT + "/", "") if proxy.argv else None
        if port_busy(port):
            row["reason"] = f"nginx: port {port} already in use"
            return row
        why = proxy.start()
        if why:
            row["reason"] = f"nginx: {why}"
            return row
        for path, want in (("/", b"Hello, World!"), (MIXED_SLOW_PATH, b"slept 100")):
            status, body = http_get(port, path)
            if status != 200 or body != want:
                got = body if status is None else f"status {status}, body {body[:60]!r}"
                row["reason"] = f"wrong answer through nginx, not measured: GET {path}: {got}"
                row["status"] = "error"
                return row
        _, _, err = wrk(port, {"path": "/", "wrk": []}, ctx["warmup"], latency=False, conns=MIXED_FAST_CONNS)
        if err:
            row["reason"] = f"warm-up: {err}"
            return row
        runs = {}
        for key, slow in (("without", False), ("with", True)):
            res, err = quieter(lambda: mixed_run(srv, proxy, port, ctx, slow), f"{sid} mixed ({key} slow streams)")
            if err:
                row["reason"] = f"{key} the slow streams: {err}"
                row["status"] = "error"
                return row
            res["wrk_command"] = res["wrk_command"].replace(ROOT + "/", "")
            runs[key] = res
        row.update(runs)
        a, b = runs["with"]["p99_ms"], runs["without"]["p99_ms"]
        row["p99_ratio"] = round(a / b, 3) if a is not None and b else None
        # everything wrk saw go wrong, fast and slow: socket errors and non-2xx (nginx's 502s)
        row["errors"] = sum_errors(runs["without"]["errors"], runs["with"]["errors"],
                                   runs["with"]["slow"]["errors"])
        row["nginx_log_lines"] = runs["without"]["nginx_log"]["lines"] + runs["with"]["nginx_log"]["lines"]
        row["rss_kib"], row["procs"] = srv.rss()
        row["status"] = "ok"
        if srv.proc.poll() is not None:
            row["note"] = f"server exited during the run ({srv.proc.returncode})"
        return row
    finally:
        if proxy is not None:
            proxy.stop()
        srv.stop()


def add_mixed_goal(results):
    """Per rgun row of the mixed scenario: does the goal hold (fast p99 with
    the slow streams at most MIXED_MAX_RATIO x without, and no worse than
    Gunicorn sync's with them in the same run)?"""
    ref = results.get((MIXED_REFERENCE, "mixed")) or {}
    ref_p99 = (ref.get("with") or {}).get("p99_ms")
    for (sid, scn), r in results.items():
        if scn != "mixed" or r.get("status") != "ok":
            continue
        w = r["with"]["p99_ms"]
        r[f"x_{MIXED_REFERENCE}_p99"] = round(w / ref_p99, 3) if w is not None and ref_p99 else None
        if sid not in ("rgun", "rgun-wsgi"):
            continue
        ratio_ok = None if r.get("p99_ratio") is None else r["p99_ratio"] <= MIXED_MAX_RATIO
        ref_ok = None if w is None or ref_p99 is None else w <= ref_p99
        r["goal"] = {"ratio_ok": ratio_ok, "vs_reference_ok": ref_ok,
                     "met": None if ratio_ok is None or ref_ok is None else ratio_ok and ref_ok}


# ---------------------------------------------------------------- report

def fmt_rps(v):
    if v is None:
        return "n/a"
    return f"{v/1000:.1f}k" if v >= 10000 else f"{v:.0f}"


def fmt_ms(v):
    if v is None:
        return "n/a"
    return f"{v*1000:.0f}us" if v < 1 else f"{v:.2f}ms" if v < 100 else f"{v:.0f}ms"


def fmt_busy(v):
    return "n/a" if v is None else f"{v:.0%}" + ("!" if v >= SATURATED else " ")


def fmt_us(v):
    return "n/a" if v is None else f"{v:.2f}"


def fmt_mib(kib):
    return "n/a" if kib is None else f"{kib/1024:.1f}"


def cell(results, sid, scn):
    return results.get((sid, scn))


def add_ratios(results):
    for (sid, scn), r in results.items():
        if r.get("rps") is None:
            continue
        for ref in ("nginx", "granian"):
            b = results.get((ref, scn))
            r[f"x_{ref}"] = round(r["rps"] / b["rps"], 3) if b and b.get("rps") else None


def table(results, servers, scenarios):
    lines = []
    if any(s in THROUGHPUT for s in scenarios):
        lines += throughput_table(results, servers, scenarios)
    if "idle10k" in scenarios:
        lines += idle_table(results, servers)
    if "mixed" in scenarios:
        lines += mixed_table(results, servers)
    return "\n".join(lines)


def throughput_table(results, servers, scenarios):
    lines = []
    hdr = (f"{'scenario':<28} {'server':<17} {'req/s':>9} {'p99':>9} {'errors':>7} {'RSS MiB':>8} "
           f"{'x nginx':>8} {'x granian':>9} {'srv CPU':>8} {'wrk CPU':>8} {'us/req':>7} {'other CPU':>9}")
    lines += [hdr, "-" * len(hdr)]
    for scn in scenarios:
        if scn == "idle10k" or SCN[scn].get("kind"):
            continue
        for sid in servers:
            r = cell(results, sid, scn)
            if r is None:
                continue
            if r.get("rps") is None:
                lines.append(f"{SCN[scn]['label']:<28} {sid:<17} {'n/a':>9}   {(r.get('reason') or '')[:90]}")
                continue
            xn = f"{r['x_nginx']:.2f}" if r.get("x_nginx") is not None else "-"
            xg = f"{r['x_granian']:.2f}" if r.get("x_granian") is not None else "-"
            lines.append(f"{SCN[scn]['label']:<28} {sid:<17} {fmt_rps(r['rps']):>9} {fmt_ms(r['p99_ms']):>9} "
                         f"{r['errors']['total']:>7} {fmt_mib(r['rss_kib']):>8} {xn:>8} {xg:>9} "
                         f"{fmt_busy(r.get('server_cpu')):>8} {fmt_busy(r.get('load_cpu')):>8} "
                         f"{fmt_us(r.get('server_us_per_req')):>7} "
                         f"{r.get('other_cpu', 0):>8.0%}{'*' if r.get('other_cpu', 0) > NOISE_LIMIT else ''}")
        lines.append("")
    lines.append(f"srv CPU, wrk CPU: how busy the server's CPU {SERVER_CPU} and wrk's CPU {LOAD_CPU} were (user, system and\n"
                 f"softirq); ! = {SATURATED:.0%} or more: on wrk's CPU, it means wrk, not the server, set the pace.\n"
                 "us/req: the server's CPU time per answer (busy share of its CPU / req/s) at the pace of that run.\n"
                 "other CPU: CPU time other processes on the machine took during the measured run, in % of one\n"
                 f"CPU (a run above {NOISE_LIMIT:.0%} is measured once more and the quieter one kept; * = still above)\n"
                 "p99 n/a on GET / pipelined x16: wrk times a batch of 16 there, not a request.")
    lines.append("")
    return lines


def idle_table(results, servers):
    lines = [f"Idle keep-alive connections (GET / once on each, then held idle)"]
    hdr = f"{'server':<17} {'held':>6} {'of':>6} {'RSS before':>11} {'RSS after':>10} {'per conn':>10}"
    lines += [hdr, "-" * len(hdr)]
    for sid in servers:
        r = cell(results, sid, "idle10k")
        if r is None:
            continue
        if "idle" not in r:
            lines.append(f"{sid:<17} {'n/a':>6}   {(r.get('reason') or '')[:90]}")
            continue
        per = r.get("bytes_per_conn")
        per_s = f"{per/1024:.2f} KiB" if per is not None else "n/a"
        lines.append(f"{sid:<17} {r['idle']['held']:>6} {r['idle']['attempted']:>6} "
                     f"{fmt_mib(r['rss_before_kib']) + ' MiB':>11} {fmt_mib(r['rss_kib']) + ' MiB':>10} {per_s:>10}"
                     + ("" if per is not None else f"   {r.get('reason') or ''}"))
    lines.append("")
    return lines


def mixed_table(results, servers):
    lines = [f"{SCN['mixed']['label']}: {SCN['mixed']['workers']} workers on a Unix socket, nginx in front "
             f"(keepalive {MIXED_UPSTREAM_KEEPALIVE}); wrk -t1 -c{MIXED_FAST_CONNS} GET /, alone (without) and while "
             f"{MIXED_SLOW_CONNS} connections loop on GET {MIXED_SLOW_PATH} (with)"]
    hdr = (f"{'':<17} {'------------ without ------------':^35} | {'------------- with -------------':^35} |")
    lines.append(hdr)
    hdr = (f"{'server':<17} {'req/s':>8} {'p50':>8} {'p99':>8} {'max':>8} | {'req/s':>8} {'p50':>8} {'p99':>8} "
           f"{'max':>8} | {'p99 x':>6} {'slow req':>8} {'errors':>6} {'nginx log':>9} {'CPU1':>11} "
           f"{'other CPU':>10}  goal")
    lines += [hdr, "-" * len(hdr)]
    for sid in servers:
        r = cell(results, sid, "mixed")
        if r is None:
            continue
        if r.get("status") != "ok":
            lines.append(f"{sid:<17} {'n/a':>8}   {(r.get('reason') or '')[:110]}")
            continue
        wo, wi = r["without"], r["with"]

        def four(x):
            return f"{fmt_rps(x['rps']):>8} {fmt_ms(x['p50_ms']):>8} {fmt_ms(x['p99_ms']):>8} {fmt_ms(x['max_ms']):>8}"

        ratio = f"{r['p99_ratio']:.2f}x" if r.get("p99_ratio") is not None else "n/a"
        g = r.get("goal")
        goal = "-" if g is None else {True: "MET", False: "NOT MET", None: "n/a"}[g["met"]]
        if g and g["met"] is False:
            goal += " (" + ", ".join(w for w, ok in ((f"p99 x > {MIXED_MAX_RATIO}", g["ratio_ok"]),
                                                      (f"p99 > {MIXED_REFERENCE}'s", g["vs_reference_ok"]))
                                     if ok is False) + ")"
        cpu1 = f"{fmt_busy(wo.get('load_cpu')).strip()}/{fmt_busy(wi.get('load_cpu')).strip()}"
        other = "/".join(f"{x.get('other_cpu', 0):.0%}" + ("*" if x.get("other_cpu", 0) > NOISE_LIMIT else "")
                         for x in (wo, wi))
        lines.append(f"{sid:<17} {four(wo)} | {four(wi)} | {ratio:>6} {wi['slow']['requests']:>8} "
                     f"{r['errors']['total']:>6} {r['nginx_log_lines']:>9} {cpu1:>11} {other:>10}  {goal}")
    d = next((r["with"]["slow"]["seconds"] for (s, c), r in results.items() if c == "mixed" and r.get("with")), None)
    lines += ["",
              "p99 x: fast p99 with the slow streams / without them. goal (rgun, rgun-wsgi): p99 x <= "
              f"{MIXED_MAX_RATIO} and p99 with <= {MIXED_REFERENCE}'s.",
              f"slow req: GET {MIXED_SLOW_PATH} answered on the {MIXED_SLOW_CONNS} slow connections"
              + (f" over the {d} s they ran (about {MIXED_SLOW_CONNS * d * 10} if every call takes 100 ms)." if d else "."),
              "errors: wrk's socket errors and non-2xx answers (nginx's 502/504), fast runs and slow streams together.",
              "nginx log: warnings and errors nginx logged during the two runs (a retried upstream connection shows only there).",
              f"CPU1: how busy CPU {LOAD_CPU} (nginx and both wrks) was, without/with; ! = {SATURATED:.0%} or more: the "
              "client side set the pace.",
              "other CPU: other processes' CPU time during each run, without/with (* = above "
              f"{NOISE_LIMIT:.0%}, after one more try).",
              ""]
    return lines


def targets(results):
    """The issue-4 targets and the keep-alive affinity goal (mixed), each:
    name, goal, measured, met (True/False/None = not measurable)."""
    out = []

    def rps(s, c):
        r = results.get((s, c))
        return r.get("rps") if r else None

    def p99(s, c):
        r = results.get((s, c))
        return r.get("p99_ms") if r else None

    def pace(name, c):
        """Who set the pace of a rgun-vs-nginx run, and each one's server CPU per answer."""
        r, n = results.get(("rgun", c)) or {}, results.get(("nginx", c)) or {}
        if r.get("load_cpu") is None or n.get("load_cpu") is None:
            return
        bound = [s for s, x in (("rgun", r), ("nginx", n)) if x["load_cpu"] >= SATURATED]
        text = (f"wrk's CPU {r['load_cpu']:.0%} busy against rgun, {n['load_cpu']:.0%} against nginx; "
                f"server CPU {r['server_cpu']:.0%} vs {n['server_cpu']:.0%}")
        if r.get("server_us_per_req") and n.get("server_us_per_req"):
            text += (f"; server CPU per answer {r['server_us_per_req']:.2f} vs {n['server_us_per_req']:.2f} us "
                     f"(rgun {n['server_us_per_req'] / r['server_us_per_req']:.2f}x as frugal)")
        if bound:
            text += f"; the load generator set the pace against {' and '.join(bound)}"
        out.append({"target": f"{name}: who set the pace", "goal": "(info)", "met": "info", "text": text,
                    "value": {"load_cpu": [r["load_cpu"], n["load_cpu"]],
                              "server_cpu": [r["server_cpu"], n["server_cpu"]],
                              "server_us_per_req": [r.get("server_us_per_req"), n.get("server_us_per_req")]}})

    def ratio(name, a, b, goal):
        if a is None or b is None:
            out.append({"target": name, "goal": f">= {goal}x", "value": None, "met": None})
        else:
            out.append({"target": name, "goal": f">= {goal}x", "value": round(a / b, 3),
                        "met": a / b >= goal, "text": f"{a / b:.2f}x ({fmt_rps(a)} vs {fmt_rps(b)})"})

    ratio("native GET / keep-alive vs nginx", rps("rgun", "get"), rps("nginx", "get"), 1.2)
    pace("native GET / keep-alive", "get")
    ratio("native GET / Connection: close vs nginx", rps("rgun", "close"), rps("nginx", "close"), 1.0)
    pace("native GET / Connection: close", "close")
    a, b = rps("rgun", "pipelined"), rps("nginx", "pipelined")
    if a is not None and b is not None:
        out.append({"target": "native GET / pipelined x16 vs nginx", "goal": "(no goal)", "value": round(a / b, 3),
                    "met": "info", "text": f"{a / b:.2f}x ({fmt_rps(a)} vs {fmt_rps(b)})"})
        pace("native GET / pipelined x16", "pipelined")
    for c, lab in (("get", "keep-alive"), ("close", "Connection: close")):
        a, b = p99("rgun", c), p99("nginx", c)
        out.append({"target": f"native p99 <= nginx p99 ({lab})", "goal": "<= nginx",
                    "value": a, "met": None if a is None or b is None else a <= b,
                    "text": None if a is None or b is None else f"{fmt_ms(a)} vs {fmt_ms(b)}"})
    ratio("wsgi GET / keep-alive vs granian", rps("rgun-wsgi", "get"), rps("granian", "get"), 1.2)
    ratio("wsgi GET / keep-alive vs gunicorn sync", rps("rgun-wsgi", "get"), rps("gunicorn-sync", "get"), 10)
    ref = (results.get((MIXED_REFERENCE, "mixed")) or {}).get("with") or {}
    for sid, lab in (("rgun", "native"), ("rgun-wsgi", "wsgi")):
        r = results.get((sid, "mixed")) or {}
        wo, wi = (r.get("without") or {}).get("p99_ms"), (r.get("with") or {}).get("p99_ms")
        x = r.get("p99_ratio")
        out.append({"target": f"{lab} p99 with 2 slow streams / without", "goal": f"<= {MIXED_MAX_RATIO}x",
                    "value": x, "met": None if x is None else x <= MIXED_MAX_RATIO,
                    "text": None if x is None else f"{x:.2f}x ({fmt_ms(wi)} vs {fmt_ms(wo)}, behind nginx)"})
        rp = ref.get("p99_ms")
        out.append({"target": f"{lab} p99 with slow streams <= gunicorn sync", "goal": "<= g. sync",
                    "value": wi, "met": None if wi is None or rp is None else wi <= rp,
                    "text": None if wi is None or rp is None else f"{fmt_ms(wi)} vs {fmt_ms(rp)}"})
    one = [(c, results[("rgun", c)]["rss_kib"]) for c in ("get", "close", "bytes64k", "upload1m")
           if results.get(("rgun", c), {}).get("rss_kib")]
    if one:
        c, kib = max(one, key=lambda x: x[1])
        out.append({"target": "native master + 1 worker RSS after the run", "goal": "< 8 MiB",
                    "value": kib, "met": kib < 8 * 1024,
                    "text": f"{kib/1024:.2f} MiB (largest, after {c}; " +
                            ", ".join(f"{cc} {k/1024:.2f}" for cc, k in one) + ")"})
    else:
        out.append({"target": "native master + 1 worker RSS after the run", "goal": "< 8 MiB",
                    "value": None, "met": None})
    r = results.get(("rgun", "idle10k"), {})
    per = r.get("bytes_per_conn")
    out.append({"target": "native idle keep-alive connection", "goal": "< 4 KiB", "value": per,
                "met": None if per is None else per < 4096,
                "text": None if per is None else f"{per} B/conn over {r['idle']['held']} connections"})
    for sid in ("rgun", "rgun-wsgi"):
        cells = [(c, r2) for (s, c), r2 in results.items() if s == sid and c != "idle10k"]
        measured = [(c, r2["errors"]["total"]) for c, r2 in cells if r2.get("errors")]
        if not measured:
            out.append({"target": f"zero errors, {sid}", "goal": "0", "value": None, "met": None})
            continue
        bad = [f"{c}: {n}" for c, n in measured if n]
        idle = results.get((sid, "idle10k"), {}).get("idle")
        if idle and idle["held"] < idle["attempted"]:
            bad.append(f"idle10k: {idle['attempted'] - idle['held']} of {idle['attempted']} not held")
        out.append({"target": f"zero errors, {sid}", "goal": "0", "value": sum(n for _, n in measured),
                    "met": not bad, "text": "; ".join(bad) if bad else f"0 in {len(measured)} scenarios"})
    return out


def print_targets(tg):
    print("Targets (issue 4; keep-alive affinity: with 2 slow streams)")
    for t in tg:
        mark = {True: "MET    ", False: "NOT MET", None: "n/a    ", "info": "info   "}[t["met"]]
        print(f"  [{mark}] {t['target']:<45} goal {t['goal']:<9} {t.get('text') or ''}")


# ---------------------------------------------------------------- chart

def chart(doc, servers, scenarios, png):
    gp = which("gnuplot")
    if not gp:
        log("gnuplot not installed: no PNG")
        return False
    d = os.path.join(WORK, "chart")
    os.makedirs(d, exist_ok=True)
    res = {(r["server"], r["scenario"]): r for r in doc["results"]}
    panels = [s for s in scenarios]
    cols = 3 if len(panels) > 4 else max(1, min(len(panels), 2))
    rows = (len(panels) + cols - 1) // cols
    m = doc["machine"]
    title = (f"rgun benchmark, {doc['date'][:16].replace('T', ' ')} UTC: {m['cpu_model']}, {m['nproc']} CPUs, "
             f"Linux {m['kernel']}; server on CPU {doc['server_cpu']}, "
             + (f"wrk -t1 -c{doc['connections']}" if any(s in THROUGHPUT for s in scenarios) else "wrk")
             + (" and nginx (mixed)" if "mixed" in scenarios else "")
             + f" on CPU {doc['load_cpu']}, {doc['duration_s']} s per run")
    script = [
        f"set terminal pngcairo size {max(460 * cols, 1280)},{400 * rows + 40} font 'DejaVu Sans,10' noenhanced",
        f"set output '{png}'",
        f"set multiplot layout {rows},{cols} title \"{title}\" font ',12'",
        "set style fill solid 0.9 border lc rgb '#333333'",
        "set boxwidth 0.72",
        "unset key",
        "set xtics rotate by -35 nomirror scale 0 font ',9'",
        "set ytics nomirror font ',9'",
        "set grid ytics lc rgb '#dddddd'",
        "set border 3",
        "set bmargin 5",
        f"set xrange [-0.6:{len(servers) - 0.4}]",
    ]
    for scn in panels:
        vals = []
        for i, sid in enumerate(servers):
            r = res.get((sid, scn), {})
            if scn == "idle10k":
                v = r.get("bytes_per_conn")
                v = v / 1024 if v is not None else None
                lab = "n/a" if v is None else f"{v:.2f}"
            elif scn == "mixed":
                v = (r.get("with") or {}).get("p99_ms")
                lab = "n/a" if v is None else fmt_ms(v)
            else:
                v = r.get("rps")
                lab = "n/a" if v is None else fmt_rps(v)
            vals.append((i, SRV[sid]["short"], v, lab, SRV[sid]["color"]))
        top = max([v for _, _, v, _, _ in vals if v is not None] or [1]) or 1
        dat = os.path.join(d, f"{scn}.dat")
        with open(dat, "w") as f:
            for i, name, v, lab, col in vals:
                f.write(f'{i} "{name}" {v if v is not None else 0} "{lab}" {col} {v if v is not None else 0}\n')
        if scn == "idle10k":
            t = f"Idle keep-alive: KiB per connection (lower is better)"
        elif scn == "mixed":
            t = f"Behind nginx, {MIXED_SLOW_CONNS} slow streams: GET / p99 ms (lower is better)"
        else:
            t = f"{SCN[scn]['label']}: requests/s"
        script += [
            f"set title \"{t}\" font ',11'",
            f"set yrange [0:{top * 1.18}]",
            f"plot '{dat}' using 1:3:5:xtic(2) with boxes lc rgb variable, "
            f"'' using 1:6:4 with labels offset 0,0.7 font ',9'",
        ]
    script.append("unset multiplot")
    gpfile = os.path.join(d, "chart.gp")
    with open(gpfile, "w") as f:
        f.write("\n".join(script) + "\n")
    p = subprocess.run([gp, gpfile], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        log(f"gnuplot failed: {p.stderr.strip()[:400]}")
        return False
    return True


# ---------------------------------------------------------------- machine

def sh(argv, stderr=False):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return ((p.stderr if stderr else p.stdout) or p.stdout or p.stderr).strip().splitlines()[0]
    except Exception:
        return None


def machine():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1])
    except OSError:
        pass
    distro = None
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu_model": cpu,
            "mem_total_kib": mem, "os": distro}


def versions():
    v = {"rgun": sh([os.path.join(RELEASE, "rgun"), "--version"]),
         "nginx": sh([which("nginx") or "nginx", "-v"], stderr=True),
         "wrk": sh(["wrk", "-v"]), "python": platform.python_version()}
    for exe in ("granian", "gunicorn", "uwsgi"):
        p = os.path.join(VENV_BIN, exe)
        v[exe] = sh([p, "--version"]) if os.access(p, os.X_OK) else None
    v["git_commit"] = sh(["git", "-C", ROOT, "rev-parse", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "worker", "gateway",
                            "examples", "wsgi", "Cargo.toml", "Cargo.lock"], capture_output=True, text=True)
    v["git_dirty_sources"] = bool(dirty.stdout.strip())
    return v


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.split("\n\n")[0],
        epilog="servers: " + ", ".join(SRV) + "\nscenarios: " + ", ".join(SCN) +
               "\nDURATION=SECONDS in the environment sets the measured run length (default 10).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, 1 s warm-ups")
    ap.add_argument("--only", help="comma-separated servers to run (default: all)")
    ap.add_argument("--scenarios", help="comma-separated scenarios to run (default: all)")
    ap.add_argument("--duration", type=int, help="seconds per measured run (overrides DURATION)")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle keep-alive connections (default 10000)")
    ap.add_argument("--out", help="results folder (default: bench/results for a full run, "
                                  "target/bench/results for --quick or a partial run)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build (handled by scripts/bench)")
    ap.add_argument("--no-install", action="store_true", help="skip installs (handled by scripts/bench)")
    ap.add_argument("--metrics", action="store_true",
                    help="run rgun with --metrics-bind (requests counted for Prometheus); "
                         "compare with a run without it for the cost of metrics")
    a = ap.parse_args()

    def pick(arg, known, what):
        if not arg:
            return list(known)
        want = [x.strip() for x in arg.split(",") if x.strip()]
        bad = [x for x in want if x not in known]
        if bad:
            ap.error(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
        return [x for x in known if x in want]

    servers = pick(a.only, SRV, "server")
    scenarios = pick(a.scenarios, SCN, "scenario")
    if a.duration:
        duration = a.duration
    elif os.environ.get("DURATION", "").strip():
        duration = int(os.environ["DURATION"])
    else:
        duration = 3 if a.quick else 10
    if not 1 <= duration <= 600:
        ap.error("duration must be between 1 and 600 s")
    if not 1 <= a.idle_conns <= 50000:
        ap.error("--idle-conns must be between 1 and 50000")
    warmup = 1 if a.quick or duration < 5 else 2
    full = not (a.quick or a.only or a.scenarios or a.metrics)
    out_dir = os.path.abspath(a.out) if a.out else (DEFAULT_OUT if full else SCRATCH_OUT)

    for tool in ("wrk", "taskset", "curl"):
        if not shutil.which(tool):
            sys.exit(f"scripts/bench: {tool} is required and not installed")
    global SERVER_CPU, LOAD_CPU
    if (os.cpu_count() or 1) < 2:
        log("warning: one CPU only: server and load share it")
        SERVER_CPU = LOAD_CPU = 0
    try:
        os.sched_setaffinity(0, {LOAD_CPU})  # this script (the idle client) stays off the server's CPU
    except OSError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.idle_conns + 1024
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log(f"warning: open-file limit {hard}: the idle test may hold fewer connections")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop the server

    ctx = {"spec_dir": find_wsgi_app(), "duration": duration, "warmup": warmup, "idle_conns": a.idle_conns,
           "metrics": a.metrics}
    if ctx["spec_dir"] is None:
        log("testapp_wsgi.py not found in ../shared/spec, $RGUN_SHARED or examples/testapp: "
            "the WSGI servers will be n/a")
    plan = [(sid, scn) for sid in servers for scn in scenarios
            if scn in SRV[sid].get("scenarios", SCN)]
    est = sum((2 * duration + warmup + 2 * MIXED_SLOW_LEAD + 6) if SCN[s].get("kind") == "mixed" else
              (duration + warmup + 2) if SCN[s]["wrk"] is not None else 25 for _, s in plan)
    log(f"{len(plan)} runs, {duration} s each (+{warmup} s warm-up), about {est // 60 + 1} min; "
        f"server on CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}" +
        (f", {CONNECTIONS} connections" if any(s in THROUGHPUT for s in scenarios) else "") +
        (f"; mixed: nginx on CPU {LOAD_CPU} too" if "mixed" in scenarios else ""))

    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        log(f"warning: load average {load_before[0]:.2f} before the run: other work on this machine skews results")
    started = dt.datetime.now(dt.timezone.utc)
    results = {}
    t0 = time.monotonic()
    failed_start = {}
    for n, (sid, scn) in enumerate(plan, 1):
        port = PORT_BASE + 10 * list(SRV).index(sid) + list(SCN).index(scn)
        t1 = time.monotonic()
        if sid in failed_start:
            r = {"server": sid, "scenario": scn, "port": port, "workers": SCN[scn]["workers"],
                 "status": "na", "reason": f"did not start ({failed_start[sid]})"}
        else:
            r = measure(sid, scn, port, ctx)
            if r.get("start_failed"):
                failed_start[sid] = f"in {scn}"
        r["seconds"] = round(time.monotonic() - t1, 1)
        results[(sid, scn)] = r
        if r.get("rps") is not None:
            msg = (f"{fmt_rps(r['rps'])} req/s, p99 {fmt_ms(r['p99_ms'])}, {r['errors']['total']} errors, "
                   f"RSS {fmt_mib(r['rss_kib'])} MiB")
        elif r.get("scenario") == "mixed" and r.get("status") == "ok":
            wo, wi = r["without"], r["with"]
            msg = (f"GET / p99 {fmt_ms(wo['p99_ms'])} alone, {fmt_ms(wi['p99_ms'])} with slow streams "
                   f"({r['p99_ratio']}x); {fmt_rps(wo['rps'])} / {fmt_rps(wi['rps'])} req/s, "
                   f"{wi['slow']['requests']} slow, {r['errors']['total']} errors, nginx log {r['nginx_log_lines']}")
        elif r.get("bytes_per_conn") is not None:
            msg = (f"held {r['idle']['held']}/{r['idle']['attempted']}, {r['bytes_per_conn']} B/conn, "
                   f"RSS {fmt_mib(r['rss_before_kib'])} -> {fmt_mib(r['rss_kib'])} MiB")
        else:
            msg = f"n/a: {r.get('reason')}"
        log(f"[{n:>2}/{len(plan)}] {sid:<16} {scn:<10} {msg}")
    elapsed = time.monotonic() - t0

    add_ratios(results)
    add_mixed_goal(results)
    tg = targets(results)
    doc = {
        "date": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "command": "scripts/bench " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "scripts/bench",
        "duration_s": duration, "warmup_s": warmup, "connections": CONNECTIONS, "wrk_threads": 1,
        "idle_conns": a.idle_conns, "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
        "machine": machine(), "versions": versions(), "wsgi_app_dir": ctx["spec_dir"] and os.path.relpath(ctx["spec_dir"], ROOT),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "servers": {s: SRV[s]["label"] for s in servers},
        "mixed": {"fast_connections": MIXED_FAST_CONNS, "slow_connections": MIXED_SLOW_CONNS,
                  "slow_path": MIXED_SLOW_PATH, "upstream_keepalive": MIXED_UPSTREAM_KEEPALIVE,
                  "workers": SCN["mixed"]["workers"], "server_cpu": SERVER_CPU, "nginx_and_wrk_cpu": LOAD_CPU,
                  "goal": {"max_p99_ratio": MIXED_MAX_RATIO, "p99_with_at_most": MIXED_REFERENCE}}
        if "mixed" in scenarios else None,
        "scenarios": {s: SCN[s]["label"] for s in scenarios},
        "results": list(results.values()), "targets": tg,
    }

    print()
    print(f"rgun benchmark {doc['date']}  ({doc['machine']['cpu_model']}, nproc {doc['machine']['nproc']}, "
          f"Linux {doc['machine']['kernel']}; {duration} s runs, "
          + (f"{CONNECTIONS} connections, " if any(s in THROUGHPUT for s in scenarios) else "") +
          f"server CPU {SERVER_CPU} / wrk CPU {LOAD_CPU}" +
          (f", and nginx for mixed)" if "mixed" in scenarios else ")"))
    print()
    print(table(results, servers, scenarios))
    print_targets(tg)
    print()

    os.makedirs(out_dir, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ")
    for name in (f"{stamp}.json", "latest.json"):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    png = os.path.join(out_dir, "latest.png")
    drew = chart(doc, servers, scenarios, png)
    rel = os.path.relpath(out_dir, ROOT)
    print(f"results: {rel}/{stamp}.json, {rel}/latest.json" + (f", {rel}/latest.png" if drew else "")
          + f"  ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
