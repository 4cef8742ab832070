"""A raw PEP 3333 application that reports what the server gave it and uses
every part of the interface the test application does not: wsgi.input's
readline/readlines/iteration/readinto, the write() callable, exc_info,
close(), wsgi.file_wrapper, wsgi.errors, odd status and header values.
tests/integration/wsgi_bridge.rs drives it.
"""
import io
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs

# Counts calls of close() on the iterables below, across requests.
CLOSED = {"count": 0}
# Set when the module is imported: with --preload, in the master.
IMPORTED_IN = os.getpid()
# Two requests meet here only if the worker runs them at the same time.
BARRIER = threading.Barrier(2)


def _args(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


class Closing:
    """An iterable whose close() is counted; it may fail half-way."""

    def __init__(self, pieces, fail_after=None):
        self.pieces = pieces
        self.fail_after = fail_after

    def __iter__(self):
        for i, piece in enumerate(self.pieces):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("probe: failing half-way through the body")
            yield piece

    def close(self):
        CLOSED["count"] += 1


def _square(x):
    return x * x


def application(environ, start_response):
    path = environ["PATH_INFO"]
    args = _args(environ)
    stream = environ["wsgi.input"]

    if path.startswith("/environ"):
        shown = {}
        for key, value in environ.items():
            shown[key] = value if isinstance(value, str) else repr(type(value))
        shown["wsgi.version"] = list(environ["wsgi.version"])
        shown["wsgi.multithread"] = environ["wsgi.multithread"]
        shown["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        shown["wsgi.run_once"] = environ["wsgi.run_once"]
        shown["path_bytes"] = list(environ["PATH_INFO"].encode("latin-1"))
        return _json(start_response, shown)

    if path == "/read":
        size = int(args.get("size", "-1"))
        pieces = []
        while True:
            piece = stream.read(size) if size >= 0 else stream.read()
            pieces.append(piece.decode("latin-1"))
            if not piece or size < 0:
                break
        return _json(start_response, pieces)

    if path == "/read-none":
        return _json(start_response, stream.read(None).decode())

    if path == "/readline":
        size = int(args.get("size", "-1"))
        lines = []
        while True:
            line = stream.readline(size)
            if not line:
                break
            lines.append(line.decode("latin-1"))
        return _json(start_response, lines)

    if path == "/readlines":
        hint = int(args.get("hint", "-1"))
        return _json(start_response, [l.decode() for l in stream.readlines(hint)])

    if path == "/iterate":
        return _json(start_response, [l.decode() for l in stream])

    if path == "/mixed":
        first = stream.readline()
        five = stream.read(5)
        buf = bytearray(3)
        n = stream.readinto(buf)
        rest = stream.read()
        return _json(start_response, [first.decode(), five.decode(),
                                      buf[:n].decode(), rest.decode()])

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"")
        write(b"then ")
        return [b"returned"]

    if path == "/write-with-length":
        write = start_response("200 OK", [("Content-Type", "text/plain"),
                                          ("Content-Length", "11")])
        write(b"hello")
        return [b" world"]

    if path == "/exc-info-before":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("probe: changed my mind")
        except ValueError:
            start_response("503 Service Unavailable",
                           [("Content-Type", "text/plain"), ("X-Replaced", "yes")],
                           sys.exc_info())
        return [b"replaced"]

    if path == "/exc-info-after":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial")
        try:
            raise ValueError("probe: too late to change my mind")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"never"]

    if path == "/start-twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"never"]

    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"a", b"b", b"c"])

    if path == "/close-raise":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"a", b"b", b"c"], fail_after=int(args.get("after", "1")))

    if path == "/closed":
        return _json(start_response, CLOSED["count"])

    if path == "/file":
        f = open(args["path"], "rb")
        if "skip" in args:
            f.read(int(args["skip"]))
        headers = [("Content-Type", "application/octet-stream")]
        if "length" in args:
            headers.append(("Content-Length", args["length"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 4096)

    if path == "/file-bytesio":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"z" * 10000), 1000)

    if path == "/errors":
        errors = environ["wsgi.errors"]
        errors.write("probe: first line\nprobe: second ")
        errors.writelines(["line\n", "probe: unfinished"])
        errors.flush()
        return _json(start_response, "logged")

    if path == "/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]

    if path == "/no-start-response":
        return [b"nobody called start_response"]

    if path == "/latin1-header":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Latin", "caf\u00e9")])
        return [b"ok"]

    if path == "/non-latin1-header":
        start_response("200 OK", [("X-Euro", "\u20ac")])
        return [b"never"]

    if path == "/bad-status":
        start_response(args.get("status", "OK"), [])
        return [b"never"]

    if path == "/empty":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    if path == "/generator":
        def pieces():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"late "
            yield b"start"
        return pieces()

    if path == "/head-length":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", "5")])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else b"hello"]

    if path == "/sleep":
        time.sleep(int(args.get("ms", "0")) / 1000.0)
        return _json(start_response, {"thread": threading.get_ident(), "pid": os.getpid()})

    if path == "/barrier":
        try:
            BARRIER.wait(timeout=10)
        except threading.BrokenBarrierError:
            return _json(start_response, "alone", "500 Internal Server Error")
        return _json(start_response, threading.get_ident())

    if path == "/interpreter":
        import _json as json_speedups  # a C extension module
        import markupsafe
        return _json(start_response, {
            "executable": sys.executable,
            "prefix": sys.prefix,
            "path": sys.path,
            "json_c": json_speedups.__name__,
            "markupsafe": getattr(markupsafe, "_escape_inner", markupsafe.escape).__module__,
            "imported_in": IMPORTED_IN,
            "pid": os.getpid(),
            "argv": sys.argv,
        })

    if path == "/fork-term":
        # A forked child stopped by SIGTERM, as Pool.terminate() does.
        import signal
        ready_r, ready_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.write(ready_w, b"!")  # the at-fork hooks have run
            time.sleep(30)
            os._exit(0)
        os.read(ready_r, 1)
        os.close(ready_r)
        os.close(ready_w)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        return _json(start_response, {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                                      "sigterm": int(signal.SIGTERM)})

    if path == "/multiprocessing":
        import multiprocessing
        import multiprocessing.spawn
        context = multiprocessing.get_context(args.get("method", "spawn"))
        with context.Pool(1) as pool:
            squared = pool.apply(_square, (7,))
            child = pool.apply(os.getpid)
        return _json(start_response, {"squared": squared, "child": child,
                                      "executable": os.fsdecode(multiprocessing.spawn.get_executable())})

    return _json(start_response, "no such probe", "404 Not Found")
