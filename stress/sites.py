"""Where a lock was made: lock classes keyed by creation site, names by assignment target.

Lockdep keys a lock class by its static key; the watch mode keys it by the line that
made the lock (`bank.py:12`), and names each lock after what it was assigned to
(`self.lock@bank.py:12`, then `#2`, `#3`...).  A lock the standard library makes for the
user's code (a Queue's mutex, a Future's condition) also names the user's line.  Each
site is worked out once (the call's column, from the code object's positions, finds the
assignment target in the source line) and cached by code object identity.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import sysconfig
from typing import Any

_STDLIB = os.path.normpath(sysconfig.get_paths()["stdlib"]) + os.sep
_PURELIB = os.path.normpath(sysconfig.get_paths()["purelib"]) + os.sep
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: (id of the code object, instruction) -> (the code object, its site).  Not keyed by the
#: code object itself: code objects compare by value, and two files may hold equal ones.
_sites: dict[tuple[int, int], tuple[Any, tuple[str, str, bool]]] = {}
_counts: dict[str, int] = {}


def _short(path: str) -> str:
    path = os.path.normpath(path)
    for base in (_STDLIB, _PURELIB):
        if path.startswith(base):
            return path[len(base) :]
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _target(line: str, col: int) -> str:
    """What the call at column `col` of `line` is assigned to (`self.lock`), if anything."""
    text = line.strip()
    indent = len(line) - len(line.lstrip())
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return ""
    col -= indent
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                    for t, v in zip(target.elts, value.elts, strict=False):
                        if v.col_offset <= col < (v.end_col_offset or 0):
                            return ast.unparse(t)
                elif value.col_offset <= col < (value.end_col_offset or 0):
                    return ast.unparse(target)
    return ""


def _site(code: Any, lasti: int) -> tuple[str, str, bool]:
    """(class name, what the lock is assigned to, whether the site is library code) of
    the instruction at `lasti` of `code`; computed once per site."""
    key = (id(code), lasti)
    cached = _sites.get(key)
    if cached is not None and cached[0] is code:
        return cached[1]
    filename = code.co_filename
    lineno, col = 0, -1
    for i, pos in enumerate(code.co_positions()):
        if i == lasti // 2:
            lineno = pos[0] or 0
            col = pos[2] if pos[2] is not None else -1
            break
    line = linecache.getline(filename, lineno)
    target = _target(line, col) if col >= 0 else ""
    path = os.path.normpath(os.path.abspath(filename))
    library = path.startswith((_STDLIB, _PURELIB, _HERE))
    known = (f"{_short(filename)}:{lineno}", target, library)
    _sites[key] = (code, known)
    return known


class Site:
    """Where a lock was made: its class name, and the name of this instance."""

    __slots__ = ("cls", "name")

    def __init__(self, cls: str, name: str) -> None:
        self.cls = cls
        self.name = name


def creation_site(depth: int, kind: str) -> Site:
    """The site of the caller `depth` frames up (1: the caller of the function calling this)."""
    frame: Any = sys._getframe(depth + 1)
    cls, target, library = _site(frame.f_code, frame.f_lasti)
    label = f"{target or kind}@{cls}"
    if library:
        # A lock the standard library makes for the user: say for which line of theirs.
        outer = frame.f_back
        while outer is not None and _site(outer.f_code, outer.f_lasti)[2]:
            outer = outer.f_back
        if outer is not None and outer.f_code.co_name != "<module>":
            label += f" (for {_site(outer.f_code, outer.f_lasti)[0]})"
    n = _counts[label] = _counts.get(label, 0) + 1
    return Site(cls, label if n == 1 else f"{label}#{n}")
