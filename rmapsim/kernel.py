"""One modelled kernel: its variant, memory, locks, hooks, page frames and tasks.

`Kernel` is the context every modelled kernel function takes as its first
argument (the model's ``current``): ``anon_vma_prepare(k, vma)``.  It also offers
the system-call level operations a program or a workload performs (mmap, munmap,
mprotect, touch, fork, exit, swap-out, page_referenced), each taking the locks
the kernel takes around them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from rmapsim.atomic import (
    atomic_cmpxchg,
    atomic_dec_and_test,
    atomic_inc,
    atomic_inc_not_zero,
    atomic_read,
    atomic_set,
    atomic_t,
)
from rmapsim.errors import KernelBug, KernelDefect, ListCorruptionWarning, ModelError
from rmapsim.lists import ListOps
from rmapsim.slab import Memory
from rmapsim.structs import (
    PAGE_SIZE,
    PMD_SHIFT,
    AnonVma,
    AnonVmaChain,
    AnonVmaRef,
    AnonVmaRoot,
    MmStruct,
    Page,
    VmArea,
)
from rmapsim.sync import SyncFactory, ThreadingSync
from rmapsim.variants import Variant, parse_variant
from rmapsim.walk import LoopHook, StepHook, Tracker, WalkHandle, Walks

YieldHook = Callable[[str], None]
EventHook = Callable[[KernelDefect], None]


class SpinState:
    """A CPU spinning in spin_lock on a word that is no longer a free lock."""

    __slots__ = ("addr", "ticket", "view", "what")

    def __init__(self, what: str, view: Any, ticket: int) -> None:
        self.what = what
        self.view = view
        self.addr: int = view.addr
        self.ticket = ticket

    def subject(self) -> str:
        return f"lock word @{self.addr:#x} ({self.view.mem.describe_addr(self.addr)})"

    def evidence(self) -> dict[str, Any]:
        """What the word is now: its value, the ticket waited for, who owns the memory."""
        word = self.view.word()
        return {
            "lock_word": f"{self.addr:#x}",
            "word_now": f"{word:#018x}",
            "owner_ticket": f"{word & 0xFF:#04x}",
            "my_ticket": f"{self.ticket:#04x}",
            "memory_now": self.view.mem.describe_addr(self.addr),
        }


#: Called when a CPU starts spinning on a dead lock word; the handle sees each look.
SpinTracker = Callable[[SpinState], WalkHandle]


def anon_vma_class(variant: Variant) -> type[AnonVma]:
    """The struct anon_vma layout of a kernel: 2.6.34's, 2.6.35's (refcount), 2.6.36's (root)."""
    if variant.root_anon_vma:
        return AnonVmaRoot
    if variant.anon_vma_refcount:
        return AnonVmaRef
    return AnonVma


class PageAllocator:
    """The page frames (mem_map) and the buddy allocator's free list, LIFO."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.mem_map: list[Page] = []
        self.free: list[Page] = []
        self.lock = threading.Lock()
        self.serial = 0
        self.in_use = 0
        # zone->lru_lock and the LRU, in insertion order.
        self.lru_lock = threading.Lock()
        self.lru: dict[Page, None] = {}

    def alloc_page(self) -> Page:
        with self.lock:
            if self.free:
                page = self.free.pop()
            else:
                pfn = len(self.mem_map)
                page = Page(pfn, self.k.sync.spinlock("page_lock", f"page#{pfn}.lock"))
                self.mem_map.append(page)
            page.reset()
            page.in_use = True
            atomic_set(page._count, 1)  # set_page_refcounted
            self.serial += 1
            page.serial = self.serial
            page.alloc_site = self.k.mem.current_site()
            self.in_use += 1
            return page

    def free_page(self, page: Page) -> None:
        """free_hot_cold_page: the frame goes back; page->mapping is reset only here.

        free_pages_check: a page freed while a PTE still maps it, or while someone
        still holds a reference, is a "Bad page state" - what a lost update of
        _count or _mapcount turns into.
        """
        with self.lru_lock:
            self.lru.pop(page, None)
        with self.lock:
            if not page.in_use:
                raise KernelBug(f"kernel BUG: freeing {page.name} twice", page=page.name)
            count, mapcount = atomic_read(page._count), atomic_read(page._mapcount)
            if count != 0 or mapcount != -1:
                raise KernelBug(
                    f"BUG: Bad page state: freeing {page.name} with page_count {count} "
                    f"and page_mapcount {mapcount + 1}",
                    page=page.name,
                    count=count,
                    mapcount=mapcount + 1,
                )
            page.reset()
            page.in_use = False
            self.in_use -= 1
            self.free.append(page)

    def lru_cache_add(self, page: Page) -> None:
        with self.lru_lock:
            page.lru = True
            self.lru[page] = None

    def lru_pages(self) -> list[Page]:
        with self.lru_lock:
            return list(self.lru)


class Kernel:
    """The state of one modelled kernel and the operations user space can ask of it."""

    def __init__(
        self,
        variant: Variant | str = "2.6.34",
        *,
        memory: str | Memory = "reuse",
        sync: SyncFactory | None = None,
        debug_list: bool = False,
        debug_vm: bool = True,
        yield_point: YieldHook | None = None,
        walk_step: StepHook | None = None,
        on_loop: LoopHook | None = None,
        walk_tracker: Tracker | None = None,
        spin_tracker: SpinTracker | None = None,
        on_event: EventHook | None = None,
        slab_page_bytes: int = 4096,
        min_partial: int = 5,
        quarantine_bytes: int = 8 << 20,
        split_ptlocks: bool = True,
        single_cpu: bool | None = None,
    ) -> None:
        self.variant = parse_variant(variant) if isinstance(variant, str) else variant
        self.mem = (
            memory
            if isinstance(memory, Memory)
            else Memory(
                memory,
                page_bytes=slab_page_bytes,
                min_partial=min_partial,
                quarantine_bytes=quarantine_bytes,
            )
        )
        self.sync: SyncFactory = sync if sync is not None else ThreadingSync()
        #: One CPU (single-threaded runs): a spin on a word nobody else can change is a
        #: lockup at once.  Several CPUs: the spinner spins until the word changes.
        self.single_cpu = (
            bool(getattr(self.sync, "single_cpu", False)) if single_cpu is None else single_cpu
        )
        self.spin_tracker = spin_tracker
        #: USE_SPLIT_PTLOCKS (2.6.34 on SMP without lock debugging): one PTE lock per
        #: page table; False: mm->page_table_lock guards every PTE of the mm.
        self.split_ptlocks = split_ptlocks
        self._ptlock_guard = threading.Lock()
        self.debug_vm = debug_vm
        self.yield_point = yield_point
        #: Where a busy-wait loop lets others run (a controlled scheduler must switch
        #: there); the yield point when not given.
        self.relax_point: YieldHook | None = None
        self.on_event = on_event
        self.lists = ListOps(debug_list=debug_list, yield_point=yield_point, on_warn=self._warn)
        self.walks = Walks(self.mem, step_hook=walk_step, on_loop=on_loop, tracker=walk_tracker)
        self.pages = PageAllocator(self)
        from rmapsim import swap

        self.swap = swap.SwapState(self)
        self.anon_vma_cls = anon_vma_class(self.variant)
        self.mem.structs["anon_vma"] = self.anon_vma_cls
        if not self.single_cpu:
            self.mem.spin_on_word = self._spin_on_word
        self.anon_vma_cachep = self.mem.create_cache(
            self.anon_vma_cls, "anon_vma", ctor=self.anon_vma_ctor, rcu=True
        )
        self.anon_vma_chain_cachep = self.mem.create_cache(AnonVmaChain, "anon_vma_chain")
        self.vm_area_cachep = self.mem.create_cache(VmArea, "vm_area_struct")
        self.mm_cachep = self.mem.create_cache(MmStruct, "mm_struct")
        self.warnings: list[ListCorruptionWarning] = []
        self.tasks: dict[str, MmStruct] = {}
        #: Pages moved by compaction (statistics).
        self.migrated = atomic_t(0)

    # -- helpers the kernel functions share --------------------------------------------

    def anon_vma_ctor(self, av: AnonVma) -> None:
        """anon_vma_ctor (mm/rmap.c): once per slab object, not per allocation.

        The lock, the refcount (from 2.6.35) and the list head; ->root is set by
        whoever allocates the anon_vma, not here.
        """
        # With root-anon-vma only a root's lock is ever taken: say so in its name.
        suffix = "[root]" if self.variant.root_anon_vma else ""
        av.lock = self.sync.spinlock("anon_vma", f"anon_vma@{av.addr:#x}.lock{suffix}")
        if isinstance(av, AnonVmaRef):
            atomic_set(av.external_refcount, 0)
        self.lists.INIT_LIST_HEAD(av.head)

    def pte_lockptr(self, mm: MmStruct, address: int) -> Any:
        """The lock of the PTE mapping `address` (pte_lockptr / pte_offset_map_lock).

        With split PTE locks it is the lock of that page table (2 MiB of address
        space), made when the table is first needed (__pte_alloc) and kept as long
        as the mm; without, mm->page_table_lock.
        """
        if not self.split_ptlocks:
            return mm.page_table_lock
        idx = address >> PMD_SHIFT
        locks: dict[int, Any] = mm.ptlocks
        lock = locks.get(idx)
        if lock is None:
            with self._ptlock_guard:  # never held across a yield point
                lock = locks.get(idx)
                if lock is None:
                    lock = self.sync.spinlock("ptlock", f"{mm.comm}.ptl[{idx << PMD_SHIFT:#x}]")
                    locks[idx] = lock
        return lock

    def _spin_on_word(self, view: Any, ticket: int) -> None:
        """A CPU spinning until a stale lock word's owner byte reaches its ticket.

        Each look is a cpu_relax() (where a scheduler lets another CPU run) and a
        step of the spin tracker, which is how a watchdog sees the spin and how a
        cancelled run gets the CPU back.
        """
        st = SpinState("spin_lock", view, ticket)
        handle = self.spin_tracker(st) if self.spin_tracker is not None else None
        error: BaseException | None = None
        try:
            while not view.owner_is(ticket):
                self.cpu_relax("spin_lock:dead lock word")
                if handle is not None:
                    handle.step()
        except BaseException as exc:
            error = exc
            raise
        finally:
            if handle is not None:
                handle.end(error)

    def sched(self, where: str) -> None:
        """A point where the real kernel could be preempted or raced (yield hook)."""
        y = self.yield_point
        if y is not None:
            y(where)

    def VM_BUG_ON(self, cond: bool, what: str, **details: Any) -> None:
        if cond and self.debug_vm:
            where = sys._getframe(1).f_code.co_name
            raise KernelBug(f"kernel BUG in {where}: VM_BUG_ON({what})", function=where, **details)

    def BUG_ON(self, cond: bool, what: str, **details: Any) -> None:
        if cond:
            where = sys._getframe(1).f_code.co_name
            raise KernelBug(f"kernel BUG in {where}: BUG_ON({what})", function=where, **details)

    def lock_nested(self, lock: Any, subclass: int = 1) -> None:
        """spin_lock_nested(): a second lock of the same class, annotated for lockdep."""
        nested = getattr(lock, "acquire_nested", None)
        if nested is not None:
            nested(subclass)
        else:
            lock.acquire()

    def _warn(self, warning: ListCorruptionWarning) -> None:
        self.warnings.append(warning)
        if self.on_event is not None:
            self.on_event(warning)

    def cpu_relax(self, where: str) -> None:
        """A busy-wait loop's pause: another CPU must get to run before we look again."""
        relax = self.relax_point
        if relax is not None:
            relax(where)
        else:
            self.sched(where)

    # -- page references (include/linux/mm.h, pagemap.h) ---------------------------------

    def get_page(self, page: Page) -> None:
        """A reference on a page the caller already holds one on (VM_BUG_ON count == 0)."""
        self.VM_BUG_ON(
            atomic_read(page._count) <= 0,
            "atomic_read(&page->_count) == 0",
            page=page.name,
        )
        atomic_inc(page._count)

    def get_page_unless_zero(self, page: Page) -> bool:
        """A speculative reference (page_cache_get_speculative): fails on a page being freed."""
        return atomic_inc_not_zero(page._count)

    def put_page(self, page: Page) -> None:
        """Drop a reference; the last one frees the page (put_page_testzero)."""
        if atomic_dec_and_test(page._count):
            self.pages.free_page(page)

    def page_freeze_refs(self, page: Page, count: int) -> bool:
        """Reclaim's claim on a page: its count goes from `count` to 0, or nothing happens.

        A frozen page cannot gain a speculative reference, so nobody can find it in
        the swap cache and map it while reclaim takes it out.
        """
        return atomic_cmpxchg(page._count, count, 0) == count

    def page_unfreeze_refs(self, page: Page, count: int) -> None:
        self.VM_BUG_ON(atomic_read(page._count) != 0, "page_count(page) != 0", page=page.name)
        atomic_set(page._count, count)

    # -- tasks --------------------------------------------------------------------------

    def task(self, name: str) -> MmStruct:
        try:
            return self.tasks[name]
        except KeyError:
            raise ModelError(f"no process named {name!r}") from None

    def spawn(self, name: str) -> MmStruct:
        """A new process with an empty address space (mm_alloc)."""
        from rmapsim import fork

        if name in self.tasks:
            raise ModelError(f"process {name!r} already exists")
        mm = fork.mm_alloc(self, name)
        self.tasks[name] = mm
        return mm

    # -- system calls and user accesses -------------------------------------------------

    def mmap(self, name: str, addr: int, npages: int, prot: int) -> int:
        from rmapsim import mmap

        return mmap.sys_mmap(self, self.task(name), addr, npages * PAGE_SIZE, prot)

    def munmap(self, name: str, addr: int, npages: int) -> int:
        from rmapsim import mmap

        return mmap.sys_munmap(self, self.task(name), addr, npages * PAGE_SIZE)

    def mprotect(self, name: str, addr: int, npages: int, prot: int) -> int:
        from rmapsim import mprotect

        return mprotect.sys_mprotect(self, self.task(name), addr, npages * PAGE_SIZE, prot)

    def touch(self, name: str, addr: int, npages: int, write: bool) -> int:
        from rmapsim import memory

        mm = self.task(name)
        for i in range(npages):
            err = memory.user_access(self, mm, addr + i * PAGE_SIZE, write)
            if err:
                return err
        return 0

    def fork(self, parent: str, child: str) -> int:
        from rmapsim import fork

        if child in self.tasks:
            raise ModelError(f"process {child!r} already exists")
        mm, err = fork.do_fork(self, self.task(parent), child)
        if mm is not None:
            self.tasks[child] = mm
        return err

    def exit(self, name: str) -> int:
        from rmapsim import fork

        mm = self.task(name)
        del self.tasks[name]
        fork.do_exit(self, mm)
        return 0

    def swapout(self, name: str | None, addr: int = 0, npages: int = 0) -> int:
        """Reclaim the pages mapped in a range (or every LRU page when name is None)."""
        from rmapsim import swap

        if name is None:
            return swap.shrink_all(self)
        return swap.swapout_range(self, self.task(name), addr, npages * PAGE_SIZE)

    def reclaim(self, pfn: int) -> int:
        """kswapd on one page frame: 1 when freed, 0 when kept, -EINVAL if no such frame."""
        from rmapsim import swap

        if pfn >= len(self.pages.mem_map):
            return -22
        return int(swap.reclaim(self, self.pages.mem_map[pfn], force=False))

    def reclaim_at(self, name: str, addr: int) -> int:
        """kswapd on the page `name` maps at `addr` (-ENOENT when none is mapped there)."""
        from rmapsim import swap

        mm = self.task(name)
        pte = mm.ptes.get(addr)
        page = pte.page if pte is not None else None
        if page is None:
            return -2
        return int(swap.reclaim(self, page, force=False))

    def page_owner(self, page: Page) -> tuple[str, int] | None:
        """A (process, address) mapping `page` now, for naming it in a program."""
        for name, mm in list(self.tasks.items()):
            for addr, pte in list(mm.ptes.items()):
                if pte.page is page:
                    return name, addr
        return None

    def migrate(self, name: str, addr: int, npages: int) -> int:
        """Migrate the pages mapped in a range to new page frames (the count not moved)."""
        from rmapsim import migrate, swap

        pages = swap.mapped_pages(self, self.task(name), addr, npages * PAGE_SIZE)
        return migrate.migrate_pages(self, pages)

    def referenced(self, name: str, addr: int, npages: int) -> int:
        from rmapsim import swap

        return swap.referenced_range(self, self.task(name), addr, npages * PAGE_SIZE)
