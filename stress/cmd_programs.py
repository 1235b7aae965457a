"""Concurrent programs on the command line: exec, shrink, hunt --threads, replay.

`rmapstress exec FILE` runs a concurrent program (one with ``thread NAME:``
sections) deterministically under its schedule; `rmapstress shrink REPRODUCER`
turns a controlled run's reproducer into a small concurrent program; `rmapstress
hunt --threads N` searches concurrent programs.  Output goes through here only.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from rmapsim.cprogram import ConcurrentProgram, parse_concurrent
from rmapsim.errors import ModelError
from rmapsim.program import ProgramError
from rmapsim.variants import Variant, parse_variant
from rmapsim.workload.lanes import LanesResult, program_from_workload, run_concurrent
from rmapsim.workload.shrink import preemptions, shrink_program
from stress.cli import EXIT_DEFECT, EXIT_OK, UsageError
from stress.report import CaseResult
from stress.sched.repro import Reproducer, ReproducerError, verdict_record
from stress.sched.timeline import stretches, timeline_lines


def exec_command(path: str, v: Variant, memory: str, extra: list[str]) -> str:
    return shlex.join(["rmapstress", "exec", path, "--variant", v.name, "--memory", memory, *extra])


def _extra(args: argparse.Namespace) -> list[str]:
    out = []
    if getattr(args, "slab_page_bytes", 4096) != 4096:
        out += ["--slab-page-bytes", str(args.slab_page_bytes)]
    if getattr(args, "min_partial", 5) != 5:
        out += ["--min-partial", str(args.min_partial)]
    if getattr(args, "debug_list", False):
        out.append("--debug-list")
    if getattr(args, "no_audit", False):
        out.append("--no-audit")
    return out


def result_doc(prog: ConcurrentProgram, r: LanesResult) -> dict[str, Any]:
    return {
        "outcome": r.outcome,
        "variant": r.variant.name,
        "memory": r.memory,
        "threads": len(prog.lanes),
        "ops": prog.operations,
        "steps": r.steps,
        "verdicts": [
            {**verdict_record(v), "threads": v.threads, "evidence": v.evidence} for v in r.verdicts
        ],
        "errors": r.errors,
        "invariants": r.invariants,
        "interleaving": stretches(r.switches, r.steps),
        "diverged": r.diverged,
        "reconstructed": list(r.variant.reconstructed),
    }


def describe(prog: ConcurrentProgram, r: LanesResult, command: str) -> list[str]:
    v = r.variant
    head = v.name if v.name == v.expression else f"{v.name} ({v.expression})"
    lines = [
        f"variant {head}, memory {r.memory}: concurrent program, {len(prog.lanes)} threads, "
        f"{prog.operations} operations, {preemptions(prog)} preemptions in its schedule"
    ]
    lines.append("interleaving:")
    lines += [f"  {x}" for x in timeline_lines(r.switches, r.steps, last=16)]
    for note in r.diverged:
        lines.append(f"  note: {note}")
    first = r.first
    if first is None:
        lines.append("clean: no defect" + ("" if not r.invariants else " (invariants?)"))
        return lines
    lines.append(f"DEFECT: {first.kind}: {first.summary}")
    where = first.evidence.get("while")
    if where:
        lines.append(f"  while: {where}")
    path = first.evidence.get("kernel_path")
    if path:
        lines.append(f"  kernel path: {path}")
    for extra in r.verdicts[1:3]:
        lines.append(f"  then {extra.kind}: {extra.summary}")
    lines.append(f"replay: {command}")
    return lines


def exec_concurrent(
    args: argparse.Namespace, text: str, source: str, variants: list[Variant]
) -> int:
    try:
        prog = parse_concurrent(text, source)
    except ProgramError as exc:
        raise UsageError(str(exc)) from None
    docs, outs, found = [], [], False
    for v in variants:
        r = run_concurrent(
            prog,
            v,
            args.memory,
            debug_list=args.debug_list,
            slab_page_bytes=args.slab_page_bytes,
            min_partial=args.min_partial,
            check=not getattr(args, "no_audit", False),
        )
        found |= r.outcome == "defect"
        if r.case.outcome == "error":
            for e in r.case.errors[:1]:
                sys.stderr.write(f"rmapstress exec: internal error: {e.splitlines()[0]}\n")
        docs.append(result_doc(prog, r))
        outs.append(describe(prog, r, exec_command(args.program, v, args.memory, _extra(args))))
    if args.json:
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, default=str))
    else:
        print("\n\n".join("\n".join(o) for o in outs))
    return EXIT_DEFECT if found else EXIT_OK


def replay_program(rep: Reproducer, path: str) -> tuple[CaseResult, list[str]]:
    """For `rmapstress replay`: a program reproducer runs its program."""
    t = rep.target
    try:
        prog = parse_concurrent(str(t["program"]), f"{path}: target.program")
        r = run_concurrent(
            prog,
            str(t["variant"]),
            str(t.get("memory", "reuse")),
            slab_page_bytes=int(t.get("slab_page_bytes", 4096)),
            min_partial=int(t.get("min_partial", 5)),
        )
    except KeyError as exc:
        raise UsageError(f"{path}: target: missing {exc.args[0]!r}") from None
    except (ProgramError, ModelError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return r.case, r.diverged


def _memory_flags(kw: dict[str, Any]) -> list[str]:
    out = []
    if kw.get("slab_page_bytes", 4096) != 4096:
        out += ["--slab-page-bytes", str(kw["slab_page_bytes"])]
    if kw.get("min_partial", 5) != 5:
        out += ["--min-partial", str(kw["min_partial"])]
    if kw.get("debug_list"):
        out.append("--debug-list")
    return out


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def add_shrink_parser(sub: Any) -> None:
    p = sub.add_parser(
        "shrink",
        help="turn a reproducer into a small concurrent program",
        description="Take a reproducer written by a controlled run (rmapstress run --schedule "
        "controlled) and shrink it, keeping its defect, to a concurrent program: fewer threads "
        "and operations first, then fewer switches. Prints the program; -o writes it.",
    )
    p.add_argument("reproducer", metavar="FILE", help="reproducer file (JSON)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        metavar="S",
        help="time to spend shrinking (default: 60)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the program here too")


def cmd_shrink(args: argparse.Namespace) -> int:
    if not args.budget_s > 0 or args.budget_s == float("inf"):
        raise UsageError("--budget-s: expected a positive number of seconds")
    if args.output and not Path(args.output).resolve().parent.is_dir():
        raise UsageError(f"-o: no such directory: {Path(args.output).parent}")
    try:
        rep = Reproducer.load(args.reproducer)
    except ReproducerError as exc:
        raise UsageError(str(exc)) from None
    t = rep.target
    if rep.kind == "workload":
        scn = dict(t.get("scenario", {}))
        mem = dict(scn.get("memory", {}))
        memory = str(mem.get("mode", "reuse"))
        kw: dict[str, Any] = {
            "slab_page_bytes": int(mem.get("slab_page_bytes", 4096)),
            "min_partial": int(mem.get("min_partial", 5)),
            "debug_list": bool(mem.get("debug_list", False)),
        }
        try:
            prog = program_from_workload(dict(t.get("operations", {})), rep.switches)
        except ProgramError as exc:
            raise UsageError(f"{args.reproducer}: target.operations: {exc}") from None
    elif rep.kind == "program":
        memory = str(t.get("memory", "reuse"))
        kw = {
            "slab_page_bytes": int(t.get("slab_page_bytes", 4096)),
            "min_partial": int(t.get("min_partial", 5)),
        }
        try:
            prog = parse_concurrent(str(t.get("program", "")), f"{args.reproducer}: program")
        except ProgramError as exc:
            raise UsageError(str(exc)) from None
    else:
        raise UsageError(f"{args.reproducer}: a {rep.kind} reproducer has no operations to shrink")
    try:
        v = parse_variant(str(t.get("variant")))
    except ModelError as exc:
        raise UsageError(f"{args.reproducer}: target.variant: {exc}") from None
    # A workload had no audits between operations: neither does its program, so that the
    # defect kept is the one the workload found (exec --no-audit runs it the same way).
    if rep.kind == "workload":
        kw["check"] = False
    first = run_concurrent(prog, v, memory, **kw)
    key = first.key()
    if key is None:
        print(f"shrink: the program made from {args.reproducer} runs clean; nothing to shrink")
        return EXIT_OK
    t0 = time.monotonic()
    hint = first.first.summary if first.first is not None else ""
    best, stats = shrink_program(
        prog, v.expression, key=key, budget_s=args.budget_s, memory=memory, hint=hint, **kw
    )
    final = run_concurrent(best, v, memory, **kw)
    fv = final.first
    extra = _memory_flags(kw) + ([] if kw.get("check", True) else ["--no-audit"])
    out_path = args.output or "PROGRAM"
    header = (
        f"shrunk from {args.reproducer}: {stats.before_threads} threads, {stats.before_ops} "
        f"operations -> {len(best.lanes)} threads, {best.operations} operations, "
        f"{preemptions(best)} preemptions ({stats.tried} runs, {time.monotonic() - t0:.1f} s)\n"
        f"defect: {fv.kind + ': ' + fv.summary if fv else 'none'}\n"
        f"run it: {exec_command(out_path, v, memory, extra)}"
    )
    text = best.render(header)
    print(text, end="")
    if args.output:
        _write(args.output, text)
        sys.stderr.write(f"written to {args.output}\n")
    return EXIT_DEFECT if fv is not None else EXIT_OK


def hunt_threads(args: argparse.Namespace, v: Variant) -> int:
    from rmapsim.workload.chunt import MEMORY, hunt_concurrent

    last = [time.monotonic()]

    def progress(examples: int, elapsed: float) -> None:
        if time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            sys.stderr.write(
                f"hunt {v.name} --threads {args.threads}: {examples} programs in "
                f"{elapsed:.0f}s ({examples / max(elapsed, 1e-9):.0f}/s), no defect yet\n"
            )

    h = hunt_concurrent(
        v,
        threads=args.threads,
        budget_s=args.budget_s,
        seed_value=args.seed,
        memory=args.memory,
        on_progress=progress,
    )
    if not h.found or h.program is None or h.result is None:
        print(
            f"hunt {v.name} --threads {args.threads}: no defect in {h.examples} concurrent "
            f"programs ({h.elapsed_s:.1f}s, seed {args.seed}, memory {args.memory})"
        )
        return EXIT_OK
    fv = h.result.first
    path = args.output or "PROGRAM"
    header = (
        f"found by: rmapstress hunt --variant {v.name} --threads {args.threads} "
        f"--seed {args.seed} --memory {args.memory}\n"
        f"variant {v.expression}; found after {h.found_after_s or 0:.2f}s and {h.examples} "
        f"programs; shrunk from {h.original_threads} threads, {h.original_ops} operations, "
        f"{h.original_preemptions} preemptions\n"
        f"defect: {fv.kind + ': ' + fv.summary if fv else 'none'}\n"
        f"run it: {exec_command(path, v, args.memory, _memory_flags(MEMORY))}"
    )
    text = h.program.render(header)
    print(text, end="")
    sys.stderr.write(
        f"hunt {v.name}: defect after {h.found_after_s or 0:.2f}s and {h.examples} programs; "
        f"{len(h.program.lanes)} threads, {h.program.operations} operations, "
        f"{preemptions(h.program)} preemptions\n"
    )
    if args.output:
        _write(args.output, text)
        sys.stderr.write(f"written to {args.output}\n")
    return EXIT_DEFECT
