"""Controlled workload cases: the same seed gives the same defect with the same objects,
reproducers replay it, and a case becomes a concurrent program that fails the same way."""

from __future__ import annotations

import dataclasses

import pytest

from rmapsim.cprogram import parse_concurrent
from rmapsim.workload import run_case
from rmapsim.workload.lanes import program_from_workload, run_concurrent
from rmapsim.workload.scenario import Schedule
from rmapsim.workload.shrink import preemptions, shrink_program
from stress.sched.repro import Reproducer, verdict_objects
from tests.workload.workload_support import inprocess_config, tiny_scenario


def controlled(strategy: str = "random", **changes: object) -> object:
    scn = tiny_scenario(duration_s=4.0, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(scn, schedule=Schedule(mode="controlled", strategy=strategy))


def key(result: object) -> tuple[object, ...]:
    vs = sorted(result.verdicts, key=lambda v: v.at_s)  # type: ignore[attr-defined]
    v = vs[0] if vs else None
    return (
        result.outcome,  # type: ignore[attr-defined]
        v and v.kind,
        v and v.signature,
        v and tuple(verdict_objects(v)),
        result.stats["schedule"]["steps"],  # type: ignore[attr-defined]
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["pct", "random", "round-robin"])
def test_the_same_seed_gives_the_same_defect_and_objects(strategy: str) -> None:
    scn = controlled(strategy)
    cfg = inprocess_config(scn)  # type: ignore[arg-type]
    first = run_case(scn, "2.6.34-rc3", 2, config=cfg)  # type: ignore[arg-type]
    assert first.outcome == "defect"
    assert first.reproducer is not None
    again = run_case(scn, "2.6.34-rc3", 2, config=cfg)  # type: ignore[arg-type]
    assert key(again) == key(first)
    assert key(first)[3], "the verdict names the objects it involves"


@pytest.mark.timeout(120)
def test_a_reproducer_file_replays_switch_for_switch(tmp_path: object) -> None:
    scn = controlled("random")
    cfg = inprocess_config(scn)  # type: ignore[arg-type]
    first = run_case(scn, "hannes-merge", 3, config=cfg)  # type: ignore[arg-type]
    assert first.reproducer is not None
    path = first.reproducer.save(tmp_path / "r.json")  # type: ignore[operator]
    rep = Reproducer.load(path)
    assert rep.kind == "workload" and rep.target["variant"] == "2.6.34-rc3+hannes-merge"
    assert rep.verdict["kind"] == first.verdicts[0].kind
    replayed = run_case(scn, "hannes-merge", 3, config=cfg, replay=rep)  # type: ignore[arg-type]
    assert key(replayed) == key(first)
    assert replayed.stats["schedule"]["diverged"] == []


@pytest.mark.timeout(120)
def test_the_released_kernel_stays_clean_under_controlled_schedules() -> None:
    for strategy in ("pct", "random"):
        scn = controlled(strategy)
        result = run_case(scn, "2.6.34", 1, config=inprocess_config(scn))  # type: ignore[arg-type]
        assert result.outcome == "clean", [v.summary for v in result.verdicts]
        assert result.reproducer is None
        assert result.stats["schedule"]["steps"] == result.stats["schedule"]["max_steps"]


@pytest.mark.timeout(180)
def test_a_case_becomes_a_small_concurrent_program_with_the_same_defect() -> None:
    scn = controlled("random")
    first = run_case(scn, "2.6.34-rc3", 2, config=inprocess_config(scn))  # type: ignore[arg-type]
    rep = first.reproducer
    assert rep is not None
    prog = program_from_workload(rep.target["operations"], rep.switches)
    mem = {"memory": "kasan", "slab_page_bytes": 768, "min_partial": 0}
    again = run_concurrent(parse_concurrent(prog.render(), "case"), "2.6.34-rc3", **mem)
    v = first.verdicts[0]
    assert again.key() == (v.kind, v.signature)
    assert verdict_objects(again.first) == verdict_objects(v)  # the very same objects
    small, stats = shrink_program(prog, "2.6.34-rc3", key=(v.kind, v.signature), budget_s=60, **mem)
    assert small.operations < prog.operations
    assert small.operations <= 40 and len(small.lanes) <= 10, small.render()
    assert run_concurrent(small, "2.6.34-rc3", **mem).key() == (v.kind, v.signature)
    assert preemptions(small) <= preemptions(prog)
    assert stats.tried > 0


@pytest.mark.timeout(240)
def test_a_race_only_threads_reach_is_found_under_control() -> None:
    """rik-v2's unlocked chain clone: no sequential program shows it (300 s of hunt)."""
    from pathlib import Path

    from rmapsim.workload import load_scenario, watchdog_config

    path = Path(__file__).resolve().parents[2] / "scenarios" / "rik-v2-race.toml"
    scn = load_scenario(path)
    variant = "2.6.34+rik-v2+clone-sets-anon-vma"
    assert scn.expected(variant) == "defect" and scn.schedule.controlled
    found = []
    for seed in scn.seeds:
        r = run_case(scn, variant, seed, config=watchdog_config(scn, on_stuck="raise"))
        if r.outcome == "defect":
            found.append(sorted(r.verdicts, key=lambda v: v.at_s)[0])
    assert found, "no seed of the race scenario showed the race"
    # The symptom is the orphaned anon_vma_chain's freed vma, reached by a walk.
    assert any(v.kind == "use-after-free" and "vm_area_struct" in v.summary for v in found)


@pytest.mark.timeout(120)
def test_a_signal_ends_the_search_for_a_controlled_schedule() -> None:
    # `run` looks for a controlled schedule after a free-running defect; a Ctrl-C then
    # must end the search (and cut its running attempt short), not wait out the budget.
    import os
    import signal
    import threading
    import time

    from rmapsim.workload.determinize import find_controlled
    from stress import Interrupts

    scn = tiny_scenario(duration_s=600.0)
    started = threading.Event()
    with Interrupts() as stop:

        def ctrl_c() -> None:
            started.wait(60)
            time.sleep(1.0)  # most likely inside the first attempt; before it works too
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=ctrl_c, name="ctrl-c", daemon=True).start()
        started.set()
        # A verdict no attempt can show: without the signal it would search for 600 s.
        found = find_controlled(
            scn, "2.6.34", 1, "deadlock", "no such signature", budget_s=600.0, interrupts=stop
        )
    assert stop.name == "SIGINT"
    assert not found.found
    assert found.attempts == 1  # the attempt running then was cut short; none followed
    assert found.seconds < 600.0
