"""A WSGI application whose worker grows on purpose, for the
`--max-worker-memory` test in tests/integration/recycling.rs.

`/grow?mib=N` keeps N MiB more of written bytes (every page touched, so
that they count in the worker's PSS) for the rest of the worker's life and
answers `{"pid": ..., "held_mib": ...}`; `/pid` answers the worker's pid.
"""
import json
import os
from urllib.parse import parse_qs

MIB = 1024 * 1024

# What /grow keeps: one bytes object of N MiB per call, never freed.
HELD = []


def _reply(start_response, body, content_type="text/plain"):
    body = body.encode()
    start_response("200 OK", [("Content-Type", content_type),
                              ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    args = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/pid":
        return _reply(start_response, str(os.getpid()))
    if path == "/grow":
        mib = int(args.get("mib", "1"))
        # Repeating a byte writes every one of them: no page stays a
        # shared zero page, so all of it is this worker's own memory.
        HELD.append(b"\x01" * (mib * MIB))
        held = sum(len(b) for b in HELD) // MIB
        return _reply(start_response,
                      json.dumps({"pid": os.getpid(), "held_mib": held}),
                      "application/json")
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", "9")])
    return [b"not found"]
