"""prometheus_client's multiprocess mode as its documentation sets it up
under Gunicorn (PROMETHEUS_MULTIPROC_DIR, a MultiProcessCollector in a
fresh registry per scrape), for tests/integration/hooks.rs.

Each worker counts its own boot (`boots_total`) and says it is up in a
live gauge (`worker_up`, multiprocess_mode="liveall": one sample per live
pid). `/metrics` is the scrape; `/pid` the worker's pid.
"""
import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               generate_latest, multiprocess)

BOOTS = Counter("boots", "Workers booted")
UP = Gauge("worker_up", "Workers up", multiprocess_mode="liveall")
BOOTS.inc()
UP.set(1)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
        content_type = CONTENT_TYPE_LATEST
    else:
        data = str(os.getpid()).encode()
        content_type = "text/plain"
    start_response("200 OK", [("Content-Type", content_type),
                              ("Content-Length", str(len(data)))])
    return iter([data])
