"""rgun, a pre-forking HTTP/1.1 server written in Rust, for WSGI apps.

`rgun module:app` (or `python -m rgun module:app`) serves the application
with this interpreter: the master and its workers are this Python's
processes, with Gunicorn's command line (`rgun --help`). The server itself
is the extension module `rgun._rgun`, imported only when it runs.
"""
