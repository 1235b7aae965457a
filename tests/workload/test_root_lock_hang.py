"""Hugh's hang on anon_vma->root->lock (f18194275c39), forced step by step on real threads.

kswapd-0 checks that a page of C is mapped and is held in page_lock_anon_vma's window
while C exits (its anon_vma A is freed).  Another thread holds the root's lock, so
kswapd-0, having read A->root, spins on it; meanwhile Q's first write fault reuses
A's memory as a new anon_vma, its own root.  When kswapd-0 gets the root's lock and
later unlocks through A->root, 2.6.35 unlocks A's lock instead: the root's lock stays
held by nobody, and the watchdog says so.  2.6.36 checks page_mapped() again under
the lock and unlocks the root it locked.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rmapsim import Kernel, rmap
from rmapsim.structs import VM_READ, VM_WRITE
from stress import Config, Monitor

pytestmark = pytest.mark.timeout(60)

RW = VM_READ | VM_WRITE
BASE = 0x10000
CONFIG = Config(
    poll_s=0.02,
    walk_s=0.1,
    hold_s=1.0,
    verdict_s=2.0,
    duration_s=3.0,
    grace_s=2.0,
    backstop_s=5.0,
    on_stuck="raise",
)


def force_the_race(variant: str) -> tuple[Any, dict[str, Any]]:
    mon = Monitor(CONFIG, name=f"root-lock {variant}")
    window = threading.Event()
    go = threading.Event()
    held = threading.Event()
    release = threading.Event()
    facts: dict[str, Any] = {}

    def hook(where: str) -> None:
        if threading.current_thread().name == "kswapd-0" and where.startswith(
            "page_lock_anon_vma"
        ):
            window.set()
            go.wait(10)

    k = Kernel(variant, memory="reuse", sync=mon, yield_point=hook)
    k.spawn("P")
    k.mmap("P", BASE, 1, RW)
    k.touch("P", BASE, 1, True)
    k.fork("P", "C")
    k.touch("C", BASE, 1, True)  # C's own copy: its mapping is C's anon_vma A
    page = k.task("C").ptes[BASE].page
    assert page is not None
    a = page.mapping
    root = a.root
    assert root is not a
    facts.update(root_lock=root.lock.name, a_lock=a.lock.name)

    def kswapd() -> None:
        k.get_page(page)  # isolated from the LRU
        rmap.page_referenced(k, page)
        k.put_page(page)
        facts["walked"] = True
        while True:
            mon.pause(0.01)

    def holder() -> None:
        root.lock.acquire()  # someone else working on the tree
        held.set()
        release.wait(10)
        root.lock.release()

    def orchestrate() -> None:
        assert window.wait(10)
        k.exit("C")  # the page is unmapped and A freed
        facts["a_freed"] = a.state != 1
        mon.spawn(holder, name="holder", tracked=False)
        assert held.wait(10)
        go.set()  # kswapd-0 reads A->root and spins on the root's lock
        deadline = time.monotonic() + 10
        while not root.lock.waiters() and time.monotonic() < deadline:
            time.sleep(0.001)
        k.spawn("Q")
        k.mmap("Q", BASE, 1, RW)
        k.touch("Q", BASE, 1, True)  # a fresh anon_vma: A's memory, its own root now
        facts["a_reused_as_root"] = a.state == 1 and a.root is a
        release.set()

    mon.spawn(kswapd, name="kswapd-0")
    mon.spawn(orchestrate, name="orchestrator", tracked=False)
    result = mon.run()
    return result, facts


def test_2_6_35_unlocks_another_root_and_the_root_lock_leaks() -> None:
    result, facts = force_the_race("2.6.35")
    assert facts["a_freed"] and facts["a_reused_as_root"] and facts["walked"]
    assert [v.kind for v in result.verdicts] == ["leaked-lock"], [
        v.summary for v in result.verdicts
    ]
    (v,) = result.verdicts
    ev = v.evidence
    assert ev["lock"] == facts["root_lock"] and ev["lock"].endswith("[root]")
    assert ev["taken_by"] == "kswapd-0"
    assert "in page_lock_anon_vma: anon_vma_lockptr(k, anon_vma).acquire()" in ev["taken_at"]
    assert ev["unlock_went_to"] == facts["a_lock"]
    assert "in page_unlock_anon_vma" in ev["unlock_at"]
    assert v.summary.startswith(f"{facts['root_lock']} is held by nobody inside it")


def test_2_6_36_checks_page_mapped_under_the_lock_and_stays_clean() -> None:
    result, facts = force_the_race("2.6.36")
    assert facts["a_freed"] and facts["a_reused_as_root"] and facts["walked"]
    assert result.outcome == "clean", [v.summary for v in result.verdicts]
