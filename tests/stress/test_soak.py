"""A heavily contended clean run of 30 s: the watchdog must stay silent.

Eight threads hammer a few locks of three classes in one consistent order
(mmap_sem -> anon_vma -> page_table_lock), walk sound bounded lists under the
locks, pause now and then, and report every operation.  Any verdict here is a
false alarm.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from stress import Config, Monitor

SOAK_S = 30.0


class Node:
    __slots__ = ("name", "next")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next: Node = self


def make_list(size: int) -> Node:
    head = Node("head")
    node = head
    for i in range(size):
        node.next = Node(f"n{i}")
        node = node.next
    node.next = head
    return head


@pytest.mark.soak
@pytest.mark.timeout(SOAK_S + 60)
def test_contended_clean_run_has_no_verdict(tmp_path: Path) -> None:
    # Holds here last microseconds; the budgets leave room for a thread the OS or the GIL
    # does not schedule for a while on a loaded 2-core machine (seen: 0.5 s).
    cfg = Config(
        duration_s=SOAK_S,
        status_every_s=5.0,
        backstop_s=20.0,
        hold_s=1.0,
        verdict_s=2.5,
        test_timeout_s=SOAK_S + 60,
        on_stuck="raise",
    )
    mon = Monitor(cfg, name="soak", emergency_dir=tmp_path)
    sems = [mon.rwsem("mmap_sem", f"mmap_sem#{i}") for i in range(2)]
    avs = [mon.spinlock("anon_vma", f"anon_vma#{i}") for i in range(3)]
    ptls = [mon.spinlock("page_table_lock", f"ptl#{i}") for i in range(2)]
    lists = {av.name: make_list(12) for av in avs}

    def walk(av: Any) -> None:
        head = lists[av.name]
        with mon.walk("page_referenced_anon", av.name, lock=av, bound=24) as w:
            node = head.next
            while node is not head:
                w.step()
                node = node.next

    def process(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            sem = rng.choice(sems)
            if rng.random() < 0.1:
                with sem.write(), rng.choice(ptls):
                    sum(range(50))
            else:
                with sem.read(), rng.choice(avs) as _, rng.choice(ptls):
                    sum(range(20))
            mon.progress()

    def reclaim(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            av = rng.choice(avs)
            with av:
                walk(av)
            mon.progress()

    def hibernate() -> None:
        while True:
            mon.pause(0.05)
            for av in avs:
                with av:
                    walk(av)
                mon.progress()

    for i in range(5):
        mon.spawn(process, i, name=f"proc-{i}")
    for i in range(2):
        mon.spawn(reclaim, 100 + i, name=f"kswapd-{i}")
    mon.spawn(hibernate, name="hibernate")
    result = mon.run()

    assert result.verdicts == [], "\n".join(v.text() for v in result.verdicts)
    assert result.late == [] and result.errors == [] and result.stuck == []
    assert result.outcome == "clean"
    assert result.cancel_reason == f"end of budget ({SOAK_S:g} s)"
    stats = result.stats
    # Real work, real contention (a tenth of what an idle machine does: the suite must
    # also pass beside other work).
    assert stats["ops"] > 2_000 and stats["walks"] > 500
    assert stats["lock_classes"]["anon_vma"]["contentions"] > 10  # it really was contended
    assert stats["lock_classes"]["mmap_sem"]["contentions"] > 1
    # It kept watching all along (on a loaded machine its period stretches).
    assert stats["watchdog"]["polls"] > 0.2 * SOAK_S / cfg.poll_s
