"""A lock holder spinning in one loop: find the linked structure it walks, and say so.

The watchdog sees a thread that holds a lock stay inside one frame, within a few lines,
while its CPU time advances (stress.samples).  That is a suspected endless loop.  If a
local variable of that frame (or of a frame it called) is a node of a linked structure
whose links come back to a node already seen - a list whose tail points back into its
middle - the loop is a list-loop, proven by the ring itself; otherwise it is reported
as a livelock (a loop that never ends, as far as anyone can tell).

Nodes are recognised without running any of the program's code: an object whose
instance dictionary or slots hold another object of its own type, a dict holding a
dict under a key both share, a list holding a list of its own length.  Links are read
with object.__getattribute__ and slot descriptors, never through properties.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass
from types import FrameType
from typing import Any

from stress.samples import Spin
from stress.threads import ThreadState, where
from stress.verdicts import Verdict

#: Links followed from one node before giving up (a long list is not a loop).
MAX_STEPS = 100_000
#: Node descriptions kept as evidence.
SHOWN_NODES = 6
#: Items of a list or tuple variable looked at as possible heads of a linked list.
SHOWN_ITEMS = 8
_SCALARS = (str, bytes, int, float, complex, bool, type(None), range)
_SKIP = (
    *_SCALARS,
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.FrameType,
    types.CodeType,
)


@dataclass(frozen=True)
class Ring:
    """A linked structure that comes back on itself."""

    #: The local variable the walk started from, and the link followed ("next", "['next']").
    var: str
    link: str
    #: Nodes from the variable's node to the ring, and nodes in the ring.
    lead: int
    length: int
    #: A few nodes of the ring, described.
    nodes: tuple[str, ...]

    def describe(self) -> str:
        way = f"{self.var}{self.link}"
        return (
            f"following {way} never ends: {self.lead} node(s) lead into a ring of "
            f"{self.length} node(s) that does not pass through {self.var} "
            f"({', '.join(self.nodes)}{', ...' if self.length > len(self.nodes) else ''})"
        )


def _links(node: Any) -> list[tuple[str, Any]]:
    """(link description, getter) of each way from `node` to a node of its own type."""
    kind = type(node)
    out: list[tuple[str, Any]] = []
    if kind is dict:
        for key, value in list(node.items()):
            if type(value) is dict and key in value:
                out.append((f"[{key!r}]", key))
        return out
    if kind is list:
        for i, value in enumerate(list(node)):
            if type(value) is list and len(value) == len(node):
                out.append((f"[{i}]", i))
        return out
    try:
        attrs = object.__getattribute__(node, "__dict__")
    except (AttributeError, TypeError):
        attrs = {}
    if isinstance(attrs, dict):
        for name, value in list(attrs.items()):
            if type(value) is kind:
                out.append((f".{name}", ("attr", name)))
    for klass in kind.__mro__:
        for name in klass.__dict__.get("__slots__", ()) or ():
            if not isinstance(name, str) or name in ("__dict__", "__weakref__"):
                continue
            value = _slot(node, klass, name)
            if type(value) is kind:
                out.append((f".{name}", ("slot", klass, name)))
    return out


def _slot(node: Any, klass: type, name: str) -> Any:
    descriptor: Any = klass.__dict__.get(name)
    if type(descriptor) is not types.MemberDescriptorType:
        return None
    try:
        return descriptor.__get__(node, klass)
    except AttributeError:
        return None


def _follow(node: Any, how: Any) -> Any:
    if isinstance(how, tuple):
        if how[0] == "attr":
            try:
                attrs = object.__getattribute__(node, "__dict__")
            except (AttributeError, TypeError):
                return None
            return attrs.get(how[1]) if isinstance(attrs, dict) else None
        return _slot(node, how[1], how[2])
    try:
        return node[how]
    except (KeyError, IndexError, TypeError):
        return None


def _describe(node: Any) -> str:
    kind = type(node).__name__
    for attr in ("key", "name", "value", "id", "data", "val"):
        if type(node) is dict:
            value = node.get(attr)
        elif type(node) is list:
            value = None
        else:
            value = _follow(node, ("attr", attr))
        if value is not None and isinstance(value, _SCALARS):
            return f"{kind}({attr}={value!r:.40})"
    return f"{kind}@{id(node):#x}"


def _candidates(frames: list[FrameType]) -> list[tuple[str, Any]]:
    """Local variables of `frames`, and one level into each: attributes (self.head) and
    the first items of a list or tuple (nodes[0])."""
    out: list[tuple[str, Any]] = []
    for frame in frames:
        try:
            names = dict(frame.f_locals)
        except Exception:  # a frame that cannot snapshot its locals has nothing to show
            continue
        for var, value in names.items():
            if isinstance(value, _SKIP):
                continue
            out.append((var, value))
            if isinstance(value, (list, tuple)):
                out += [
                    (f"{var}[{i}]", v)
                    for i, v in enumerate(value[:SHOWN_ITEMS])
                    if not isinstance(v, _SKIP)
                ]
                continue
            try:
                attrs = object.__getattribute__(value, "__dict__")
            except (AttributeError, TypeError):
                continue
            if isinstance(attrs, dict):
                out += [
                    (f"{var}.{k}", v) for k, v in list(attrs.items()) if not isinstance(v, _SKIP)
                ]
    return out


def find_ring(frames: list[FrameType]) -> Ring | None:
    """A ring reached through one kind of link from a variable of `frames` (innermost first).

    Only a ring some variable leads into from outside proves a broken list: a list that
    is circular by design (the kernel's, with its head in the ring) comes back to where
    it started.  Of the rings found, the one seen from farthest away is kept.
    """
    best: Ring | None = None
    for var, value in _candidates(frames):
        for link, how in _links(value):
            found = _ring_from(value, how)
            if found is None or found[0] == 0:
                continue
            lead, length, nodes = found
            if best is None or lead > best.lead:
                best = Ring(var, link, lead, length, nodes)
    return best


def _ring_from(start: Any, how: Any) -> tuple[int, int, tuple[str, ...]] | None:
    kind = type(start)
    seen: dict[int, int] = {}
    path: list[Any] = []
    node = start
    for step in range(MAX_STEPS):
        if type(node) is not kind:
            return None
        if id(node) in seen:
            lead = seen[id(node)]
            ring = path[lead:]
            return lead, len(ring), tuple(_describe(n) for n in ring[:SHOWN_NODES])
        seen[id(node)] = step
        path.append(node)
        node = _follow(node, how)
    return None


def loop_site(spin: Spin) -> str:
    """`file.py:12-13 in func` for the loop's lines."""
    code = spin.code
    lines = spin.lines
    span = f"{lines[0]}" if lines[0] == lines[-1] else f"{lines[0]}-{lines[-1]}"
    return f"{os.path.basename(code.co_filename)}:{span} in {code.co_name}"


def loop_source(spin: Spin) -> str:
    import linecache

    first = linecache.getline(spin.code.co_filename, spin.lines[0]).strip()
    return first


def spin_verdict(
    state: ThreadState,
    spin: Spin,
    ring: Ring | None,
    locks: list[Any],
    held_s: float,
    stack: list[Any],
    chains: list[str],
    waiters: list[str],
    now_s: float,
    overloaded: float | None = None,
    spinning: float = 0.0,
) -> Verdict:
    """list-loop (a ring was found) or livelock (a suspected endless loop) of a lock holder."""
    site = loop_site(spin)
    source = loop_source(spin)
    code = f" ({source})" if source else ""
    holding = ", ".join(x.name for x in locks)
    behind = f"; {len(chains)} waiting" if chains else "; nobody waiting"
    if ring is not None:
        kind = "list-loop"
        summary = f"{state.name} loops at {site}{code} holding {holding}: {ring.describe()}{behind}"
    else:
        kind = "livelock"
        summary = (
            f"suspected endless loop: {state.name} has spun at {site}{code} for "
            f"{spinning:.1f} s at {spin.cpu:.0%} CPU holding {holding}{behind}"
        )
    if overloaded is not None:
        summary += f" (machine overloaded: it waited for a CPU {overloaded:.0%} of the time)"
    evidence: dict[str, Any] = {
        "loop": f"{spin.code.co_filename}:{spin.lines[0]}",
        "loop_lines": list(spin.lines),
        "function": spin.code.co_name,
        "spinning_s": round(spinning, 3),
        "cpu": round(spin.cpu, 3),
        "locks": [x.name for x in locks],
        "held_s": round(held_s, 3),
        "waiters": waiters,
        "machine_overloaded": overloaded is not None,
    }
    if ring is not None:
        evidence["ring"] = {
            "variable": ring.var,
            "link": ring.link,
            "lead": ring.lead,
            "length": ring.length,
            "nodes": list(ring.nodes),
        }
    first_line = f"{state.name} holds {holding} and spins at {where(stack)}"
    return Verdict(
        kind=kind,
        summary=summary,
        source="watchdog",
        threads=[state.name, *waiters],
        locks=[x.name for x in locks],
        lock_classes=[x.lock_class.name for x in locks],
        chain=chains or [first_line],
        stacks={state.name: stack},
        evidence=evidence,
        culprits=[state.name],
        at_s=now_s,
    )
