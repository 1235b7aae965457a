"""The live terminal summary of a running campaign (an engine Observer).

On a terminal: a rich panel redrawn twice a second (progress, cases per minute,
what runs where, the per-variant table) with a line printed above it for each new
signature, mismatch or lost case.  Elsewhere (a log, CI): the same lines, and a
status line every `every_s` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from stress.campaign.engine import Runner
from stress.campaign.executor import Case
from stress.campaign.stats import summarize
from stress.campaign.text import case_line, duration_text, group_rows


class LiveDisplay:
    """Prints what a campaign does while it runs."""

    def __init__(
        self,
        *,
        title: str,
        interactive: bool,
        previous: Sequence[Mapping[str, Any]] = (),
        out: IO[str] | None = None,
        every_s: float = 10.0,
    ) -> None:
        self.title = title
        self.out = out or sys.stdout
        self.every_s = every_s
        self.records: list[Mapping[str, Any]] = list(previous)
        self.session_done = 0
        self.seen: set[str] = {
            str(s.get("id")) for r in previous for s in (r.get("signatures") or ())
        }
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self.live: Any = None
        self.console: Any = None
        self.runner: Runner | None = None
        if interactive:
            from rich.console import Console
            from rich.live import Live

            self.console = Console(file=self.out)
            self.live = Live(console=self.console, refresh_per_second=2, transient=True)

    def start(self) -> None:
        if self.live is not None:
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()

    def print(self, line: str) -> None:
        if self.console is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self.out, flush=True)

    # -- Observer -------------------------------------------------------------------------

    def started(self, case: Case) -> None:
        pass

    def finished(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)
        self.session_done += 1
        new = [s for s in (record.get("signatures") or ()) if str(s.get("id")) not in self.seen]
        for s in new:
            self.seen.add(str(s.get("id")))
        if record.get("matched") and not new:
            return
        if not record.get("matched"):
            self.print(f"MISMATCH {case_line(record)}")
        for s in new:
            self.print(
                f"new signature [{s.get('id')}] in {record.get('group') or record.get('variant')} "
                f"seed {record.get('seed')}: {s.get('kind')}: {s.get('summary')}"
            )
        self.print(f"    replay: {record.get('replay') or '-'}")

    def tick(self, runner: Runner) -> None:
        self.runner = runner
        if self.live is not None:
            self.live.update(self.render(runner))
        elif time.monotonic() - self.last_line >= self.every_s:
            self.last_line = time.monotonic()
            self.print(self.status_line(runner))

    # -- rendering ------------------------------------------------------------------------

    def progress_text(self, runner: Runner) -> str:
        elapsed = time.monotonic() - self.t0
        done = len(self.records)
        total = f"/{runner.total}" if runner.total is not None else ""
        rate = self.session_done / elapsed * 60 if elapsed > 0 else 0.0
        left = ""
        if runner.deadline is not None:
            left = f", {duration_text(max(runner.deadline - time.monotonic(), 0))} left"
        return (
            f"[{duration_text(elapsed)}] {self.title}: {done}{total} cases, "
            f"{runner.executor.busy()} running, {rate:.1f} cases/min{left}"
        )

    def status_line(self, runner: Runner) -> str:
        summary = summarize(self.records)
        per = ", ".join(f"{g.group} {g.defects}/{g.cases}" for g in summary.groups)
        return (
            f"{self.progress_text(runner)}; defects: {per or '-'}; "
            f"mismatches: {len(summary.mismatched)}"
        )

    def render(self, runner: Runner) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        summary = summarize(self.records)
        rows = group_rows(summary.groups)
        tbl = Table(*rows[0], box=None, pad_edge=False)
        for row in rows[1:]:
            tbl.add_row(*row)
        now = time.time()
        running = [
            f"  {where}: {case.key} ({now - since:.0f} s)"
            for case, where, since in runner.executor.running()
        ][:8]
        parts: list[Any] = [Text(self.progress_text(runner), style="bold")]
        if rows[1:]:
            parts.append(tbl)
        if running:
            parts.append(Text("\n".join(running), style="dim"))
        return Group(*parts)
