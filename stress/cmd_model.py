"""rmapstress list / exec / hunt: the single-threaded model, printed."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from hypothesis.configuration import set_hypothesis_home_dir, storage_directory

from rmapsim.cprogram import is_concurrent
from rmapsim.errors import ModelError
from rmapsim.hunt import hunt
from rmapsim.program import ExecResult, ProgramError, parse_program, run_program
from rmapsim.variants import BASE, PATCHES, PRESETS, PROVENANCE, Variant, parse_variant
from stress.cli import (
    EXIT_DEFECT,
    EXIT_OK,
    HUNT_BUDGET_MAX,
    HUNT_THREADS_MAX,
    MIN_PARTIAL_MAX,
    SLAB_PAGE_MAX,
    SLAB_PAGE_MIN,
    UsageError,
)


def _variants(text: str) -> list[Variant]:
    names = list(PRESETS) if text.strip() == "all" else [t for t in text.split(",") if t.strip()]
    if not names:
        raise UsageError("--variant is empty")
    try:
        return [parse_variant(n) for n in names]
    except ModelError as exc:
        raise UsageError(f"--variant: {exc}") from None


BASE_TEXT = "2.6.33 plus the anon_vma_chain patch (5beb4930), before any April fix"
BASE_SOURCE = (
    "reconstructed from 2.6.33 and 5beb4930 as reviewed on linux-mm (anon-vma-2010.md §4)"
)


def cmd_list(args: argparse.Namespace) -> int:
    if args.json:
        print(
            json.dumps(
                {
                    "bases": [{"name": BASE, "means": BASE_TEXT, "source": BASE_SOURCE}],
                    "patches": [
                        {
                            "name": p.name,
                            "kind": p.kind,
                            "changes": p.changes,
                            "source": p.source,
                            "release": p.release or None,
                            "reconstructed": p.reconstructed,
                        }
                        for p in PATCHES
                    ],
                    "presets": [
                        {
                            "name": n,
                            "means": parse_variant(n).expression,
                            "role": role,
                            "provenance": PROVENANCE[n],
                        }
                        for n, (_, role) in PRESETS.items()
                    ],
                },
                indent=2,
            )
        )
        return EXIT_OK
    out = ["Bases:"]
    out.append(f"  {BASE:<22} {BASE_TEXT}")
    out.append(f"  {'':<22} source: {BASE_SOURCE}")
    out.append("\nPatches (BASE+patch+patch...):")
    for p in PATCHES:
        mark = " [reconstructed]" if p.reconstructed else ""
        shipped = f", in {p.release}" if p.release else ""
        out.append(f"  {p.name:<22} ({p.kind}{shipped}){mark} {p.changes}")
        out.append(f"  {'':<22} source: {p.source}")
    out.append("\nPresets:")
    for name, (_, role) in PRESETS.items():
        v = parse_variant(name)
        mark = " [reconstructed: " + ", ".join(v.reconstructed) + "]" if v.reconstructed else ""
        out.append(f"  {name:<22} = {v.expression}{mark}")
        out.append(f"  {'':<22} {role}")
        out.append(f"  {'':<22} {PROVENANCE[name]}")
    print("\n".join(out))
    return EXIT_OK


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(), path
    except OSError as exc:
        raise UsageError(f"cannot read program {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None


def replay_command(
    program: str,
    variant: Variant,
    memory: str,
    debug_list: bool = False,
    split_ptlocks: bool = True,
) -> str:
    cmd = ["rmapstress", "exec", program, "--variant", variant.name, "--memory", memory]
    if debug_list:
        cmd.append("--debug-list")
    if not split_ptlocks:
        cmd.append("--no-split-ptlocks")
    return shlex.join(cmd)


def _describe(result: ExecResult, program: str, args: argparse.Namespace) -> list[str]:
    v = result.variant
    head = f"{v.name}"
    if v.name != v.expression:
        head += f" ({v.expression})"
    if v.reconstructed:
        head += f" [reconstructed: {', '.join(v.reconstructed)}]"
    lines = [f"variant {head}, memory {result.memory}, {result.ops} operation(s) run"]
    for e in result.errors if args.verbose else ():
        lines.append(f"  line {e['line']}: {e['op']}: the call failed with {e['error']}")
    last_line = None
    for d in result.defects:
        if d.line != last_line:
            lines.append(f"line {d.line}: {d.op}")
            last_line = d.line
        label = f"{d.kind} {d.invariant}" if d.invariant else d.kind
        lines.append(f"  {label}: {d.detail}")
    if result.defects:
        kinds = sorted({d.kind for d in result.defects})
        first = result.defects[0]
        lines.append(
            f"DEFECT: {len(result.defects)} defect(s) ({', '.join(kinds)}), "
            f"first at line {first.line}"
        )
        replay = replay_command(
            program, v, result.memory, args.debug_list, not args.no_split_ptlocks
        )
        lines.append(f"replay: {replay}")
    else:
        lines.append("clean: no defect")
    return lines


def cmd_exec(args: argparse.Namespace) -> int:
    variants = _variants(args.variant)
    if not SLAB_PAGE_MIN <= args.slab_page_bytes <= SLAB_PAGE_MAX or args.slab_page_bytes % 8:
        raise UsageError(
            f"--slab-page-bytes: must be a multiple of 8 from {SLAB_PAGE_MIN} to "
            f"{SLAB_PAGE_MAX}, got {args.slab_page_bytes}"
        )
    if not 0 <= args.min_partial <= MIN_PARTIAL_MAX:
        raise UsageError(
            f"--min-partial: must be from 0 to {MIN_PARTIAL_MAX}, got {args.min_partial}"
        )
    text, source = _read(args.program)
    if is_concurrent(text):
        from stress.cmd_programs import exec_concurrent

        return exec_concurrent(args, text, source, variants)
    try:
        ops = parse_program(text, source)
    except ProgramError as exc:
        raise UsageError(str(exc)) from None
    results = []
    for v in variants:
        progress = _LineProgress(v.name, len(ops)) if sys.stderr.isatty() else None
        try:
            results.append(
                run_program(
                    ops,
                    v,
                    args.memory,
                    debug_list=args.debug_list,
                    slab_page_bytes=args.slab_page_bytes,
                    min_partial=args.min_partial,
                    check=not args.no_audit,
                    split_ptlocks=not args.no_split_ptlocks,
                    on_line=progress,
                )
            )
        finally:
            if progress is not None:
                progress.done()
    if args.json:
        docs = [r.to_dict() for r in results]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        if args.verbose:
            for op in ops:
                print(f"  {op.line:>4}  {op.render()}")
        for i, r in enumerate(results):
            if i:
                print()
            print("\n".join(_describe(r, args.program, args)))
        if len(results) > 1:
            print()
            print(_table(results))
    return EXIT_DEFECT if any(r.defects for r in results) else EXIT_OK


class _LineProgress:
    """`exec: line N of M` on a terminal's stderr, for programs long enough to wait for."""

    LONG = 10_000  # lines: shown from the start
    AFTER_S = 2.0  # or once a program has run this long
    EVERY_S = 0.25

    def __init__(self, variant: str, total: int) -> None:
        self.variant, self.total = variant, total
        self.start = time.monotonic()
        self.next = self.start if total >= self.LONG else self.start + self.AFTER_S
        self.shown = False

    def __call__(self, line: int) -> None:
        if line % 64 and line != 1:
            return
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + self.EVERY_S
        self.shown = True
        sys.stderr.write(
            f"\rexec {self.variant}: line {line:,} of {self.total:,} "
            f"({100 * line / max(self.total, 1):.0f}%, {now - self.start:.0f} s)\x1b[K"
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _table(results: list[ExecResult]) -> str:
    rows = [("variant", "outcome", "first defect")]
    for r in results:
        first = r.defects[0] if r.defects else None
        what = (
            f"line {first.line}: {first.kind}{' ' + first.invariant if first.invariant else ''}"
            if first
            else "-"
        )
        rows.append((r.variant.name, r.outcome, what))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def cmd_hunt(args: argparse.Namespace) -> int:
    variants = _variants(args.variant)
    if len(variants) != 1:
        raise UsageError("--variant: hunt takes one variant")
    if not (math.isfinite(args.budget_s) and 0 < args.budget_s <= HUNT_BUDGET_MAX):
        raise UsageError(
            f"--budget-s: must be a number of seconds above 0 and at most "
            f"{HUNT_BUDGET_MAX:g}, got {args.budget_s:g}"
        )
    if args.output:
        _check_writable(args.output)  # before the hunt, not after it
    if args.threads != 0 and not 2 <= args.threads <= HUNT_THREADS_MAX:
        raise UsageError(
            f"--threads: must be 0 (sequential programs) or from 2 to {HUNT_THREADS_MAX}, "
            f"got {args.threads}"
        )
    v = variants[0]
    if args.threads:
        from stress.cmd_programs import hunt_threads

        with _hypothesis_home():
            return hunt_threads(args, v)
    last = [time.monotonic()]

    def progress(examples: int, elapsed: float) -> None:
        if time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            sys.stderr.write(
                f"hunt {v.name}: {examples} programs in {elapsed:.0f}s "
                f"({examples / max(elapsed, 1e-9):.0f}/s), no defect yet\n"
            )

    with _hypothesis_home():
        result = hunt(
            v,
            budget_s=args.budget_s,
            seed_value=args.seed,
            memory=args.memory,
            on_progress=progress,
        )
    if not result.found:
        print(
            f"hunt {v.name}: no defect in {result.examples} programs "
            f"({result.elapsed_s:.1f}s, seed {args.seed}, memory {args.memory})"
        )
        return EXIT_OK
    text = result.program_text()
    print(text, end="")
    info: dict[str, Any] = {
        "found_after_s": round(result.found_after_s or 0.0, 2),
        "examples": result.examples,
        "shrunk_from": result.original_ops,
        "ops": len(result.program or []),
    }
    sys.stderr.write(
        f"hunt {v.name}: defect after {info['found_after_s']}s and {info['examples']} programs; "
        f"shrunk from {info['shrunk_from']} to {info['ops']} operations\n"
    )
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
        sys.stderr.write(f"written to {args.output}\n")
        print(f"# replay: {replay_command(args.output, v, args.memory)}")
    return EXIT_DEFECT


@contextlib.contextmanager
def _hypothesis_home() -> Iterator[None]:
    """Hypothesis keeps a cache in ./.hypothesis unless told otherwise: a hunt (either
    kind) leaves nothing in the current folder."""
    previous = storage_directory("x", intent_to_write=False).home_directory
    with tempfile.TemporaryDirectory(prefix="rmapstress-hunt-") as home:
        set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            set_hypothesis_home_dir(previous)


def _check_writable(path: str) -> None:
    """Refuse an output file that could not be written (its folder missing, say)."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise UsageError(f"-o: {path} is a folder")
    if not os.path.isdir(folder):
        raise UsageError(f"-o: cannot write {path}: no folder {os.path.dirname(path) or '.'}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"-o: cannot write {path}: the folder is not writable")
