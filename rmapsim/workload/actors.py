"""The threads of a stress case: processes, reclaim walkers, hibernation, the auditor.

Each modelled process is a group of threads sharing one mm: any of them faults,
maps, unmaps and mprotects (faults under mmap_sem held for reading, the rest for
writing, as the kernel does); the first thread also forks and exits, and the
population of processes is kept between bounds.  Reclaim walkers run
page_referenced and try_to_unmap over the LRU, and the hibernation worker swaps
everything out now and then so that the processes fault it back in.

The threads run under a stress `Monitor`: the model's locks are the monitor's
instrumented locks, its walks are tracked walks, and a defect the model raises is
reported through `Monitor.report_defect` with the thread's stack.  Every thread
draws from its own RNG, derived from the case's seed and the thread's name.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from rmapsim import migrate, swap
from rmapsim.atomic import atomic_read
from rmapsim.audit import audit
from rmapsim.errors import KernelDefect, ListLoop
from rmapsim.kernel import Kernel, SpinState
from rmapsim.lists import describe_node
from rmapsim.program import null_deref, prot_text
from rmapsim.stale import MEMORY_MODULES
from rmapsim.structs import PAGE_SIZE, VM_EXEC, VM_READ, VM_WRITE
from rmapsim.sync import ThreadingSync
from rmapsim.variants import Variant
from rmapsim.walk import WalkState
from rmapsim.workload.scenario import Scenario

PROTS = (VM_READ | VM_WRITE, VM_READ | VM_WRITE | VM_EXEC, VM_READ, VM_READ | VM_WRITE, 0)
BASE = 0x10000


#: Frames of the model that only carry a defect (raise helpers, lock wrappers).
_PLUMBING = {
    "guarded",
    "op",
    "report",
    "VM_BUG_ON",
    "BUG_ON",
    "acquire",
    "release",
    "anon_vma_lockptr",
    "anon_vma_lock",
    "anon_vma_unlock",
}


def kernel_path(exc: BaseException) -> str:
    """The modelled kernel functions the defect was raised in, outermost first."""
    names: list[str] = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        module = tb.tb_frame.f_globals.get("__name__", "")
        model = (
            module.startswith("rmapsim.")
            and not module.startswith("rmapsim.workload")
            and module not in MEMORY_MODULES
        )
        if model and code.co_name not in _PLUMBING and "<" not in code.co_name:
            names.append(code.co_name)
        tb = tb.tb_next
    return " > ".join(names)


class Gate:
    """Operations go through it shared; the auditor takes it alone, stopping the world.

    Writer-preferring, with a bounded wait: an auditor that cannot stop the world in
    time (a thread is stuck inside an operation) gives up on that audit.  In a
    controlled run (one thread at a time) the waits go through the scheduler.
    """

    def __init__(self, mon: Any = None) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._closing = False
        self._mon = mon if mon is not None and getattr(mon, "controlled", False) else None

    def enter(self) -> None:
        if self._mon is not None:
            if self._closing:
                self._mon.wait_until(lambda: not self._closing, "gate")
            self._active += 1
            return
        with self._cond:
            while self._closing:
                self._cond.wait(0.05)
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        if self._mon is not None:
            self._closing = True
            self._mon.wait_until(lambda: self._active == 0, "gate close")
            return True
        with self._cond:
            self._closing = True
            deadline = time.monotonic() + timeout
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._closing = False
                    self._cond.notify_all()
                    return False
                self._cond.wait(left)
            return True

    def open(self) -> None:
        with self._cond:
            self._closing = False
            self._cond.notify_all()


class Proc:
    """One modelled process: its name, its threads, and a shadow of what it maps."""

    def __init__(self, name: str, mapped: dict[int, int]) -> None:
        self.name = name
        self.mapped = dict(mapped)  # window page -> prot, as this process last set it
        self.lock = threading.Lock()
        self.dying = threading.Event()
        self.running = 0
        self.idle = threading.Condition(threading.Lock())


class KernelHarness:
    """What every real-thread driver of a kernel shares: its hooks into the Monitor.

    Walk tracking (and, controlled, a scheduling point per step), endless walks kept
    spinning as the CPU did, spins on dead lock words declared to the watchdog, and
    defects reported with the raising thread's stack.
    """

    k: Kernel
    mon: Any
    internal_errors: list[str]

    def __init__(self) -> None:
        self._walk_points: dict[str, str] = {}
        self.internal_errors = []

    def walk_point(self, st: WalkState) -> None:
        """Controlled runs: every list-walk step is a scheduling point."""
        name = self._walk_points.get(st.what)
        if name is None:
            name = self._walk_points[st.what] = f"walk:{st.what}"
        self.mon.step_point(name)

    def track_spin(self, st: SpinState) -> Any:
        """A CPU spinning on a dead lock word: the watchdog names it if it never ends."""
        return self.mon.spin(st.what, st.subject(), evidence=st.evidence).begin()

    def track(self, st: WalkState) -> Any:
        lock = st.lock if hasattr(st.lock, "lock_class") else None
        return self.mon.walk(st.what, describe_node(st.head), lock=lock, bound=st.bound).begin()

    def on_loop(self, st: WalkState, exc: ListLoop) -> bool:
        """A walk past its bound: report it with its cycle, and keep the CPU spinning."""
        if st.handle is not None:
            if not st.handle.reported:  # once: later laps (and a late verdict) add nothing
                st.handle.cycle(exc.details.get("cycle", []))
            return True  # the walk's next step raises once the run is cancelled
        return False

    # -- plumbing ----------------------------------------------------------------------

    def guarded(self, body: Callable[[], None]) -> None:
        """Run an actor; a defect of the modelled kernel is reported, as an oops would be.

        Like an oops, it ends the thread where it stands: locks it holds stay held.
        """
        try:
            body()
        except KernelDefect as exc:
            self.report(exc)
        except AttributeError as exc:
            oops = null_deref(exc)
            if oops is None:
                self.internal(exc)
            else:
                self.report(oops)
        except Exception as exc:
            self.internal(exc)

    def internal(self, exc: BaseException) -> None:
        """A bug of the model itself: never passed off as a kernel defect."""
        where = threading.current_thread().name
        self.internal_errors.append(f"{where}: {type(exc).__name__}: {exc}")
        self.mon.internal_error(where, exc)
        self.mon.cancel(f"internal error in {where}: {type(exc).__name__}: {exc}")

    def report(self, exc: KernelDefect) -> None:
        site = self.k.mem.current_site()
        evidence = {"while": site, **exc.details} if site else dict(exc.details)
        path = kernel_path(exc)
        if path:
            evidence["kernel_path"] = path
        self.mon.report_defect(exc.kind, exc.summary, evidence=evidence, exc=exc)


class World(KernelHarness):
    """The kernel of one case and every actor that puts it under load."""

    def __init__(
        self, scn: Scenario, variant: Variant, mon: Any, seed: int, *, instrumented: bool = True
    ) -> None:
        super().__init__()
        self.scn = scn
        self.mon = mon
        self.seed = seed
        controlled = bool(getattr(mon, "controlled", False))
        self.controlled = controlled
        # Instrumented: the monitor's locks (holders, waiters, lockdep, lock_stat) and
        # tracked walks.  Without: plain threading locks and untracked walks, the
        # baseline the instrumentation's cost is measured against.
        self.k = Kernel(
            variant,
            memory=scn.memory.mode,
            sync=mon if instrumented else ThreadingSync(),
            debug_list=scn.memory.debug_list,
            slab_page_bytes=scn.memory.slab_page_bytes,
            min_partial=scn.memory.min_partial,
            walk_tracker=self.track if instrumented else None,
            walk_step=self.walk_point if controlled else None,
            spin_tracker=self.track_spin if instrumented else None,
            on_loop=self.on_loop if instrumented else None,
            yield_point=mon.yield_point if controlled else self.yield_point,
            on_event=self.report,
            split_ptlocks=scn.kernel.split_ptlocks,
        )
        self.k.relax_point = mon.relax if controlled else self.relax
        #: Every operation each thread performed, in order (a controlled run's program).
        self.oplog: dict[str, list[str]] | None = {} if controlled else None
        self.tls = threading.local()
        self.gate = Gate(mon)
        self.lock = threading.Lock()
        self.procs: dict[str, Proc] = {}
        self.serial = 0
        self.audits = 0
        self.audit_skips = 0
        wl = scn.workload
        self.ops = [
            ("touch", wl.touch),
            ("mmap", wl.mmap),
            ("mprotect", wl.mprotect),
            ("munmap", wl.munmap),
            ("fork", wl.fork),
            ("exit", wl.exit),
        ]

    # -- hooks the kernel calls --------------------------------------------------------

    def yield_point(self, where: str) -> None:
        rng = getattr(self.tls, "rng", None)
        if rng is not None and rng.random() < self.scn.yields.probability:
            preempt = self.scn.yields.preempt_rcu_s
            if preempt and self.k.mem.rcu_reading():
                time.sleep(preempt)  # a preemptible RCU reader, preempted
            else:
                time.sleep(0)

    def relax(self, where: str) -> None:
        """cpu_relax() in a busy-wait: let another thread run; stop once cancelled."""
        self.mon.checkpoint()
        time.sleep(0)

    def rng(self, name: str) -> random.Random:
        rng = random.Random(f"{self.seed}/{name}")
        self.tls.rng = rng
        return rng

    def op(self, name: str, fn: Callable[[], Any], before: Callable[[], Any] | None = None) -> Any:
        """One operation: its mark (controlled runs), `before` (a wait it starts with), `fn`."""
        me = threading.current_thread().name
        self.k.mem.set_thread_site(f"{me}: {name}")
        if self.oplog is not None:
            self.oplog.setdefault(me, []).append(name)
            self.mon.mark("op:" + name.split(" ", 1)[0])
        if before is not None:
            before()
        self.gate.enter()
        try:
            return fn()
        finally:
            self.gate.leave()

    # -- processes ---------------------------------------------------------------------

    def start_process(self, parent: Proc | None) -> Proc | None:
        """spawn (no parent) or fork, then start the new process's threads."""
        with self.lock:
            if len(self.procs) >= self.scn.threads.processes:
                return None
            self.serial += 1
            name = f"p{self.serial}"
            proc = Proc(name, parent.mapped if parent is not None else {})
            self.procs[name] = proc
        try:
            if parent is None:
                self.op(f"spawn {name}", lambda: self.k.spawn(name))
            else:
                self.op(f"fork {parent.name} {name}", lambda: self.k.fork(parent.name, name))
        except BaseException:
            with self.lock:
                self.procs.pop(name, None)
            raise
        proc.running = self.scn.threads.threads_per_process
        for i in range(self.scn.threads.threads_per_process):
            self.mon.spawn(
                self.guarded, lambda p=proc, i=i: self.thread_main(p, i), name=f"{name}/t{i}"
            )
        return proc

    def keeper(self) -> None:
        """Keep the population up: spawn a process whenever there are too few."""
        self.rng("keeper")
        while True:
            with self.lock:
                short = len(self.procs) < self.scn.threads.processes
            if short:
                self.start_process(None)
                self.mon.progress()
            self.mon.pause(0.005)

    def pick(self, proc: Proc, rng: random.Random) -> int:
        with proc.lock:
            pages = list(proc.mapped)
        if pages and rng.random() < 0.85:
            return rng.choice(pages)
        return rng.randrange(self.scn.workload.window_pages)

    def thread_main(self, proc: Proc, index: int) -> None:
        rng = self.rng(f"{proc.name}/t{index}")
        leader = index == 0
        wl = self.scn.workload
        budget = rng.randint(wl.min_ops, wl.max_ops)
        names = [n for n, w in self.ops]
        weights = [w for n, w in self.ops]
        try:
            while not proc.dying.is_set():
                what = rng.choices(names, weights)[0]
                if what in ("fork", "exit") and not leader:
                    what = "touch"
                if leader:
                    budget -= 1
                    if budget <= 0:
                        what = "exit"
                if what == "exit":
                    break
                if what == "fork":
                    self.start_process(proc)
                else:
                    self.mapping_op(proc, what, rng)
                self.mon.progress()
        finally:
            with proc.idle:
                proc.running -= 1
                proc.idle.notify_all()
        if leader:
            self.exit_process(proc)

    def mapping_op(self, proc: Proc, what: str, rng: random.Random) -> None:
        k, name = self.k, proc.name
        page = self.pick(proc, rng)
        n = min(rng.randint(1, 3), self.scn.workload.window_pages - page)
        addr = BASE + page * PAGE_SIZE
        if what == "touch":
            with proc.lock:
                write = rng.random() < 0.5 and all(
                    proc.mapped.get(p, 0) & VM_WRITE for p in range(page, page + n)
                )
            self.op(
                f"touch {name} {addr:#x} {n} {'w' if write else 'r'}",
                lambda: k.touch(name, addr, n, write),
            )
            return
        prot = rng.choice(PROTS)
        how = prot_text(prot)
        if what == "mmap":
            self.op(f"mmap {name} {addr:#x} {n} {how}", lambda: k.mmap(name, addr, n, prot))
            with proc.lock:
                proc.mapped.update({p: prot for p in range(page, page + n)})
        elif what == "mprotect":
            self.op(
                f"mprotect {name} {addr:#x} {n} {how}", lambda: k.mprotect(name, addr, n, prot)
            )
            with proc.lock:
                for p in range(page, page + n):
                    if p in proc.mapped:
                        proc.mapped[p] = prot
        else:
            self.op(f"munmap {name} {addr:#x} {n}", lambda: k.munmap(name, addr, n))
            with proc.lock:
                for p in range(page, page + n):
                    proc.mapped.pop(p, None)

    def exit_process(self, proc: Proc) -> None:
        """exit_group: stop the other threads, then the last mmput (exit_mmap)."""
        proc.dying.set()
        name = f"exit {proc.name}"
        if self.controlled:
            # The wait belongs to the exit operation: a schedule names it "in op K".
            self.op(
                name,
                lambda: self.k.exit(proc.name),
                before=lambda: self.mon.wait_until(
                    lambda: proc.running == 0, f"{proc.name} threads"
                ),
            )
        else:
            with proc.idle:
                while proc.running > 0:
                    proc.idle.wait(0.05)
                    self.mon.checkpoint()
            self.op(name, lambda: self.k.exit(proc.name))
        with self.lock:
            self.procs.pop(proc.name, None)
        self.mon.progress()

    # -- reclaim and hibernation -----------------------------------------------------

    def kswapd(self, index: int) -> None:
        """page_referenced + try_to_unmap over a sample of the LRU, for ever."""
        rng = self.rng(f"kswapd-{index}")
        k = self.k
        while True:
            pages = k.pages.lru_pages()
            if not pages:
                self.mon.pause(0.001)
                continue
            for page in rng.sample(pages, min(8, len(pages))):
                reclaim = functools.partial(swap.reclaim, k, page, force=False)
                self.op(f"reclaim {self.page_ref(page)}", reclaim)
                self.mon.progress()

    def page_ref(self, page: Any) -> str:
        """How a program names the page kswapd picked: where it is mapped, if anywhere.

        A page frame number depends on every allocation before it; "the page p3 maps at
        0x12000" survives the removal of unrelated operations (controlled runs only:
        the lookup walks every page table).
        """
        if self.controlled:
            owner = self.k.page_owner(page)
            if owner is not None:
                return f"{owner[0]} {owner[1]:#x}"
        return str(page.name)

    def compactor(self, index: int) -> None:
        """Memory compaction: isolate a sample of the LRU and migrate it, now and then."""
        rng = self.rng(f"compact-{index}")
        k, t = self.k, self.scn.threads
        while True:
            self.mon.pause(t.compaction_period_s)
            pages = k.pages.lru_pages()
            if not pages:
                continue
            batch = rng.sample(pages, min(t.compaction_batch, len(pages)))
            compact = functools.partial(migrate.compact_pages, k, batch)
            self.op(f"compact {len(batch)} pages", compact)
            self.mon.progress()

    def hibernate(self) -> None:
        """Now and then, swap out every anonymous page: a hibernation image."""
        self.rng("hibernate")
        while True:
            self.mon.pause(self.scn.threads.hibernate_period_s)
            self.op("swapout all", lambda: swap.shrink_all(self.k))
            self.mon.progress()

    # -- the auditor -----------------------------------------------------------------

    def auditor(self) -> None:
        """Stop the world between operations and check I1..I7."""
        interval = self.scn.audit_interval_s
        while True:
            self.mon.pause(interval)
            if not self.gate.close(timeout=min(0.5, interval)):
                self.audit_skips += 1
                continue
            try:
                self.k.mem.quiesce()
                found = audit(self.k)
                self.audits += 1
            finally:
                self.gate.open()
            if found:
                v = found[0]
                self.mon.report_defect(
                    "invariant",
                    f"{v.title}: {v.summary}",
                    evidence={
                        **v.to_dict(),
                        "also": [f"{x.title}: {x.summary}" for x in found[1:6]],
                    },
                )
                return

    # -- starting it all ---------------------------------------------------------------

    def spawn_all(self) -> None:
        t = self.scn.threads
        self.mon.spawn(self.guarded, self.keeper, name="keeper", tracked=False)
        for i in range(t.reclaim_walkers):
            self.mon.spawn(self.guarded, lambda i=i: self.kswapd(i), name=f"kswapd-{i}")
        if t.hibernate:
            self.mon.spawn(self.guarded, self.hibernate, name="hibernate", tracked=False)
        for i in range(t.compactors):
            self.mon.spawn(
                self.guarded, lambda i=i: self.compactor(i), name=f"compact-{i}", tracked=False
            )
        if self.scn.audit_interval_s > 0:
            self.mon.spawn(self.auditor, name="auditor", tracked=False)

    def model_stats(self) -> dict[str, Any]:
        k = self.k
        return {
            "walks": k.walks.count,
            "processes_now": len(k.tasks),
            "processes_made": self.serial,
            "live_objects": k.mem.live_objects,
            "recycled_slab_pages": k.mem.recycled_pages,
            "double_frees": k.mem.double_frees,
            "pages_in_use": k.pages.in_use,
            "swap_slots_in_use": k.swap.in_use(),
            "swap_writes": k.swap.writes,
            "swap_reads": k.swap.reads,
            "pages_migrated": atomic_read(k.migrated),
            "audits": self.audits,
            "audits_skipped": self.audit_skips,
        }
