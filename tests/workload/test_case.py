"""One case on real threads, in process: defects with evidence, clean runs, the harness's
own failure modes (a model bug, a list-loop) and the plumbing (RNGs, plain locks)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from rmapsim import rmap
from rmapsim.kernel import Kernel
from rmapsim.structs import VM_READ, VM_WRITE
from rmapsim.variants import parse_variant
from rmapsim.workload import run_case
from rmapsim.workload.actors import BASE, World
from rmapsim.workload.scenario import Threads
from stress import Monitor, Mutex, RWSem
from tests.workload.workload_support import inprocess_config, tiny_scenario

#: "<thread>: <operation> ..." as the workload names the sites of a use-after-free.
SITE = re.compile(
    r"^(?P<thread>p\d+/t\d+|kswapd-\d+|hibernate|keeper): "
    r"(?P<op>touch|mmap|mprotect|munmap|fork|exit|spawn|reclaim|swapout) "
)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("variant", ["2.6.34-rc3", "rik-v2-dst", "hannes-merge"])
def test_prefix_kernel_in_kasan_names_the_use_after_free(variant: str) -> None:
    # A long budget: the case stops at its first defect, however slow the machine.
    scn = tiny_scenario(duration_s=20.0)
    result = run_case(scn, variant, 1, config=inprocess_config(scn))
    assert result.outcome == "defect", result.cancel_reason
    assert not result.cancel_reason.startswith("end of budget")
    uafs = [v for v in result.verdicts if v.kind == "use-after-free"]
    assert uafs, [v.kind for v in result.verdicts]
    ev = uafs[0].evidence
    sites = {}
    for key in ("allocated_at", "freed_at", "accessed_at"):
        match = SITE.match(str(ev[key]))
        assert match, f"{key}: {ev[key]!r}"
        sites[key] = match
        assert str(ev[key]) in uafs[0].summary
    # The access is the thread that reported it, on its own operation.
    assert sites["accessed_at"]["thread"] in uafs[0].threads
    assert str(ev["while"]) == str(ev["accessed_at"])
    assert result.meta["variant"] == variant and result.meta["memory"] == "kasan"
    assert result.first_defect_s is not None and result.first_defect_s < scn.duration_s
    assert result.stats["model"]["walks"] > 0
    # The path of modelled kernel functions the defect was raised in, outermost first:
    # it ends in the function KASAN blames, with no raise helper or memory plumbing.
    path = str(ev["kernel_path"]).split(" > ")
    assert path[-1] == ev["function"], (path, ev["function"])
    assert not {"get", "set_", "_walk", "_forward", "op", "guarded"} & set(path), path


@pytest.mark.timeout(30)
def test_rik_v2_bug_carries_its_kernel_path() -> None:
    scn = tiny_scenario(duration_s=20.0)
    result = run_case(scn, "rik-v2", 3, config=inprocess_config(scn))
    bug = next(v for v in result.verdicts if "BUG_ON(!anon_vma)" in v.summary)
    path = str(bug.evidence["kernel_path"]).split(" > ")
    # A first write fault: on an empty PTE (do_anonymous_page) or the zero page (do_wp_page).
    assert path[-2:] == ["page_add_new_anon_rmap", "__page_set_anon_rmap"], path
    assert path[-3] in ("do_anonymous_page", "do_wp_page"), path


@pytest.mark.timeout(30)
@pytest.mark.parametrize("memory", ["kasan", "reuse"])
def test_fixed_kernel_stays_clean(memory: str) -> None:
    scn = tiny_scenario(duration_s=2.5, memory=memory)
    result = run_case(scn, "2.6.34", 2, config=inprocess_config(scn))
    assert result.outcome == "clean", [v.text() for v in result.verdicts]
    assert result.verdicts == [] and result.errors == [] and result.stuck == []
    assert result.cancel_reason == "end of budget (2.5 s)"
    assert result.duration_s >= 2.5
    stats = result.stats
    # How much gets done depends on the machine's load; that it is counted does not.
    assert stats["ops"] > 0 and stats["walks"] > 0  # tracked walks: instrumented
    assert {"anon_vma", "mmap_sem"} <= set(stats["lock_classes"])
    assert stats["model"]["processes_made"] >= scn.threads.processes
    assert stats["model"]["double_frees"] == 0


def _draws(world: World, name: str) -> list[float]:
    """What a thread named `name` draws first from its RNG, in a real thread of that name."""
    out: list[float] = []

    def body() -> None:
        rng = world.rng(threading.current_thread().name)
        assert world.tls.rng is rng
        out.extend(rng.random() for _ in range(5))

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    t.join(5.0)
    assert not t.is_alive()
    return out


@pytest.mark.timeout(30)
def test_thread_rngs_are_derived_from_seed_and_thread_name() -> None:
    scn = tiny_scenario()
    v = parse_variant("2.6.34")
    first = World(scn, v, Monitor(inprocess_config(scn)), 11)
    second = World(scn, v, Monitor(inprocess_config(scn)), 11)
    other_seed = World(scn, v, Monitor(inprocess_config(scn)), 12)
    a = _draws(first, "p3/t1")
    assert len(a) == 5
    assert _draws(second, "p3/t1") == a
    assert _draws(first, "p3/t0") != a
    assert _draws(other_seed, "p3/t1") != a
    assert getattr(first.tls, "rng", None) is None  # each thread has its own


@pytest.mark.timeout(30)
def test_uninstrumented_world_uses_plain_locks() -> None:
    scn = tiny_scenario()
    v = parse_variant("2.6.34")
    locks: dict[bool, tuple[Any, Any, Any]] = {}
    for instrumented in (True, False):
        world = World(scn, v, Monitor(inprocess_config(scn)), 1, instrumented=instrumented)
        k = world.k
        k.spawn("P")
        k.mmap("P", BASE, 1, VM_READ | VM_WRITE)
        k.touch("P", BASE, 1, True)
        mm = k.tasks["P"]
        page = mm.ptes[BASE].page
        assert page is not None and page.mapping is not None
        locks[instrumented] = (mm.mmap_sem, mm.page_table_lock, page.mapping.lock)
    sem, ptl, av_lock = locks[True]
    assert isinstance(sem, RWSem) and isinstance(ptl, Mutex) and isinstance(av_lock, Mutex)
    sem, ptl, av_lock = locks[False]
    assert not isinstance(sem, RWSem)
    assert not isinstance(ptl, Mutex) and not isinstance(av_lock, Mutex)


@pytest.mark.timeout(30)
def test_uninstrumented_run_still_counts_walks() -> None:
    scn = tiny_scenario(duration_s=1.5)
    result = run_case(scn, "2.6.34", 1, config=inprocess_config(scn), instrumented=False)
    assert result.outcome == "clean", [v.text() for v in result.verdicts]
    assert result.stats["model"]["walks"] > 0
    assert result.stats["ops"] > 0
    # No lock or walk of the model went through the monitor; nothing was traced.
    assert result.stats["lock_classes"] == {}
    assert result.stats["walks"] == 0
    assert result.trace_events == []


@pytest.mark.timeout(30)
def test_model_bug_is_an_error_not_a_defect(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_touch(self: Kernel, name: str, addr: int, npages: int, write: bool) -> int:
        raise RuntimeError("injected model bug")

    monkeypatch.setattr(Kernel, "touch", broken_touch)
    scn = tiny_scenario(duration_s=20.0)
    result = run_case(scn, "2.6.34-rc3", 1, config=inprocess_config(scn))
    assert result.outcome == "error"
    assert result.verdicts == []
    assert result.errors and "RuntimeError: injected model bug" in result.errors[0]
    assert result.cancel_reason.startswith("internal error in p")
    assert "RuntimeError: injected model bug" in result.cancel_reason
    assert result.duration_s < scn.duration_s  # it stopped at once, not at the budget


@pytest.mark.timeout(30)
def test_endless_walk_in_the_model_is_a_list_loop_under_the_anon_vma_lock() -> None:
    scn = tiny_scenario(duration_s=20.0)
    cfg = inprocess_config(scn)
    mon = Monitor(cfg, name="list-loop self-test")
    world = World(scn, parse_variant("2.6.34"), mon, 1)
    k = world.k
    # P maps a page; C and D are forked and write it, so they map copies: their
    # anon_vma_chains stay on the anon_vma's list but do not map P's page.
    k.spawn("P")
    k.mmap("P", BASE, 1, VM_READ | VM_WRITE)
    k.touch("P", BASE, 1, True)
    for child in ("C", "D"):
        k.fork("P", child)
        k.touch(child, BASE, 1, True)
    page = k.tasks["P"].ptes[BASE].page
    assert page is not None and page.mapping is not None
    anon_vma = page.mapping
    nodes = []
    node = anon_vma.head.next
    while node is not anon_vma.head:
        nodes.append(node)
        node = node.next
    assert len(nodes) == 3
    # Corrupt the list into a ring C -> D -> C that no longer passes through the head.
    nodes[2].next = nodes[1]
    anon_vma.head.next = nodes[1]

    def walker() -> None:
        world.rng("kswapd-0")
        rmap.page_referenced(k, page)
        mon.progress()

    mon.spawn(world.guarded, walker, name="kswapd-0")
    started = time.monotonic()
    result = mon.run()
    elapsed = time.monotonic() - started

    assert result.outcome == "defect"
    loops = [v for v in result.verdicts if v.kind == "list-loop"]
    assert len(loops) == 1, [v.kind for v in result.verdicts]
    verdict = loops[0]
    lock_name = anon_vma.lock.name
    assert lock_name.startswith("anon_vma@") and lock_name in verdict.locks
    assert verdict.evidence["lock"] == lock_name and "anon_vma" in verdict.lock_classes
    assert "kswapd-0" in verdict.threads and verdict.evidence["walk"] == "page_referenced_anon"
    assert result.cancel_reason.startswith("list-loop: kswapd-0 loops in page_referenced_anon")
    # The walker kept spinning (as the CPU did) until the run was cancelled.
    walks = [
        e
        for e in result.trace_events
        if e.get("cat") == "walk" and e["name"] == "walk page_referenced_anon"
    ]
    assert len(walks) == 1
    args = walks[0]["args"]
    assert args["ended"] == "Cancelled"
    assert args["steps"] > 50 * args["bound"]
    assert verdict.evidence["bound"] == args["bound"]
    # The case ended within its budget: the verdict, the linger, the cancellation.
    assert result.first_defect_s is not None and result.first_defect_s < scn.duration_s
    assert result.duration_s < scn.duration_s and elapsed < scn.duration_s
    assert result.stuck == [] and result.late == []


@pytest.mark.timeout(40)
def test_compaction_migrates_pages_and_2_6_36_stays_clean() -> None:
    scn = tiny_scenario(
        duration_s=2.0,
        memory="reuse",
        threads=Threads(
            processes=4, threads_per_process=2, reclaim_walkers=1, compactors=1
        ),
    )
    result = run_case(scn, "2.6.36", 1, config=inprocess_config(scn))
    assert result.outcome == "clean", [v.summary for v in result.verdicts]
    assert result.stats["model"]["pages_migrated"] > 0
