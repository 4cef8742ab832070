"""Gunicorn's server hooks, from an operator's gunicorn.conf.py, for rgun.

One file, two homes. The WSGI bridge runs it in each worker's interpreter
for the worker hooks (post_fork, post_worker_init, pre_request,
post_request, worker_int, worker_abort, worker_exit). The master, which
runs no Python, starts it as `python -c` for its own hooks (on_starting,
when_ready, on_reload, pre_fork, child_exit, nworkers_changed, on_exit,
pre_exec) in a process of its own, and drives it over a socket: one JSON
line per event, log lines and one answer back (`serve_master`).

The configuration file is executed as Gunicorn executes it (a module named
`__config__`), once in each process that loads it. Hooks get stand-ins for
Gunicorn's objects with what real hooks use: `server.pid`, `server.log`,
`server.cfg`, `server.num_workers`, `worker.pid`, `worker.age`,
`worker.log`, `req.method`, `req.path`, `req.headers`, `resp.status`...
"""

import importlib.machinery
import importlib.util
import inspect
import json
import os
import signal
import socket
import sys
import traceback
from urllib.parse import urlsplit

WORKER_HOOKS = ("post_fork", "post_worker_init", "pre_request", "post_request",
                "worker_int", "worker_abort", "worker_exit")
MASTER_HOOKS = ("on_starting", "when_ready", "on_reload", "pre_fork", "child_exit",
                "nworkers_changed", "on_exit", "pre_exec")

# Gunicorn's signatures (its config.py validates the same arities);
# post_request takes 2, 3 or 4.
ARITY = {
    "on_starting": 1, "when_ready": 1, "on_reload": 1, "pre_fork": 2,
    "post_fork": 2, "post_worker_init": 1, "worker_int": 1, "worker_abort": 1,
    "pre_exec": 1, "pre_request": 2, "child_exit": 2, "worker_exit": 2,
    "nworkers_changed": 3, "on_exit": 1,
}
SIGNATURES = {
    "on_starting": "(server)", "when_ready": "(server)", "on_reload": "(server)",
    "pre_fork": "(server, worker)", "post_fork": "(server, worker)",
    "post_worker_init": "(worker)", "worker_int": "(worker)",
    "worker_abort": "(worker)", "pre_exec": "(server)",
    "pre_request": "(worker, req)", "post_request": "(worker, req, environ, resp)",
    "child_exit": "(server, worker)", "worker_exit": "(server, worker)",
    "nworkers_changed": "(server, new_value, old_value)", "on_exit": "(server)",
}


class HookError(Exception):
    """A hook that cannot be used: one line says why."""


def load_file(path):
    """Execute the configuration file as Gunicorn does; its namespace."""
    name = "__config__"
    if path.endswith((".py", ".pyc")):
        spec = importlib.util.spec_from_file_location(name, path)
    else:
        loader = importlib.machinery.SourceFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return vars(module)


def _arity(fn):
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in inspect.signature(fn).parameters.values() if p.kind in positional)


def hooks_in(namespace, names, path):
    """The hooks among `names` that the file defines, checked as Gunicorn
    checks them (callable, with its arity)."""
    found = {}
    for name in names:
        fn = namespace.get(name)
        if fn is None:
            continue
        if not callable(fn):
            raise HookError("%s in %s is not callable" % (name, path))
        arity = _arity(fn)
        if name == "post_request" and arity in (2, 3, 4):
            found[name] = _adapt_post_request(fn, arity)
            continue
        if arity != ARITY[name]:
            raise HookError("%s in %s takes %d positional arguments; Gunicorn calls it as %s%s"
                            % (name, path, arity, name, SIGNATURES[name]))
        found[name] = fn
    return found


def _adapt_post_request(fn, arity):
    if arity == 4:
        return fn
    if arity == 3:
        return lambda worker, req, environ, _resp: fn(worker, req, environ)
    return lambda worker, req, _environ, _resp: fn(worker, req)


class Config:
    """`server.cfg`/`worker.cfg`: the effective settings under Gunicorn's
    names, then anything else the configuration file set."""

    def __init__(self, settings, namespace):
        self._settings = settings
        self._namespace = namespace

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._settings:
            return self._settings[name]
        value = self._namespace.get(name)
        if value is not None and not callable(value):
            return value
        raise AttributeError("rgun has no setting %r" % name)

    def __repr__(self):
        return "<rgun Config %r>" % (self._settings,)


# Level names as rgun's error log takes them.
LEVELS = {50: "critical", 40: "error", 30: "warning", 20: "info", 10: "debug"}


class Log:
    """`server.log`/`worker.log`: Gunicorn's logger methods, writing to
    rgun's error log through `emit(level, text)`."""

    def __init__(self, emit):
        self._emit = emit

    def _log(self, level, msg, args, exc_info=None):
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            # As Python's logging: a bad format is reported, never raised
            # into the hook (which would count as the hook failing).
            text = "%s %r (the arguments did not fit the message)" % (msg, args)
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
        self._emit(level, text)

    def critical(self, msg, *args, **kwargs):
        self._log("critical", msg, args, kwargs.get("exc_info"))

    def error(self, msg, *args, **kwargs):
        self._log("error", msg, args, kwargs.get("exc_info"))

    def warning(self, msg, *args, **kwargs):
        self._log("warning", msg, args, kwargs.get("exc_info"))

    warn = warning

    def info(self, msg, *args, **kwargs):
        self._log("info", msg, args, kwargs.get("exc_info"))

    def debug(self, msg, *args, **kwargs):
        self._log("debug", msg, args, kwargs.get("exc_info"))

    def exception(self, msg, *args, **kwargs):
        self._log("error", msg, args, kwargs.get("exc_info", True))

    def log(self, lvl, msg, *args, **kwargs):
        if isinstance(lvl, int):
            lvl = LEVELS.get(lvl - lvl % 10, "critical" if lvl > 50 else "debug")
        self._log(str(lvl).lower(), msg, args, kwargs.get("exc_info"))

    def reopen_files(self):
        """rgun reopens its logs on USR1 itself."""

    def close_on_exec(self):
        """rgun's log files are close-on-exec already."""


class Server:
    """Gunicorn's Arbiter, as far as hooks look at it."""

    def __init__(self, pid, log, cfg, num_workers):
        self.pid = pid
        self.log = log
        self.cfg = cfg
        self.num_workers = num_workers
        self.proc_name = getattr(cfg, "proc_name", None) or "rgun"
        self.master_name = "Master"
        self.WORKERS = {}

    def __str__(self):
        return "<rgun master %s>" % self.pid


class Worker:
    """Gunicorn's Worker, as far as hooks look at it. In the master (for
    pre_fork), `pid` is "[booting]" as in Gunicorn."""

    def __init__(self, pid, age, ppid, log, cfg):
        self.pid = pid
        self.age = age
        self.ppid = ppid
        self.log = log
        self.cfg = cfg
        self.timeout = getattr(cfg, "timeout", 30)
        self.booted = False
        self.aborted = False
        self.alive = True
        self.nr = 0

    def __str__(self):
        return "<Worker %s>" % self.pid


class Request:
    """Gunicorn's parsed request, as pre_request and post_request see it:
    the path and query as sent (not percent-decoded), header names upper
    case, in the order received."""

    def __init__(self, method, uri, protocol, headers, scheme, remote_addr):
        self.method = method
        self.uri = uri
        parts = urlsplit(uri)
        self.path = parts.path or ""
        self.query = parts.query or ""
        self.fragment = parts.fragment or ""
        major, _, minor = protocol.partition("/")[2].partition(".")
        self.version = (int(major or 1), int(minor or 0))
        self.headers = [(name.upper(), value) for name, value in headers]
        self.scheme = scheme
        self.remote_addr = remote_addr
        self.peer_addr = remote_addr
        self.body = None
        self.trailers = []

    def __repr__(self):
        return "<rgun Request %s %s>" % (self.method, self.uri)


class Response:
    """What post_request sees of the answer: `status` ("200 OK") and
    `status_code` (None when the application answered nothing), `headers`
    as the application gave them."""

    def __init__(self, status_code, reason, headers):
        self.status_code = status_code
        self.status = "%d %s" % (status_code, reason) if status_code else None
        self.headers = headers

    def __repr__(self):
        return "<rgun Response %s>" % self.status


# ---------------------------------------------------------------- workers

class WorkerHooks:
    """The hooks of one worker process, with its `server` and `worker`."""

    def __init__(self, path, settings, emit, pid, ppid, age, num_workers):
        namespace = load_file(path)
        self.hooks = hooks_in(namespace, WORKER_HOOKS, path)
        cfg = Config(settings, namespace)
        log = Log(emit)
        self.server = Server(ppid, log, cfg, num_workers)
        self.worker = Worker(pid, age, ppid, log, cfg)

    def defined(self):
        return sorted(self.hooks)

    def post_fork(self):
        self._call("post_fork", self.server, self.worker)

    def post_worker_init(self):
        self._call("post_worker_init", self.worker)
        self.worker.booted = True

    def worker_int(self):
        self.worker.alive = False
        self._call("worker_int", self.worker)

    def worker_abort(self):
        self.worker.alive = False
        self.worker.aborted = True
        self._call("worker_abort", self.worker)

    def worker_exit(self):
        self._call("worker_exit", self.server, self.worker)

    def request(self, method, uri, protocol, headers, scheme, remote_addr):
        self.worker.nr += 1
        return Request(method, uri, protocol, headers, scheme, remote_addr)

    def pre_request(self, req):
        self._call("pre_request", self.worker, req)

    def post_request(self, req, environ, status_code, reason, headers):
        resp = Response(status_code, reason, headers)
        self._call("post_request", self.worker, req, environ, resp)

    def _call(self, name, *args):
        fn = self.hooks.get(name)
        if fn is not None:
            fn(*args)


# ----------------------------------------------------------------- master

def serve_master(path, fd):
    """The master's hook process: read one event per line from socket `fd`,
    run its hook, answer. The first line carries the settings. Ends when
    the master closes the socket (it exits, or gives up on this process).
    Signals are the master's business: a terminal's Ctrl-C or systemd's
    TERM to the whole group must not end this process before on_exit."""
    # A handler that does nothing, not SIG_IGN: a handler is reset by
    # exec, so a process a hook starts can still be stopped with TERM.
    for name in ("SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU",
                 "SIGUSR1", "SIGUSR2", "SIGWINCH"):
        signal.signal(getattr(signal, name), lambda signum, frame: None)
    sock = socket.socket(fileno=fd)
    lines = sock.makefile("rb")

    def send(obj):
        sock.sendall(json.dumps(obj).encode() + b"\n")

    def emit(level, text):
        send({"log": level, "msg": text})

    first = lines.readline()
    if not first:
        return 0
    start = json.loads(first)
    log = Log(emit)
    try:
        namespace = load_file(path)
        hooks = hooks_in(namespace, MASTER_HOOKS, path)
        # The workers' are checked here too: a wrong signature stops the
        # master at start, as Gunicorn refuses it when reading the file.
        hooks_in(namespace, WORKER_HOOKS, path)
    except HookError as e:
        send({"failed": str(e)})
        return 1
    except BaseException as e:
        log.exception("Failed to read config file: %s", path)
        send({"failed": "cannot load %s: %s: %s (traceback above)"
                        % (path, type(e).__name__, e)})
        return 1
    cfg = Config(start["settings"], namespace)
    server = Server(start["pid"], log, cfg, start["num_workers"])
    send({"ready": sorted(hooks),
          "worker_hooks": [n for n in WORKER_HOOKS if callable(namespace.get(n))]})
    for line in lines:
        event = json.loads(line)
        name = event["hook"]
        server.num_workers = event["num_workers"]
        fn = hooks.get(name)
        try:
            if fn is not None:
                fn(*_master_args(name, event, server, log, cfg))
        except BaseException:
            log.exception("Exception in %s hook", name)
            send({"done": "raised"})
        else:
            send({"done": "ok"})
    return 0


def _master_args(name, event, server, log, cfg):
    if name in ("pre_fork", "child_exit"):
        w = event["worker"]
        pid = w["pid"] if w["pid"] is not None else "[booting]"
        return (server, Worker(pid, w["age"], server.pid, log, cfg))
    if name == "nworkers_changed":
        return (server, event["new"], event["old"])
    return (server,)


if __name__ == "__main__":
    sys.exit(serve_master(sys.argv[1], int(sys.argv[2])))
