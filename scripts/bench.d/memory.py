#!/usr/bin/env python3
"""scripts/bench --memory: what a Django site costs in memory (issue 14).

The summed PSS (proportional set size: shared pages split among the
processes that map them) of the master and its workers, after the same
fixed warm-up, for the pip-installed rgun and for Gunicorn's sync worker,
each with and without --preload, with -w 4 and -w 8. The site is
tests/python/djangosite (admin, a CSRF form, an upload, a FileResponse);
every server runs in the same virtualenv of the same Python.

The warm-up is fixed per worker, not per server: requests (one connection
each, as a browser behind a proxy without keep-alive) go on until every
worker has answered every kind of request WARMUP times (the site names the
worker in X-Worker-Pid).

With --pages, the first worker of each --preload server is compared with
its master page by page after the warm-up (pages.py): what is still
shared, what it copied, and why.

With --embedded, the cargo route's rgun (target/release/rgun with its
embedded bridge, VIRTUAL_ENV naming the same virtualenv) is measured too.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pages

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SITE = os.path.join(ROOT, "tests", "python", "djangosite")
ADMIN_PASSWORD = "rgun-bench-password"


def log(msg):
    print("[memory] %s" % msg, file=sys.stderr, flush=True)


def run(argv, **kw):
    log(" ".join(argv))
    subprocess.run(argv, check=True, **kw)


def make_venv(python, venv, install, wheel):
    if install or not os.path.exists(os.path.join(venv, "bin", "rgun")):
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            run([python, "-m", "venv", venv])
        pip = [os.path.join(venv, "bin", "pip"), "install", "--quiet",
               "--disable-pip-version-check"]
        run(pip + ["gunicorn", "django"])
        # rgun as a user installs it: built from this clone for this Python
        # (or the wheel `maturin build` made from it).
        run(pip + ["--force-reinstall", "--no-deps", wheel or ROOT])


def make_site(venv, workdir):
    env = dict(os.environ,
               RGUN_DJANGO_DB=os.path.join(workdir, "db.sqlite3"),
               RGUN_DJANGO_FILE=os.path.join(workdir, "payload.bin"),
               DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD)
    with open(env["RGUN_DJANGO_FILE"], "wb") as f:
        f.write(os.urandom(256 * 1024))
    python = os.path.join(venv, "bin", "python")
    manage = os.path.join(SITE, "manage.py")
    subprocess.run([python, manage, "migrate", "--verbosity", "0"], env=env, check=True)
    subprocess.run([python, manage, "createsuperuser", "--noinput", "--username", "admin",
                    "--email", "admin@example.com"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return sorted(out)


def pss_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss in /proc/%d/smaps_rollup" % pid)


class Client:
    """One request per connection; cookies kept as a browser keeps them."""

    def __init__(self, port):
        self.port = port
        self.cookies = {}

    def request(self, method, path, body=b"", ctype=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Connection": "close"}
        if self.cookies:
            headers["Cookie"] = "; ".join("%s=%s" % kv for kv in self.cookies.items())
        if ctype:
            headers["Content-Type"] = ctype
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        for name, value in r.getheaders():
            if name.lower() == "set-cookie":
                k, _, v = value.split(";", 1)[0].partition("=")
                self.cookies[k.strip()] = v.strip()
        if r.status >= 400:
            raise RuntimeError("%s %s: %d %s" % (method, path, r.status, data[:200]))
        return r.status, int(r.getheader("X-Worker-Pid", "0")), data


def token(page):
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()


def kinds(client):
    """The warm-up's kinds of request: each a function returning the pid of
    the worker that answered."""
    upload = os.urandom(96 * 1024)

    def login_page():
        return client.request("GET", "/admin/login/?next=/admin/")[1]

    def admin_index():
        return client.request("GET", "/admin/")[1]

    def user_list():
        return client.request("GET", "/admin/auth/user/")[1]

    def user_change():
        return client.request("GET", "/admin/auth/user/1/change/")[1]

    def form_post():
        _, _, page = client.request("GET", "/form/")
        body = "csrfmiddlewaretoken=%s&name=bench" % token(page)
        return client.request("POST", "/form/", body.encode(),
                              "application/x-www-form-urlencoded")[1]

    def upload_post():
        boundary = "rgun-bench-boundary"
        body = ("--%s\r\nContent-Disposition: form-data; name=\"csrfmiddlewaretoken\"\r\n\r\n%s\r\n"
                "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
                % (boundary, client.cookies["csrftoken"], boundary)).encode()
        body += upload + ("\r\n--%s--\r\n" % boundary).encode()
        return client.request("POST", "/upload/", body,
                              "multipart/form-data; boundary=%s" % boundary)[1]

    def file_download():
        return client.request("GET", "/file/")[1]

    return [login_page, admin_index, user_list, user_change, form_post, upload_post,
            file_download]


def log_in(client):
    _, _, page = client.request("GET", "/admin/login/?next=/admin/")
    body = "csrfmiddlewaretoken=%s&username=admin&password=%s&next=/admin/" % (
        token(page), ADMIN_PASSWORD)
    status, _, _ = client.request("POST", "/admin/login/?next=/admin/", body.encode(),
                                  "application/x-www-form-urlencoded")
    if status != 302 or "sessionid" not in client.cookies:
        raise RuntimeError("the admin login failed (%d)" % status)


def warm_up(port, workers, rounds, budget_s):
    client = Client(port)
    client.request("GET", "/form/")  # the csrftoken cookie
    log_in(client)
    deadline = time.monotonic() + budget_s
    total = 0
    for kind in kinds(client):
        seen = {}
        while len(seen) < len(workers) or min(seen.values()) < rounds:
            pid = kind()
            total += 1
            seen[pid] = seen.get(pid, 0) + 1
            if time.monotonic() > deadline:
                raise RuntimeError("warm-up not done in %ds (%s: %s)" % (budget_s, kind.__name__, seen))
        unknown = set(seen) - set(workers)
        if unknown:
            raise RuntimeError("answers from unknown workers %s" % unknown)
    return total


def wait_listening(port, proc, budget_s=60):
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not listen in %ds" % budget_s)


def wait_workers(pid, n, budget_s=60):
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        kids = children(pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.05)
    raise RuntimeError("%d workers did not start in %ds" % (n, budget_s))


def measure(name, argv, env, workers, rounds, compare_pages):
    port = free_port()
    argv = argv + ["--bind", "127.0.0.1:%d" % port, "--workers", str(workers)]
    log("%s: %s" % (name, " ".join(argv)))
    proc = subprocess.Popen(argv, env=env, cwd=SITE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_listening(port, proc)
        kids = wait_workers(proc.pid, workers)
        requests = warm_up(port, kids, rounds, budget_s=600)
        if children(proc.pid) != kids:
            raise RuntimeError("a worker was replaced during the warm-up")
        master = pss_kib(proc.pid)
        per_worker = [pss_kib(k) for k in kids]
        result = {"server": name, "workers": workers, "requests": requests,
                  "master_kib": master, "workers_kib": per_worker,
                  "total_kib": master + sum(per_worker)}
        if compare_pages and "--preload" in argv:
            result["pages"] = pages.compare(proc.pid, kids[0])
            if result["pages"] is None:
                log("--pages: page frames hidden (/proc/PID/pagemap needs CAP_SYS_ADMIN)")
        return result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def mib(kib):
    return "%.1f" % (kib / 1024)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="the Python of the virtualenv (default: Debian's /usr/bin/python3)")
    ap.add_argument("--venv", default=os.path.join(ROOT, "target", "bench-mem-venv"))
    ap.add_argument("--workers", default="4,8", help="worker counts (default 4,8)")
    ap.add_argument("--warmup", type=int, default=10,
                    help="times every worker answers every kind of request (default 10)")
    ap.add_argument("--pages", action="store_true",
                    help="why a preloaded worker's pages are its own (pages.py; needs root)")
    ap.add_argument("--embedded", action="store_true",
                    help="also the cargo route's target/release/rgun (embedded bridge)")
    ap.add_argument("--no-install", action="store_true",
                    help="use the virtualenv as it is (rgun, gunicorn and django installed)")
    ap.add_argument("--wheel", help="install rgun from this wheel (maturin build) "
                    "instead of building it from the clone")
    ap.add_argument("--preload-only", action="store_true",
                    help="only the --preload rows, rgun's and Gunicorn's")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "memory.json"))
    args = ap.parse_args()
    args.venv = os.path.abspath(args.venv)

    make_venv(args.python, args.venv, install=not args.no_install, wheel=args.wheel)
    bin_ = os.path.join(args.venv, "bin")
    servers = [
        ("rgun", [os.path.join(bin_, "rgun"), "djangosite.wsgi"]),
        ("rgun --preload", [os.path.join(bin_, "rgun"), "djangosite.wsgi", "--preload"]),
        ("gunicorn", [os.path.join(bin_, "gunicorn"), "djangosite.wsgi"]),
        ("gunicorn --preload", [os.path.join(bin_, "gunicorn"), "djangosite.wsgi", "--preload"]),
    ]
    release = os.path.join(ROOT, "target", "release", "rgun")
    if args.embedded:
        if not os.path.exists(release):
            run(["cargo", "build", "--release", "--workspace"], cwd=ROOT)
        servers.insert(2, ("rgun (cargo, embedded)", [release, "djangosite.wsgi"]))
    if args.preload_only:
        servers = [s for s in servers if s[0].endswith("--preload")]
    workdir = tempfile.mkdtemp(prefix="rgun-memory-")
    try:
        env = make_site(args.venv, workdir)
        env["VIRTUAL_ENV"] = args.venv
        env.pop("WEB_CONCURRENCY", None)
        results = []
        for workers in [int(w) for w in args.workers.split(",")]:
            for name, argv in servers:
                results.append(measure(name, argv, env, workers, args.warmup, args.pages))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    version = subprocess.run([os.path.join(bin_, "python"), "-c",
                              "import sys, django; print(sys.version.split()[0], django.__version__)"],
                             capture_output=True, text=True).stdout.split()
    print("\nDjango %s on Python %s (%s), warm-up: every worker answers each of 7 kinds "
          "of request %d times\n" % (version[1], version[0], args.python, args.warmup))
    print("| server | -w | master PSS | worker PSS (mean) | total PSS | vs Gunicorn (same preload) |")
    print("| --- | --- | --- | --- | --- | --- |")
    by = {(r["server"], r["workers"]): r for r in results}
    for r in results:
        peer = "gunicorn --preload" if "--preload" in r["server"] else "gunicorn"
        ratio = ""
        if not r["server"].startswith("gunicorn"):
            ratio = "%.2fx" % (r["total_kib"] / by[(peer, r["workers"])]["total_kib"])
        mean = sum(r["workers_kib"]) / len(r["workers_kib"])
        print("| %s | %d | %s MiB | %s MiB | %s MiB | %s |" % (
            r["server"], r["workers"], mib(r["master_kib"]), mib(mean),
            mib(r["total_kib"]), ratio))
    compared = [("%s -w %d" % (r["server"], r["workers"]), r["pages"])
                for r in results if r.get("pages")]
    if compared:
        print("\n" + pages.table(compared))
        for label, r in compared:
            print("\n%s, copies by the type of the object written: %s" % (
                label, ", ".join("%s %d" % kv for kv in r["types"].items())))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"python": args.python, "django": version[1], "warmup": args.warmup,
                   "results": results}, f, indent=1)
    log("wrote %s" % args.out)


if __name__ == "__main__":
    main()
