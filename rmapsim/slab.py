"""Slab caches over kernel memory: allocation, reuse, recycling, RCU, KASAN quarantine.

The model allocates anon_vma, anon_vma_chain, vm_area_struct and mm_struct from
slab caches laid out in kernel address space, so that a pointer that outlives
its object behaves the way it did in 2010:

* ``reuse`` mode (the default, what SLUB does): a freed object goes to the front of
  its cache's free list and is handed out again by the next allocation.  The
  anon_vma cache is SLAB_DESTROY_BY_RCU with a constructor: its lock and list head
  are set up when its slab page is set up, not per allocation, so a reused anon_vma
  still has a valid lock and a valid (someone else's) list.  Other caches keep the
  SLUB free pointer in their first word.  A slab page whose objects are all free is
  given back (after an RCU grace period for the anon_vma cache, at once for the
  others) once the cache holds more than ``min_partial`` empty pages; the next cache
  that needs a page may get it, and then every old pointer into that page reads the
  words of whatever the new cache put there.
* ``kasan`` mode: freed objects are poisoned and quarantined, and the first access
  through a stale pointer raises `UseAfterFree` with the program sites that
  allocated, freed and accessed the object.  As in KASAN, the quarantine is bounded
  (``quarantine_bytes``): past it the oldest freed objects are reused, and a stale
  pointer to one of those is no longer caught.

What a stale pointer reads is `rmapsim.stale`'s job (mixed in as `Words`); this
module decides when memory is freed, reused, recycled and poisoned.  The fast path
of live code pays nothing for either.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from rmapsim.atomic import atomic_t
from rmapsim.errors import ModelError
from rmapsim.lists import ListHead
from rmapsim.stale import (
    _RAW,
    FREE,
    LIVE,
    LIVE_CLASS,
    POISONED,
    STALE,
    PoisonedListHead,
    StaleListHead,
    Words,
    _ViewCache,
    peek,
    peek_list,
    signed,
)
from rmapsim.structs import KERNEL_BASE, STRUCTS, WORD, Kind, SlabObject

__all__ = ["FREE", "LIVE", "MODES", "Memory", "SlabCache", "SlabPage", "peek", "peek_list"]

MODES = ("reuse", "kasan")


# -- slab pages and caches --------------------------------------------------------------


class SlabPage:
    __slots__ = ("base", "cache", "inuse", "obj_size", "pageno", "slots", "tail")

    def __init__(self, pageno: int, base: int) -> None:
        self.pageno = pageno
        self.base = base
        self.cache: SlabCache | None = None
        self.slots: list[SlabObject] = []
        self.obj_size = 0
        self.inuse = 0
        self.tail: dict[int, Any] = {}


class SlabCache:
    """One kmem_cache: a type, an object size, a free list, its slab pages."""

    def __init__(
        self,
        mem: Memory,
        cls: type[SlabObject],
        label: str,
        *,
        ctor: Callable[[Any], None] | None = None,
        rcu: bool = False,
    ) -> None:
        self.mem = mem
        self.cls = cls
        self.label = label
        self.ctor = ctor
        self.rcu = rcu
        # SLUB keeps its free pointer inside the object unless a ctor or RCU needs it intact.
        self.free_pointer_in_object = ctor is None and not rcu
        self.per_slab = mem.page_bytes // cls.SIZE
        self.freelist: list[SlabObject] = []
        self.pages: list[SlabPage] = []
        self.allocated = 0
        self.freed = 0

    def __repr__(self) -> str:
        return f"<kmem_cache {self.label}>"


class Memory(Words):
    """Kernel memory: slab caches over an address space, RCU, and stale-pointer reads."""

    def __init__(
        self,
        mode: str = "reuse",
        *,
        page_bytes: int = 4096,
        min_partial: int = 5,
        quarantine_bytes: int = 8 << 20,
    ) -> None:
        if mode not in MODES:
            raise ModelError(f"unknown memory mode {mode!r} (known: {', '.join(MODES)})")
        biggest = max(c.SIZE for c in STRUCTS.values())
        if page_bytes < biggest or page_bytes % WORD:
            raise ModelError(f"slab page size must be a multiple of 8 and at least {biggest}")
        if min_partial < 0:
            raise ModelError("min_partial must be >= 0")
        self.mode = mode
        self.kasan = mode == "kasan"
        #: The structure a pointer field's target names (a kernel may use a later
        #: anon_vma layout).
        self.structs: dict[str, type[SlabObject]] = dict(STRUCTS)
        self.page_bytes = page_bytes
        self.min_partial = min_partial
        self.lock = threading.Lock()
        self.pages: dict[int, SlabPage] = {}
        self.pool: list[SlabPage] = []  # free pages, most recently freed last
        self.next_pageno = 0
        self.live_objects = 0
        self.recycled_pages = 0
        self.serial = 0
        self.views: dict[tuple[type, int], Any] = {}
        self.viewcache = _ViewCache(self)
        # RCU: per-thread nesting and start epoch of readers; deferred page frees.
        self.epoch = 0
        self._rcu_nest: dict[int, int] = {}
        self._rcu_start: dict[int, int] = {}
        # Deferred work for after a grace period: slab pages to give back, and (kasan)
        # freed anon_vmas to poison.
        self._rcu_pending: list[tuple[int, SlabPage | SlabObject]] = []
        self.double_frees = 0
        self._local = threading.local()
        self.site: Any = None
        self.caches: dict[str, SlabCache] = {}
        self.quarantine_bytes = quarantine_bytes
        self._quarantine: deque[SlabObject] = deque()
        self._quarantined = 0
        self.journal = None
        #: Every live object by id, wherever its slab page went (a double free can hand
        #: out an object of a page its cache already gave back).
        self.allocated: dict[int, SlabObject] = {}

    # -- sites (which program line / worker is running), for kasan history ------------

    def current_site(self) -> Any:
        return getattr(self._local, "site", None) or self.site

    def set_thread_site(self, site: Any) -> None:
        self._local.site = site

    # -- caches ---------------------------------------------------------------------------

    def create_cache(
        self,
        cls: type[SlabObject],
        label: str,
        *,
        ctor: Callable[[Any], None] | None = None,
        rcu: bool = False,
    ) -> SlabCache:
        cache = SlabCache(self, cls, label, ctor=ctor, rcu=rcu)
        self.caches[label] = cache
        return cache

    def _new_slab(self, cache: SlabCache) -> None:
        self._rcu_reap()
        if self.pool and not self.kasan:
            page = self.pool.pop()
            old = list(page.slots)
            words = [
                self._raw_word(page, page.base + i * WORD) for i in range(self.page_bytes // WORD)
            ]
            self.recycled_pages += 1
        else:
            page = SlabPage(self.next_pageno, KERNEL_BASE + self.next_pageno * self.page_bytes)
            self.next_pageno += 1
            self.pages[page.pageno] = page
            old, words = [], []
        cls = cache.cls
        slots: list[SlabObject] = []
        for i in range(cache.per_slab):
            obj = object.__new__(cls)
            obj.addr = page.base + i * cls.SIZE
            obj.cache = cache
            obj.state = FREE
            obj.serial = 0
            obj.gen = 0
            obj.name = f"{cache.label}@{obj.addr:#x}"
            obj.alloc_site = obj.free_site = None
            obj.junk = None
            self._init_fields(obj, words)
            slots.append(obj)
        page.tail = {
            w: words[w] for w in range(len(slots) * cls.SIZE // WORD, len(words)) if words[w]
        }
        page.cache, page.slots, page.obj_size, page.inuse = cache, slots, cls.SIZE, 0
        cache.pages.append(page)
        for obj in old:  # every pointer into the old objects now reads the new words
            self._make_stale(obj, recycled=True)
        for obj in slots:
            if cache.ctor is not None:
                cache.ctor(obj)
                obj.junk = None  # the constructor sets up every field
            self._make_stale(obj, recycled=False)
        for obj in reversed(slots):  # first allocation gets the lowest address
            self._push_free(cache, obj)

    def _init_fields(self, obj: SlabObject, words: list[Any]) -> None:
        """Fields of a new slab object: the bytes the page held before (zero if fresh)."""
        first = (obj.addr - KERNEL_BASE) % self.page_bytes // WORD
        raw = _RAW[type(obj)]
        for f in type(obj).LAYOUT:
            w = [words[first + f.word + i] if words else 0 for i in range(f.nwords)]
            if f.kind is Kind.LIST:
                assert f.member is not None
                lh = ListHead(obj, f.member, obj.addr + f.word * WORD)
                if words:
                    lh.next, lh.prev = self.listptr(w[0]), self.listptr(w[1])
                raw[f.name].__set__(obj, lh)
            elif f.kind is Kind.PTR:
                target = self.structs[f.target] if f.target else SlabObject
                raw[f.name].__set__(obj, self.cast(w[0], target) if words else None)
            elif f.kind is Kind.INT:
                raw[f.name].__set__(obj, self.to_int(w[0]))
            elif f.kind is Kind.ATOMIC:
                raw[f.name].__set__(obj, atomic_t(signed(self.to_int(w[0]))))
            elif f.kind is Kind.LOCK:
                raw[f.name].__set__(obj, None)
                if w[0]:
                    obj.junk = {**(obj.junk or {}), f.word: self.to_int(w[0])}
            else:
                for i, v in enumerate(w):
                    if v:
                        obj.junk = {**(obj.junk or {}), f.word + i: self.to_int(v)}

    def _push_free(self, cache: SlabCache, obj: SlabObject) -> None:
        if cache.free_pointer_in_object:
            top = cache.freelist[-1] if cache.freelist else None
            first = cache.cls.LAYOUT[0]
            self._store(obj, first, 0, top)
        cache.freelist.append(obj)

    def alloc(self, cache: SlabCache) -> Any:
        with self.lock:
            if not cache.freelist:
                self._new_slab(cache)
            obj = cache.freelist.pop()
            obj.__class__ = LIVE_CLASS[type(obj)]
            for f in obj.LIST_FIELDS:
                lh = _RAW[type(obj)][f.name].__get__(obj, type(obj))
                lh.__class__ = ListHead
            self.serial += 1
            obj.serial = self.serial
            obj.gen += 1
            obj.state = LIVE
            obj.name = f"{cache.label}#{self.serial}"
            obj.alloc_site = self.current_site()
            obj.free_site = None
            self.live_objects += 1
            cache.allocated += 1
            self._page_of(obj.addr).inuse += 1
            self.allocated[id(obj)] = obj
            if self.journal is not None:
                self.journal.append(obj)
            return obj

    def free(self, obj: SlabObject) -> None:
        with self.lock:
            if self.journal is not None:
                self.journal.append(obj)
            cache = obj.cache
            if obj.state != LIVE:
                if self.kasan:
                    raise self.double_free(obj)
                # SLUB without debugging checks nothing: the object goes on the free list
                # a second time, and two later allocations hand out the same memory.
                self.double_frees += 1
                self._push_free(cache, obj)
                return
            obj.state = FREE
            obj.free_site = self.current_site()
            self.live_objects -= 1
            self.allocated.pop(id(obj), None)
            cache.freed += 1
            page = self._page_of(obj.addr)
            page.inuse -= 1
            if self.kasan:
                if cache.rcu:
                    # SLAB_DESTROY_BY_RCU: a reader that found it before the free may still
                    # use it until a grace period has passed; only then is it poisoned.
                    obj.__class__ = STALE[LIVE_CLASS[type(obj)]]
                    self.epoch += 1
                    self._rcu_pending.append((self.epoch, obj))
                    self._rcu_reap()
                else:
                    self._make_stale(obj, recycled=False)
                    self._quarantine_add(obj)
                return
            self._make_stale(obj, recycled=False)
            self._push_free(cache, obj)
            if page.inuse == 0:
                self._maybe_discard(cache, page)

    def _make_stale(self, obj: SlabObject, *, recycled: bool) -> None:
        live: Any = LIVE_CLASS[type(obj)]
        if self.kasan:
            obj.__class__ = POISONED[live]
            lh_class: type = PoisonedListHead
        else:
            obj.__class__ = STALE[live]
            lh_class = StaleListHead
        if self.kasan or recycled:
            for f in live.LIST_FIELDS:
                _RAW[live][f.name].__get__(obj, live).__class__ = lh_class

    def _quarantine_add(self, obj: SlabObject) -> None:
        """KASAN's quarantine: the oldest freed objects go back to their caches (lock held)."""
        self._quarantine.append(obj)
        self._quarantined += obj.SIZE
        while self._quarantined > self.quarantine_bytes and self._quarantine:
            old = self._quarantine.popleft()
            self._quarantined -= old.SIZE
            if old.state == FREE:
                self._push_free(old.cache, old)

    def _maybe_discard(self, cache: SlabCache, page: SlabPage) -> None:
        empty = [p for p in cache.pages if p.inuse == 0]
        if len(empty) <= self.min_partial:
            return
        cache.pages.remove(page)
        gone = set(map(id, page.slots))
        cache.freelist = [o for o in cache.freelist if id(o) not in gone]
        if cache.rcu:
            self.epoch += 1
            self._rcu_pending.append((self.epoch, page))
            self._rcu_reap()
        else:
            self._release_page(page)

    def _release_page(self, page: SlabPage) -> None:
        page.cache = None
        self.pool.append(page)

    # -- RCU ------------------------------------------------------------------------------

    def rcu_read_lock(self) -> None:
        tid = threading.get_ident()
        with self.lock:
            n = self._rcu_nest.get(tid, 0)
            if n == 0:
                self._rcu_start[tid] = self.epoch
            self._rcu_nest[tid] = n + 1

    def rcu_read_unlock(self) -> None:
        tid = threading.get_ident()
        with self.lock:
            n = self._rcu_nest.get(tid, 0) - 1
            if n <= 0:
                self._rcu_nest.pop(tid, None)
                self._rcu_start.pop(tid, None)
            else:
                self._rcu_nest[tid] = n

    def rcu_reading(self) -> bool:
        """Is the calling thread inside an RCU read-side critical section?"""
        return threading.get_ident() in self._rcu_nest

    def _rcu_reap(self) -> None:
        """Finish the deferred work whose grace period has ended (lock held)."""
        if not self._rcu_pending:
            return
        oldest = min(self._rcu_start.values(), default=None)
        keep: list[tuple[int, SlabPage | SlabObject]] = []
        for epoch, item in self._rcu_pending:
            if oldest is not None and oldest < epoch:
                keep.append((epoch, item))
            elif isinstance(item, SlabPage):
                self._release_page(item)
            elif item.state == FREE:
                self._make_stale(item, recycled=False)
                self._quarantine_add(item)
        self._rcu_pending = keep

    def quiesce(self) -> None:
        """A point where this thread holds no RCU read lock (end of an operation)."""
        with self.lock:
            self._rcu_reap()
