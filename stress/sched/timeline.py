"""A controlled run's interleaving, for people: a short timeline and trace events.

A schedule is a list of switches; between two of them one task ran.  The timeline
prints those stretches - who ran, over which steps, where it stopped (the point,
its arrival number, the source line) and why it stopped (preempted, blocked on a
lock, slept, finished) - so a reader sees the interleaving that led to the
verdict.  The same stretches become Chrome trace events on a "schedule" track,
timed in scheduling steps (1 step = 1 us on the trace's clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stress.sched.core import Switch

_WHY = {
    "preempt": "preempted",
    "block": "waits for a lock",
    "sleep": "sleeps",
    "wait": "waits",
    "exit": "ended",
    "relax": "spins (yields)",
    "start": "starts",
}


def stretches(switches: Sequence[Switch], end_step: int | None = None) -> list[dict[str, Any]]:
    """(task, from step, to step, stopped at, site, why) for each stretch of one task."""
    out: list[dict[str, Any]] = []
    prev = 0
    for s in switches:
        out.append(
            {
                "task": s.task,
                "from": prev + 1,
                "to": s.step,
                "point": s.point,
                "n": s.n,
                "site": s.site,
                "why": s.why,
                "next": s.to,
            }
        )
        prev = s.step
    if switches and end_step is not None and end_step > prev:
        out.append(
            {
                "task": switches[-1].to,
                "from": prev + 1,
                "to": end_step,
                "point": "",
                "n": 0,
                "site": "",
                "why": "end",
                "next": "",
            }
        )
    return out


def timeline_lines(
    switches: Sequence[Switch], end_step: int | None = None, last: int = 12
) -> list[str]:
    """The last `last` stretches as text lines (the ones that led to the verdict)."""
    rows = stretches(switches, end_step)
    if not rows:
        return ["(one task ran alone: no switch)"]
    lines = []
    if len(rows) > last:
        lines.append(f"... {len(rows) - last} earlier stretches")
    width = max(len(r["task"]) for r in rows[-last:])
    for r in rows[-last:]:
        span = f"steps {r['from']:,}-{r['to']:,}"
        if r["why"] == "end":
            stop = "until the verdict"
        else:
            at = f"{r['point']} #{r['n']}" if r["n"] > 1 else r["point"]
            where = f" ({r['site']})" if r["site"] else ""
            stop = f"until {at}{where}: {_WHY.get(r['why'], r['why'])}, {r['next']} runs"
        lines.append(f"{r['task']:<{width}}  {span:<22} {stop}")
    return lines


#: trace.json thread ids of the schedule rows (apart from the real threads' small ids).
TID_BASE = 100_000


def trace_events(
    switches: Sequence[Switch], *, pid: int, base: float, start: float, end: float
) -> list[dict[str, Any]]:
    """Chrome trace events: a "scheduled" row per task, one slice per stretch it ran.

    Slices are in wall-clock time (switch times relative to `base`, in microseconds),
    so they line up with the lock holds and walks of the same trace; each names the
    point the task stopped at, the source line and the steps it covered.
    """
    tids: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    prev_t, prev_step = start, 0
    rows: list[tuple[str, Switch | None]] = [(s.task, s) for s in switches]
    if switches:
        rows.append((switches[-1].to, None))
    for task, sw in rows:
        if task not in tids:
            tids[task] = TID_BASE + len(tids)
            events.append(
                {
                    "ph": "M",
                    "pid": pid,
                    "tid": tids[task],
                    "name": "thread_name",
                    "args": {"name": f"{task} (scheduled)"},
                }
            )
        t1 = sw.t if sw is not None and sw.t else end
        args: dict[str, Any] = {"steps": f"{prev_step + 1}-{sw.step if sw else 'end'}"}
        if sw is not None:
            args.update(
                {"until": sw.point, "arrival": sw.n, "site": sw.site, "why": sw.why, "next": sw.to}
            )
        events.append(
            {
                "ph": "X",
                "cat": "schedule",
                "pid": pid,
                "tid": tids[task],
                "name": sw.point if sw is not None else "runs",
                "ts": round((prev_t - base) * 1e6, 3),
                "dur": round(max(t1 - prev_t, 0.0) * 1e6, 3),
                "args": args,
            }
        )
        if sw is not None:
            prev_t, prev_step = t1, sw.step
    return events
