"""Programs: operation sequences in a line format, and the single-threaded runner.

The format (one operation a line, ``#`` starts a comment, blank lines ignored,
a ``#`` inside a word - ``page#3`` - is part of it; numbers decimal or 0x hex, addresses
page-aligned, 4096-byte pages)::

    spawn P                  # a new process with an empty address space
    mmap P 0x10000 4 rw      # private anonymous mapping, MAP_FIXED; prot: letters of rwx, or -
    munmap P 0x10000 4
    mprotect P 0x10000 2 r
    touch P 0x10000 4 w      # access each page: r = read, w = write
    fork P C                 # C becomes a child of P
    exit C
    swapout P 0x10000 4      # reclaim the pages mapped there
    swapout all              # reclaim every anonymous page (a hibernation image)
    referenced P 0x10000 4   # a page_referenced walk on the pages mapped there
    reclaim P 0x10000        # kswapd on the page P maps there: isolate it, try to reclaim it
    reclaim page#3           # ... on page frame 3, wherever it is mapped
    migrate P 0x10000 4      # migrate the pages mapped there to new page frames

`parse_program` checks everything that can be checked without running (syntax,
alignment, processes that exist); `run_program` executes it on a fresh kernel and
audits the invariants after every line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rmapsim.audit_scope import FullAuditor, LineAuditor
from rmapsim.errors import KIND_CRASH, KIND_INVARIANT, KernelDefect, KernelOops
from rmapsim.kernel import Kernel
from rmapsim.structs import PAGE_SIZE, VM_EXEC, VM_READ, VM_WRITE
from rmapsim.sync import SingleThreadSync
from rmapsim.variants import Variant, parse_variant

OPS = (
    "spawn",
    "mmap",
    "munmap",
    "mprotect",
    "touch",
    "fork",
    "exit",
    "swapout",
    "referenced",
    "reclaim",
    "migrate",
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*$")
_ERRNO = {-1: "EPERM", -12: "ENOMEM", -13: "EACCES", -14: "EFAULT", -22: "EINVAL"}


class ProgramError(ValueError):
    """A malformed program: ``FILE:LINE: message``."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source, self.line, self.message = source, line, message


@dataclass(frozen=True)
class Op:
    line: int
    name: str
    proc: str | None = None
    addr: int = 0
    npages: int = 0
    prot: int = 0
    write: bool = False
    child: str | None = None
    text: str = ""

    def render(self) -> str:
        """The op in the program format (canonical spelling)."""
        if self.name == "spawn" or self.name == "exit":
            return f"{self.name} {self.proc}"
        if self.name == "fork":
            return f"fork {self.proc} {self.child}"
        if self.name == "swapout" and self.proc is None:
            return "swapout all"
        if self.name == "reclaim":
            if self.proc is None:
                return f"reclaim page#{self.npages}"
            return f"reclaim {self.proc} {self.addr:#x}"
        base = f"{self.name} {self.proc} {self.addr:#x} {self.npages}"
        if self.name in ("mmap", "mprotect"):
            return f"{base} {prot_text(self.prot)}"
        if self.name == "touch":
            return f"{base} {'w' if self.write else 'r'}"
        return base


def prot_text(prot: int) -> str:
    text = "".join(c for c, b in (("r", VM_READ), ("w", VM_WRITE), ("x", VM_EXEC)) if prot & b)
    return text or "-"


_COMMENT = re.compile(r"(?:^|(?<=\s))#")


def strip_comment(raw: str) -> str:
    """The line without its comment: '#' at the start or after a space (page#3 is a name)."""
    m = _COMMENT.search(raw)
    return (raw[: m.start()] if m else raw).strip()


def _number(text: str, what: str, err: Any) -> int:
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise err(f"{what} must be a decimal or 0x-hex number, not {text!r}") from None
    if value < 0:
        raise err(f"{what} must not be negative: {text}")
    return value


def _prot(text: str, err: Any) -> int:
    if text == "-":
        return 0
    bits = {"r": VM_READ, "w": VM_WRITE, "x": VM_EXEC}
    prot = 0
    for c in text:
        if c not in bits or prot & bits[c]:
            raise err(f"prot must be letters of 'rwx' (each once) or '-', not {text!r}")
        prot |= bits[c]
    return prot


def parse_program(
    text: str, source: str = "<program>", *, static_procs: bool = True
) -> list[Op]:
    """Parse and statically check a program; raises ProgramError on the first bad line.

    `static_procs=False` skips the checks that processes exist (a concurrent program's
    lanes act on processes other lanes create).
    """
    ops: list[Op] = []
    alive: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        if not line:
            continue

        def err(msg: str, _n: int = lineno) -> ProgramError:
            return ProgramError(source, _n, msg)

        words = line.split()
        name, args = words[0], words[1:]
        arity = {
            "spawn": 1,
            "exit": 1,
            "fork": 2,
            "munmap": 3,
            "referenced": 3,
            "migrate": 3,
            "mmap": 4,
            "mprotect": 4,
            "touch": 4,
        }
        if name not in OPS:
            raise err(f"unknown operation {name!r} (known: {', '.join(OPS)})")
        if name == "swapout":
            if args == ["all"]:
                ops.append(Op(lineno, "swapout", None, text=line))
                continue
            want = 3
        elif name == "reclaim":
            if len(args) == 1:
                pfn = _number(args[0].removeprefix("page#"), "page frame number", err)
                ops.append(Op(lineno, "reclaim", None, npages=pfn, text=line))
                continue
            if len(args) != 2:
                raise err("reclaim takes P ADDR (the page P maps there) or page#PFN")
            want = 2
        else:
            want = arity[name]
        if len(args) != want:
            usage = {
                "spawn": "spawn P",
                "exit": "exit P",
                "fork": "fork P C",
                "munmap": "munmap P ADDR NPAGES",
                "referenced": "referenced P ADDR NPAGES",
                "migrate": "migrate P ADDR NPAGES",
                "swapout": "swapout P ADDR NPAGES | swapout all",
                "mmap": "mmap P ADDR NPAGES PROT",
                "mprotect": "mprotect P ADDR NPAGES PROT",
                "touch": "touch P ADDR NPAGES r|w",
            }[name]
            raise err(f"{name} takes {want} argument(s): {usage}")
        proc = args[0]
        if not _NAME.match(proc) or proc == "all":
            raise err(
                f"bad process name {proc!r} (a letter or _, then letters, digits, _ . -; not 'all')"
            )
        if name == "spawn":
            if proc in alive and static_procs:
                raise err(f"process {proc} already exists")
            alive.add(proc)
            ops.append(Op(lineno, name, proc, text=line))
            continue
        if proc not in alive and static_procs:
            raise err(f"no process {proc} (spawn or fork it first)")
        if name == "exit":
            alive.discard(proc)
            ops.append(Op(lineno, name, proc, text=line))
            continue
        if name == "fork":
            child = args[1]
            if not _NAME.match(child) or child == "all":
                raise err(f"bad process name {child!r}")
            if child in alive and static_procs:
                raise err(f"process {child} already exists")
            alive.add(child)
            ops.append(Op(lineno, name, proc, child=child, text=line))
            continue
        addr = _number(args[1], "address", err)
        if addr % PAGE_SIZE:
            raise err(f"address {args[1]} is not page-aligned (4096-byte pages)")
        if name == "reclaim":
            ops.append(Op(lineno, name, proc, addr, text=line))
            continue
        npages = _number(args[2], "page count", err)
        if npages > 1 << 20:
            raise err(f"page count {npages} is too large (at most {1 << 20})")
        prot, write = 0, False
        if name in ("mmap", "mprotect"):
            prot = _prot(args[3], err)
        elif name == "touch":
            if args[3] not in ("r", "w"):
                raise err(f"touch access must be r or w, not {args[3]!r}")
            write = args[3] == "w"
        ops.append(Op(lineno, name, proc, addr, npages, prot, write, text=line))
    return ops


@dataclass
class Defect:
    kind: str
    line: int
    op: str
    detail: str
    invariant: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "invariant": self.invariant,
            "line": self.line,
            "op": self.op,
            "detail": self.detail,
            **({"evidence": self.evidence} if self.evidence else {}),
        }


@dataclass
class ExecResult:
    variant: Variant
    memory: str
    ops: int = 0
    defects: list[Defect] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return "defect" if self.defects else "clean"

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "variant": self.variant.name,
            "memory": self.memory,
            "ops": self.ops,
            "defects": [d.to_dict() for d in self.defects],
            "errors": self.errors,
            "reconstructed": list(self.variant.reconstructed),
        }


def null_deref(exc: AttributeError) -> KernelOops | None:
    """A NULL pointer the modelled kernel dereferenced (Python sees None.<field>)."""
    if "'NoneType' object has no attribute" not in str(exc):
        return None
    tb = exc.__traceback__
    where = "?"
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("rmapsim."):
            where = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    field_name = str(exc).rsplit(" ", 1)[-1].strip("'")
    return KernelOops(
        f"BUG: unable to handle kernel NULL pointer dereference (->{field_name} in {where})",
        function=where,
        field=field_name,
    )


def apply(k: Kernel, op: Op) -> int:
    """Perform one operation; a negative result is the call's error."""
    if op.name == "spawn":
        k.spawn(op.proc or "")
        return 0
    assert op.proc is not None or op.name in ("swapout", "reclaim")
    if op.name == "mmap":
        return k.mmap(op.proc, op.addr, op.npages, op.prot)  # type: ignore[arg-type]
    if op.name == "munmap":
        return k.munmap(op.proc, op.addr, op.npages)  # type: ignore[arg-type]
    if op.name == "mprotect":
        return k.mprotect(op.proc, op.addr, op.npages, op.prot)  # type: ignore[arg-type]
    if op.name == "touch":
        return k.touch(op.proc, op.addr, op.npages, op.write)  # type: ignore[arg-type]
    if op.name == "fork":
        return k.fork(op.proc, op.child or "")  # type: ignore[arg-type]
    if op.name == "exit":
        return k.exit(op.proc)  # type: ignore[arg-type]
    if op.name == "swapout":
        return min(0, k.swapout(op.proc, op.addr, op.npages))
    if op.name == "referenced":
        return min(0, k.referenced(op.proc, op.addr, op.npages))  # type: ignore[arg-type]
    if op.name == "reclaim":
        if op.proc is not None:
            return min(0, k.reclaim_at(op.proc, op.addr))
        return min(0, k.reclaim(op.npages))
    if op.name == "migrate":
        k.migrate(op.proc, op.addr, op.npages)  # type: ignore[arg-type]
        return 0
    raise AssertionError(op.name)


def run_program(
    ops: Iterable[Op],
    variant: Variant | str,
    memory: str = "reuse",
    *,
    debug_list: bool = False,
    check: bool = True,
    slab_page_bytes: int = 4096,
    min_partial: int = 5,
    split_ptlocks: bool = True,
    full_audits: bool = False,
    on_line: Callable[[int], None] | None = None,
) -> ExecResult:
    """Run a program single-threaded, auditing after every line.

    A fatal defect (oops, BUG, lockup, endless walk, KASAN report) stops the run, as
    it would stop the CPU; invariant violations and DEBUG_LIST warnings are
    recorded once each and the run goes on, so a cause can be followed to its
    symptom.  Each audit covers what the line touched (`rmapsim.audit_scope`), which
    finds what a whole audit (`full_audits=True`) finds.  `on_line(n)` is called
    after the n-th operation (for progress reports).
    """
    v = parse_variant(variant) if isinstance(variant, str) else variant
    site: list[Any] = [None]
    k = Kernel(
        v,
        memory=memory,
        sync=SingleThreadSync(lambda: site[0]),
        debug_list=debug_list,
        slab_page_bytes=slab_page_bytes,
        min_partial=min_partial,
        split_ptlocks=split_ptlocks,
    )
    result = ExecResult(v, memory)
    seen: set[tuple[Any, ...]] = set()
    auditor = (FullAuditor if full_audits else LineAuditor)(k)
    for op in ops:
        text = op.render()
        site[0] = (op.line, text)
        k.mem.site = site[0]
        result.ops += 1
        if on_line is not None:
            on_line(result.ops)
        nwarn = len(k.warnings)
        procs = [p for p in (op.proc, op.child) if p is not None]
        auditor.before(procs)
        try:
            ret = apply(k, op)
        except KernelDefect as exc:
            result.defects.append(
                Defect(exc.kind, op.line, text, exc.summary, None, _jsonable(exc.details))
            )
            if exc.fatal:
                break
            ret = 0
        except AttributeError as exc:
            oops = null_deref(exc)
            if oops is None:
                raise
            result.defects.append(
                Defect(KIND_CRASH, op.line, text, oops.summary, None, _jsonable(oops.details))
            )
            break
        if ret < 0:
            result.errors.append({"line": op.line, "op": text, "error": _ERRNO.get(ret, str(ret))})
        for w in k.warnings[nwarn:]:
            result.defects.append(
                Defect(w.kind, op.line, text, w.summary, None, _jsonable(w.details))
            )
        k.mem.quiesce()
        if check:
            for viol in auditor.after(procs, everything=op.proc is None):
                if viol.key in seen:
                    continue
                seen.add(viol.key)
                result.defects.append(
                    Defect(
                        KIND_INVARIANT, op.line, text, viol.summary, viol.invariant, viol.to_dict()
                    )
                )
    auditor.close()
    return result


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (str, int, float, bool)) else str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def render_program(ops: Iterable[Op], header: str = "") -> str:
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    lines += [op.render() for op in ops]
    return "\n".join(lines) + "\n"
