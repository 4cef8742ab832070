"""What the pip-installed rgun's tests ask a worker (tests/integration/
wsgi_pip.rs): its pid and where the module was imported, the collector's
frozen objects (--preload freezes them before fork), the libpython files
mapped into the process, and SERVER_SOFTWARE."""
import gc
import json
import os
import sys

IMPORTED_IN = os.getpid()
# Differs each time the module is imported: a reload shows.
IMPORT_TOKEN = os.urandom(8).hex()


def _mapped_libpython():
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps
                       if "libpython" in line.rsplit("/", 1)[-1]})


def application(environ, start_response):
    body = json.dumps({
        "pid": os.getpid(),
        "imported_in": IMPORTED_IN,
        "import_token": IMPORT_TOKEN,
        "frozen": gc.get_freeze_count(),
        "libpython": _mapped_libpython(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "version": "%d.%d" % sys.version_info[:2],
        "server_software": environ.get("SERVER_SOFTWARE"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
