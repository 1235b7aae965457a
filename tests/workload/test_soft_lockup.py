"""spin_lock on a word that is no longer a lock: reported at once on one CPU, spun on
(and named by the watchdog, with the word and its new owner) on real threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rmapsim import Kernel, SingleThreadSync, mmap
from rmapsim.errors import Lockup
from rmapsim.kernel import SpinState
from rmapsim.stale import LockWordView
from stress import Config, Monitor

pytestmark = pytest.mark.timeout(60)

CONFIG = Config(
    poll_s=0.02,
    walk_s=0.1,
    hold_s=0.5,
    verdict_s=1.5,
    duration_s=4.0,
    grace_s=2.0,
    backstop_s=5.0,
    on_stuck="raise",
)
VM_FLAGS_WORD = 5  # struct vm_area_struct: vm_flags is word 5


def dead_lock_word(k: Kernel) -> tuple[Any, LockWordView]:
    """A vma whose vm_flags word, read as a ticket lock, is taken (0x73: owner 0x73, next 0)."""
    vma = mmap.vma_zalloc(k)
    vma.vm_flags = 0x73
    return vma, LockWordView(k.mem, vma.addr + VM_FLAGS_WORD * 8)


def harness_kernel(mon: Monitor) -> Kernel:
    k = Kernel("2.6.34", sync=mon)

    def relax(where: str) -> None:
        mon.checkpoint()
        time.sleep(0)

    k.relax_point = relax
    k.spin_tracker = lambda st: mon.spin(st.what, st.subject(), evidence=st.evidence).begin()
    return k


def test_one_cpu_reports_the_spin_at_once() -> None:
    k = Kernel("2.6.34", sync=SingleThreadSync())
    assert k.single_cpu
    _, word = dead_lock_word(k)
    with pytest.raises(Lockup, match="no longer a spinlock"):
        word.acquire()


def test_on_real_threads_the_cpu_spins_and_the_watchdog_names_it() -> None:
    mon = Monitor(CONFIG, name="soft-lockup")
    k = harness_kernel(mon)
    assert not k.single_cpu
    vma, word = dead_lock_word(k)
    page_lock = mon.spinlock("page_lock", "page#3.lock")

    def kswapd() -> None:
        with page_lock:
            mon.progress()
            word.acquire()  # spin_lock(&anon_vma->lock) through a stale pointer

    def victim() -> None:
        while not page_lock.locked():
            mon.pause(0.001)
        with page_lock:
            pass

    spinner = mon.spawn(kswapd, name="kswapd-0")
    mon.spawn(victim, name="p1/t0", tracked=False)
    result = mon.run()
    assert [v.kind for v in result.verdicts] == ["livelock"]
    (v,) = result.verdicts
    assert v.summary.startswith("soft lockup: kswapd-0 has spun ")
    assert f"on lock word @{word.addr:#x} ({vma.name}.vm_flags [vm_area_struct])" in v.summary
    ev = v.evidence
    assert ev["lock_word"] == f"{word.addr:#x}" and ev["my_ticket"] == "0x00"
    assert ev["memory_now"] == f"{vma.name}.vm_flags [vm_area_struct]"
    assert ev["word_now"] == f"{0x0173:#018x}"  # the ticket taken scribbled on vm_flags
    assert ev["held"] == ["page#3.lock"] and ev["waiters"] == 1
    assert any("p1/t0 waits for page#3.lock" in line for line in v.chain)
    funcs = [f.func for f in v.stacks["kswapd-0"]]
    assert "kswapd" in funcs and "acquire" in funcs and "_spin_on_word" in funcs
    assert spinner.error is None  # cancelled, not crashed
    assert mon.spins == {}


def test_a_spinner_gets_through_when_another_cpu_rewrites_the_word() -> None:
    mon = Monitor(CONFIG.replace(duration_s=2.0), name="soft-lockup-ends")
    k = harness_kernel(mon)
    vma, word = dead_lock_word(k)
    got = threading.Event()
    spins: list[SpinState] = []
    track = k.spin_tracker
    assert track is not None

    def tracked(st: SpinState) -> Any:
        spins.append(st)
        return track(st)

    k.spin_tracker = tracked

    def spinner() -> None:
        word.acquire()
        got.set()

    def writer() -> None:
        while not spins:
            mon.pause(0.001)
        mon.pause(0.05)
        vma.vm_flags = 0x0100  # the new owner stores a value whose owner byte is 0

    mon.spawn(spinner, name="kswapd-0", tracked=False)
    mon.spawn(writer, name="other-cpu", tracked=False)
    result = mon.run()
    assert got.is_set() and result.outcome == "clean"
    assert vma.vm_flags == 0x0100
