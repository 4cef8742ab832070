"""scripts/bench --memory --pages: why a preloaded worker's memory is its own.

Compares a worker's writable private pages with its master's, page by page,
through /proc/PID/pagemap (needs CAP_SYS_ADMIN, which root has: without it
the kernel hides the page frames): a page is still the master's (the same
frame), a copy the worker made by writing to it (copy-on-write), or new
(memory the worker mapped or first touched after the fork). For each copy
the 8-byte words that differ from the master's page (/proc/PID/mem) are
attributed to the CPython object they belong to: the nearest object header
(a reference count, then a pointer to a type whose tp_name is readable) at
or before the word on the same page.
"""

import collections
import re
import struct

PAGE = 4096
WORDS = PAGE // 8
# How far back from a changed word an object header is looked for.
HEADER_REACH_WORDS = 64
# A reference count above this is not taken for one.
MAX_REFCOUNT = 1 << 32

# What a type's tp_name looks like (module.Name, or a C type's name).
TYPE_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]*")

# The causes a copied page is put down to, in the order they are printed.
RESTORED = "written and restored (reference counts up and back down)"
REFCOUNTS = "reference counts only"
CODE = "inside code objects (the specialising interpreter)"
OTHER = "inside other objects (function versions, dicts, strings...)"
NO_HEADER = "no object header in reach (large blocks, allocator lists)"
CAUSES = [RESTORED, REFCOUNTS, CODE, OTHER, NO_HEADER]


def _maps(pid):
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            p = line.split()
            lo, hi = (int(x, 16) for x in p[0].split("-"))
            out.append((lo, hi, p[1], p[5] if len(p) > 5 else ""))
    return out


def _frames(pid, lo, hi):
    """The page frame of each page in [lo, hi), None where not present."""
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(lo // PAGE * 8)
        data = f.read((hi - lo) // PAGE * 8)
    return [(e & ((1 << 55) - 1)) if e >> 63 else None
            for (e,) in struct.iter_unpack("<Q", data)]


class _Memory:
    def __init__(self, pid):
        self.file = open("/proc/%d/mem" % pid, "rb")
        self.type_names = {}

    def read(self, addr, n):
        try:
            self.file.seek(addr)
            return self.file.read(n)
        except (OSError, OverflowError, ValueError):
            return None

    def words(self, addr):
        data = self.read(addr, PAGE)
        return struct.unpack("<%dQ" % WORDS, data) if data and len(data) == PAGE else None

    def _string(self, addr):
        data = self.read(addr, 64) if 0x10000 < addr < 1 << 47 else None
        name = data.split(b"\0")[0] if data else b""
        return name.decode() if TYPE_NAME.fullmatch(name) else None

    def type_name(self, addr):
        """tp_name of the type object at addr, or None if it is not one:
        ob_type at +8 names a type (itself with a readable tp_name), tp_name
        at +24."""
        if addr not in self.type_names:
            name = None
            head = self.read(addr, 32) if 0x10000 < addr < 1 << 47 and addr % 8 == 0 else None
            if head and len(head) == 32:
                _, meta, _, tp_name = struct.unpack("<4Q", head)
                meta_head = self.read(meta, 32) if 0x10000 < meta < 1 << 47 else None
                if meta_head and len(meta_head) == 32 and self._string(
                        struct.unpack("<4Q", meta_head)[3]):
                    name = self._string(tp_name)
            self.type_names[addr] = name
        return self.type_names[addr]


def _owner(memory, words, j):
    """(type name, whether word j is its reference count) of the object
    word j of a page belongs to, or None."""
    for k in range(j, max(-1, j - HEADER_REACH_WORDS), -1):
        if 0 < words[k] < MAX_REFCOUNT and k + 1 < WORDS:
            name = memory.type_name(words[k + 1])
            if name:
                return name, k == j
    return None


def _cause(memory, before, after):
    changed = [j for j in range(WORDS) if before[j] != after[j]]
    if not changed:
        return RESTORED, ()
    owners = [_owner(memory, before, j) for j in changed]
    known = [o for o in owners if o]
    if not known:
        return NO_HEADER, ()
    if all(is_refcount for _, is_refcount in known):
        return REFCOUNTS, [name for name, _ in known]
    bodies = collections.Counter(name for name, is_refcount in known if not is_refcount)
    top = bodies.most_common(1)[0][0]
    return (CODE if top == "code" else OTHER), [top]


def compare(master, worker):
    """Counts of the worker's private writable pages ("shared", "new",
    "copied") and of the copies by cause, and the types most often behind
    them; None when the page frames cannot be read."""
    master_maps = [(lo, hi) for lo, hi, _, _ in _maps(master)]
    mem_m, mem_w = _Memory(master), _Memory(worker)
    pages = collections.Counter()
    types = collections.Counter()
    for lo, hi, perms, name in _maps(worker):
        if "w" not in perms or "p" not in perms:
            continue
        theirs = [None] * ((hi - lo) // PAGE)
        for mlo, mhi in master_maps:
            a, b = max(lo, mlo), min(hi, mhi)
            if a < b:
                for i, frame in enumerate(_frames(master, a, b)):
                    theirs[(a - lo) // PAGE + i] = frame
        for i, frame in enumerate(_frames(worker, lo, hi)):
            if frame is None:
                continue
            if frame == 0:
                return None  # frames hidden: no CAP_SYS_ADMIN
            if theirs[i] == frame:
                pages["shared"] += 1
                continue
            before = mem_m.words(lo + i * PAGE) if theirs[i] is not None else None
            after = mem_w.words(lo + i * PAGE)
            if before is None or after is None:
                pages["new"] += 1
                continue
            pages["copied"] += 1
            cause, names = _cause(mem_m, before, after)
            pages[cause] += 1
            types.update(set(names))
    return {"pages": dict(pages), "types": dict(types.most_common(12))}


def table(rows):
    """Markdown: one column per (server, result of compare) in rows."""
    kib = PAGE // 1024
    lines = ["| a worker's writable pages after the warm-up | %s |" % " | ".join(n for n, _ in rows),
             "| --- | %s |" % " | ".join("---" for _ in rows)]

    def row(label, key):
        cells = ["%.1f MiB" % (r["pages"].get(key, 0) * kib / 1024) for _, r in rows]
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    row("still the master's (shared)", "shared")
    row("new since the fork", "new")
    row("copied from the master", "copied")
    for cause in CAUSES:
        row("- " + cause, cause)
    return "\n".join(lines)
