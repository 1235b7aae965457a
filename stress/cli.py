"""The rmapstress command line: argument parsing, dispatch, exit codes.

Exit status: 0 clean (or matched expectations), 1 a defect (or a mismatch),
2 bad input (a one-line message naming the file, line or key), 3 an internal error,
130 and 143 `run` interrupted by SIGINT and SIGTERM (124: the emergency exit).
This module and its command modules are the only place that knows both the model
(rmapsim) and the harness (stress); they own all output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

EXIT_OK, EXIT_DEFECT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

#: Bounds of `exec`'s memory options (the scenario files' bounds of the same settings).
SLAB_PAGE_MIN, SLAB_PAGE_MAX = 768, 1 << 20
MIN_PARTIAL_MAX = 1000
#: The longest `hunt --budget-s` (a day, as a scenario's duration_s).
HUNT_BUDGET_MAX = 24 * 3600.0
#: The most threads `hunt --threads` searches (each one multiplies the interleavings).
HUNT_THREADS_MAX = 8

MEMORY_HELP = (
    "memory model: 'reuse' recycles freed objects as SLUB does, so a use-after-free shows "
    "as what it turns into; 'kasan' poisons them and names the bad access "
    "(default: %(default)s)"
)


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rmapstress",
        description="Reproduce, detect and explain lock-holding hangs: the 2010 anon_vma "
        "reverse map, every kernel variant of the thread, on one thread or many.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", help="list bases, patches and presets")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "exec",
        help="run a program single-threaded, auditing every line",
        description="Run a program (one operation a line: spawn, mmap, munmap, mprotect, "
        "touch, fork, exit, swapout, referenced; see README.md) on a fresh modelled kernel, "
        "one line at a time, and audit the reverse map's invariants I1-I9 after every line.  "
        "Exit status 1 if a variant shows a defect.",
    )
    p.add_argument("program", help="program file ('-' for standard input)")
    p.add_argument(
        "--variant",
        default="2.6.34",
        help="kernel variant, e.g. 2.6.34-rc3+reuse-singular; a comma-separated list, "
        "or 'all' for every preset (default: %(default)s)",
    )
    p.add_argument("--memory", choices=("reuse", "kasan"), default="reuse", help=MEMORY_HELP)
    p.add_argument(
        "--debug-list",
        action="store_true",
        help="CONFIG_DEBUG_LIST: list primitives check their neighbours and WARN",
    )
    p.add_argument(
        "--slab-page-bytes",
        type=int,
        default=4096,
        metavar="N",
        help=f"size of a modelled slab page, a multiple of 8 in {SLAB_PAGE_MIN}..{SLAB_PAGE_MAX}; "
        "smaller pages are emptied and recycled sooner (default: %(default)s)",
    )
    p.add_argument(
        "--no-split-ptlocks",
        action="store_true",
        help="guard every PTE with mm->page_table_lock (default: one lock per page table)",
    )
    p.add_argument(
        "--min-partial",
        type=int,
        default=5,
        metavar="N",
        help=f"empty slab pages a cache keeps before giving one back, 0..{MIN_PARTIAL_MAX} "
        "(SLUB: 5; default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--no-audit",
        action="store_true",
        help="do not audit I1-I9 between operations (the symptom, not the first broken rule)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every line as it runs")

    from stress import cmd_campaign, cmd_run

    cmd_run.add_parser(sub)
    cmd_campaign.add_parser(sub)

    from stress import cmd_replay

    cmd_replay.add_parser(sub)

    p = sub.add_parser(
        "hunt",
        help="search programs for a defect and shrink it",
        description="Generate bounded programs with Hypothesis and run each on the variant "
        "until one shows a defect, then shrink it to a minimal program, printed on standard "
        "output (exit status 1).  Exit status 0 if the budget ends without a defect.",
    )
    p.add_argument("--variant", required=True, help="the one kernel variant to hunt in")
    p.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        metavar="S",
        help=f"seconds of searching, in (0, {HUNT_BUDGET_MAX:g}] (default: %(default)g)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="search seed: the same seed, the same search "
        "(default: %(default)s)"
    )
    p.add_argument("--memory", choices=("reuse", "kasan"), default="reuse", help=MEMORY_HELP)
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="also write the minimal program here (its folder must exist)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help=f"search concurrent programs of N threads (2..{HUNT_THREADS_MAX}) under controlled "
        "schedules (default: 0, sequential programs)",
    )

    from stress import cmd_programs

    cmd_programs.add_shrink_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from stress import cmd_campaign, cmd_model, cmd_programs, cmd_replay, cmd_run

    handlers = {
        "list": cmd_model.cmd_list,
        "exec": cmd_model.cmd_exec,
        "hunt": cmd_model.cmd_hunt,
        "run": cmd_run.cmd_run,
        "replay": cmd_replay.cmd_replay,
        "shrink": cmd_programs.cmd_shrink,
        "campaign": cmd_campaign.cmd_campaign,
    }
    try:
        return handlers[args.command](args)
    except UsageError as exc:
        sys.stderr.write(f"rmapstress {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("rmapstress: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # an internal error: say so plainly, never as a defect
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        sys.stderr.write(
            f"rmapstress {args.command}: internal error: {type(exc).__name__}: {exc} "
            f"(at {where.filename}:{where.lineno}); please report it\n"
        )
        return EXIT_INTERNAL


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
