"""Boot-time helpers of rgun's WSGI bridge.

Run once per interpreter (in each worker, or in the master with --preload),
never per request: sys.path and sys.executable as an operator coming from
Gunicorn expects them, then the application loaded from its
`module[:callable]` spec, with Gunicorn's syntax and defaults.
"""

import ast
import importlib
import os
import sys


class AppLoadError(Exception):
    """A failure to load the application that one line explains."""


def prepare(python):
    """Set up sys.path and sys.executable; `python` is the interpreter to
    start for child processes ('' when the embedder knows none)."""
    # Gunicorn puts the working directory (--chdir) first on sys.path, so
    # that the project's own modules import.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    # A relative --pythonpath entry means a folder of the working directory.
    sys.path[:] = [os.path.abspath(p) if p and not os.path.isabs(p) else p for p in sys.path]
    _honour_virtualenv()
    # sys.executable of an embedded interpreter is the embedding program;
    # multiprocessing (spawn, forkserver) and subprocess users need Python.
    if not python or not os.path.isfile(python):
        python = _base_interpreter()
    if python:
        # multiprocessing reads sys.executable when it is first imported.
        sys.executable = python
        if "multiprocessing" in sys.modules:
            sys.modules["multiprocessing"].set_executable(python)


def prepare_hosted(pythonpath):
    """As `prepare`, in a Python process that runs rgun (the pip-installed
    `rgun`): sys.executable and sys.argv are the process's own and right.
    `pythonpath` is the process's PYTHONPATH now: --pythonpath set it after
    this interpreter started (os.environ is the environment of then)."""
    if pythonpath:
        os.environ["PYTHONPATH"] = pythonpath
    cwd = os.getcwd()
    added = [p for p in pythonpath.split(os.pathsep) if p]
    for entry in reversed([cwd] + added):
        entry = os.path.abspath(entry)
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _honour_virtualenv()


def _base_interpreter():
    version = "python%d.%d" % sys.version_info[:2]
    for name in (version, "python3"):
        path = os.path.join(sys.base_exec_prefix, "bin", name)
        if os.path.isfile(path):
            return path
    return ""


def _honour_virtualenv():
    """When the interpreter did not start as the virtualenv's own python
    (PYTHONHOME set, say), add its site-packages before the base ones."""
    venv = os.environ.get("VIRTUAL_ENV")
    if not venv or os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    site_packages = os.path.join(
        venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    if not os.path.isdir(site_packages):
        return
    import site
    before = list(sys.path)
    site.addsitedir(site_packages)
    added = [p for p in sys.path if p not in before]
    first_base = next((i for i, p in enumerate(before) if "site-packages" in p), len(before))
    sys.path[:] = before[:first_base] + added + before[first_base:]


def enter_worker():
    """Once in each worker: a process the application forks without exec
    (os.fork, multiprocessing's "fork" start method) must not keep the
    worker's signal handlers. Under them, the SIGTERM with which
    Pool.terminate() stops its children would be queued for the worker's
    event loop instead of ending the child, and the pool would wait for it
    forever."""
    os.register_at_fork(after_in_child=_default_signals)


def _default_signals():
    import signal
    for name in ("SIGTERM", "SIGQUIT", "SIGABRT", "SIGUSR1", "SIGUSR2",
                 "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGWINCH"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    # What a Python program has by default.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def load(spec):
    """Import `module[:expression]` and return the WSGI callable it names.

    The expression is an attribute name or a call of an application factory
    with literal arguments (`create_app('prod')`), as in Gunicorn; without
    one, `application` is taken, then `app`.
    """
    module_name, _, expression = spec.partition(":")
    if not module_name:
        raise AppLoadError("no module named in the application spec %r" % spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise AppLoadError(
                "cannot import module %r: no module named %r (sys.path: %s)"
                % (module_name, missing, ", ".join(p or "''" for p in sys.path))
            ) from None
        raise
    if not expression:
        expression = next((n for n in ("application", "app") if hasattr(module, n)), None)
        if expression is None:
            raise AppLoadError(
                "module %r has no 'application' or 'app': name the callable, as in %s:app"
                % (module_name, module_name))
    return _evaluate(module, module_name, expression)


def _evaluate(module, module_name, expression):
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise AppLoadError(
            "cannot parse %r as an attribute name or function call" % expression) from None
    call = isinstance(node, ast.Call)
    args, kwargs = [], {}
    if call:
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise AppLoadError(
                "the arguments of %r must be literal values" % expression) from None
        node = node.func
    if not isinstance(node, ast.Name):
        raise AppLoadError(
            "%r is not an attribute name or function call" % expression)
    try:
        app = getattr(module, node.id)
    except AttributeError:
        raise AppLoadError(
            "module %r has no attribute %r" % (module_name, node.id)) from None
    if call:
        app = app(*args, **kwargs)
        if app is None:
            raise AppLoadError(
                "the factory %s in module %r returned None" % (expression, module_name))
    if not callable(app):
        raise AppLoadError(
            "%s in module %r is not callable: a WSGI application is"
            % (expression, module_name))
    return app
