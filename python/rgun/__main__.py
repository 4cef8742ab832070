"""The `rgun` command: hand the command line to the server in `rgun._rgun`.

When that module cannot be imported into this interpreter (a package built
for another Python version, copied or put on PYTHONPATH), say so in one
line, with the fix, instead of a traceback.
"""

import glob
import os
import sys
import sysconfig


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        from rgun import _rgun
    except ImportError as error:
        sys.stderr.write("rgun: %s\n" % _cannot_import(error))
        return 1
    # The server writes to the same descriptors from Rust.
    sys.stdout.flush()
    sys.stderr.flush()
    return _rgun.serve(["rgun"] + args)


def _cannot_import(error):
    here = os.path.dirname(os.path.abspath(__file__))
    built = sorted(glob.glob(os.path.join(here, "_rgun.*so")))
    python = "Python %d.%d (%s)" % (sys.version_info[0], sys.version_info[1], sys.executable)
    fix = ("install rgun with this interpreter: `%s -m pip install --force-reinstall rgun` "
           "(or `pip install .` in a clone)" % (sys.executable or "python"))
    if not built:
        return "the server module rgun._rgun is missing from %s (%s); %s" % (here, error, fix)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    if any(path.endswith(suffix) for path in built):
        # Built for this Python, and still not importable: say why.
        return "cannot import the server module rgun._rgun into %s: %s" % (python, error)
    tags = ", ".join(os.path.basename(path).split(".")[1] for path in built)
    return "this rgun was built for %s (%s), not for %s; %s" % (
        _describe_tags(tags), os.path.basename(built[0]), python, fix)


def _describe_tags(tags):
    # cpython-311-x86_64-linux-gnu -> CPython 3.11
    parts = tags.split("-")
    if len(parts) > 1 and parts[0] == "cpython" and parts[1].isdigit():
        digits = parts[1]
        return "CPython %s.%s" % (digits[0], digits[1:])
    return tags


if __name__ == "__main__":
    sys.exit(main())
