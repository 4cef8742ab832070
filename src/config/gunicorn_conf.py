# rgun: evaluate a Gunicorn configuration file as Gunicorn does (executed as
# the module `__config__`; its module-level names are the settings) and
# print what it set as JSON on standard output: settings that are plain
# values, the names of the server hooks it defines, and the line each name
# was last assigned on. Run by the rgun master as `python -c`, so that the
# master itself never runs Python.
import ast
import importlib.machinery
import importlib.util
import json
import signal
import sys
import types

path, hook_names = sys.argv[1], set(sys.argv[2].split(","))
# A file that never finishes (a network call at module level) must not hold
# the master: SIGALRM's default action ends this process.
signal.alarm(int(sys.argv[3]))

lines = {}
with open(path, "rb") as source:
    for node in ast.parse(source.read(), path).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines[node.name] = node.lineno
        for target in targets:
            if isinstance(target, ast.Name):
                lines[target.id] = node.lineno

loader = importlib.machinery.SourceFileLoader("__config__", path)
spec = importlib.util.spec_from_file_location("__config__", path, loader=loader)
module = importlib.util.module_from_spec(spec)
sys.modules["__config__"] = module
# What the file prints goes to standard error: standard output is rgun's.
stdout, sys.stdout = sys.stdout, sys.stderr
spec.loader.exec_module(module)
sys.stdout = stdout


def plain(value):
    """The value as JSON can carry it, or None if it cannot."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return None if any(i is None for i in items) else items
    if isinstance(value, dict):
        items = {str(k): plain(v) for k, v in value.items()}
        return None if any(i is None for i in items.values()) else items
    return None


settings, hooks, opaque = {}, [], []
for name, value in vars(module).items():
    if name.startswith("_") or isinstance(value, types.ModuleType):
        continue
    if callable(value) and not isinstance(value, type):
        if name in hook_names:
            hooks.append(name)
        continue
    converted = plain(value)
    if converted is None and value is not None:
        opaque.append(name)
    else:
        settings[name] = converted

json.dump({"settings": settings, "hooks": hooks, "opaque": opaque, "lines": lines}, sys.stdout)
