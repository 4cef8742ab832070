"""A gunicorn.conf.py whose every server hook records its call, for
tests/integration/hooks.rs: one JSON line per call (the hook's name, the
pid of the process it ran in, its arguments as the test checks them) is
appended to the file named by HOOK_LOG.

HOOK_RAISE=NAME makes that hook raise (a request hook only for the path
/raise); HOOK_HANG=NAME makes it never return.
"""
import json
import os
import time

_LOG = os.environ["HOOK_LOG"]
_RAISE = os.environ.get("HOOK_RAISE", "")
_HANG = os.environ.get("HOOK_HANG", "")


def _record(name, **fields):
    with open(_LOG, "a") as f:
        f.write(json.dumps(dict(hook=name, pid=os.getpid(), **fields)) + "\n")
    if name == _HANG:
        time.sleep(3600)
    if name == _RAISE and fields.get("path", "/raise") == "/raise":
        raise RuntimeError("%s raised on purpose" % name)


def on_starting(server):
    server.log.info("on_starting says hello to the master's log")
    _record("on_starting", server_pid=server.pid, workers=server.cfg.workers,
            timeout=server.cfg.timeout, num_workers=server.num_workers)


def when_ready(server):
    _record("when_ready", server_pid=server.pid)


def on_reload(server):
    _record("on_reload", server_pid=server.pid)


def pre_fork(server, worker):
    _record("pre_fork", age=worker.age, worker_pid=str(worker.pid))


def post_fork(server, worker):
    _record("post_fork", age=worker.age, worker_pid=worker.pid, server_pid=server.pid)


def post_worker_init(worker):
    worker.log.info("post_worker_init says hello from worker %s", worker.pid)
    _record("post_worker_init", worker_pid=worker.pid, age=worker.age)


def pre_request(worker, req):
    _record("pre_request", worker_pid=worker.pid, method=req.method, path=req.path,
            query=req.query, uri=req.uri, version=list(req.version), headers=req.headers)


def post_request(worker, req, environ, resp):
    _record("post_request", worker_pid=worker.pid, path=req.path,
            path_info=environ.get("PATH_INFO"), status=resp.status,
            status_code=resp.status_code, headers=resp.headers)


def child_exit(server, worker):
    _record("child_exit", worker_pid=worker.pid, age=worker.age)


def worker_int(worker):
    _record("worker_int", worker_pid=worker.pid)


def worker_abort(worker):
    _record("worker_abort", worker_pid=worker.pid)


def worker_exit(server, worker):
    _record("worker_exit", worker_pid=worker.pid, server_pid=server.pid)


def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new=new_value, old=old_value)


def on_exit(server):
    _record("on_exit", server_pid=server.pid)
