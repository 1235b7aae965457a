"""Slab caches, kernel memory and what a stale pointer reads.

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
* ``kasan`` mode: freed objects are quarantined for ever and the first access
  through a stale pointer raises `UseAfterFree` with the program sites that
  allocated, freed and accessed the object.

Live objects are plain Python objects.  A freed object has its class switched to a
"stale" variant whose fields are read from memory words (so they see the free
pointer, or the new owner after recycling) or, in kasan mode, to a poisoned
variant that raises.  The fast path of live code pays nothing for this.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from rmapsim.errors import KernelOops, Lockup, ModelError, UseAfterFree
from rmapsim.lists import NULL_LIST, BadAddress, ListHead, Member
from rmapsim.structs import (
    KERNEL_BASE,
    STRUCTS,
    WORD,
    AnonVma,
    Field,
    Kind,
    SlabObject,
)

MODES = ("reuse", "kasan")

LIVE, FREE, VIEW = 1, 2, 3

_LH_NEXT = ListHead.__dict__["next"]
_LH_PREV = ListHead.__dict__["prev"]
_WORD_MASK = (1 << 64) - 1
_VIEW_MEMBER = Member("memory", "list_head", 0)


def _raw_descriptors(cls: type[SlabObject]) -> dict[str, Any]:
    out = {}
    for klass in cls.__mro__:
        for name in getattr(klass, "__slots__", ()):
            if name not in out:
                out[name] = klass.__dict__[name]
    return out


_RAW: dict[type, dict[str, Any]] = {c: _raw_descriptors(c) for c in STRUCTS.values()}


def peek(obj: SlabObject, name: str, default: Any = None) -> Any:
    """Read a field's stored value, bypassing stale/poisoned views (for audits)."""
    for klass in type(obj).__mro__:
        table = _RAW.get(klass)
        if table is not None:
            try:
                return table[name].__get__(obj, klass)
            except AttributeError:
                return default
    raise ModelError(f"not a slab object: {obj!r}")


def peek_list(head: ListHead) -> tuple[Any, Any]:
    """(next, prev) of a list head as stored, bypassing views."""
    return _LH_NEXT.__get__(head, ListHead), _LH_PREV.__get__(head, ListHead)


def _accessor() -> str:
    """The modelled kernel function that made the current access."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("rmapsim.") and module not in ("rmapsim.slab", "rmapsim.lists"):
            return frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


# -- stale and poisoned variants of each structure ------------------------------------


def _stale_property(f: Field) -> property:
    offset = f.word * WORD

    def get(self: SlabObject) -> Any:
        return self.cache.mem.typed_read(self.addr + offset, f)

    def set_(self: SlabObject, value: Any) -> None:
        self.cache.mem.typed_write(self.addr + offset, f, value)

    return property(get, set_)


def _poisoned_property(f: Field) -> property:
    def get(self: SlabObject) -> Any:
        raise self.cache.mem.uaf(self, f.name, "read")

    def set_(self: SlabObject, value: Any) -> None:
        raise self.cache.mem.uaf(self, f.name, "write")

    return property(get, set_)


def _variant(cls: type[SlabObject], prefix: str, make: Callable[[Field], property]) -> type:
    props = {f.name: make(f) for f in cls.LAYOUT if f.kind is not Kind.OPAQUE}
    return type(f"{prefix}{cls.__name__}", (cls,), {"__slots__": (), **props})


STALE: dict[type, type] = {c: _variant(c, "Stale", _stale_property) for c in STRUCTS.values()}
POISONED: dict[type, type] = {
    c: _variant(c, "Poisoned", _poisoned_property) for c in STRUCTS.values()
}
LIVE_CLASS: dict[type, type] = {}
for _c in STRUCTS.values():
    LIVE_CLASS[_c] = _c
    LIVE_CLASS[STALE[_c]] = _c
    LIVE_CLASS[POISONED[_c]] = _c


class StaleListHead(ListHead):
    """A list head inside recycled memory: its pointers are whatever is there now."""

    __slots__ = ()

    def _mem(self) -> Memory:
        return self.owner.cache.mem  # type: ignore[no-any-return]

    @property
    def next(self) -> Any:
        return self._mem().listptr(self._mem().read_word(self.addr))

    @next.setter
    def next(self, value: Any) -> None:
        self._mem().write_word(self.addr, value)

    @property
    def prev(self) -> Any:
        return self._mem().listptr(self._mem().read_word(self.addr + WORD))

    @prev.setter
    def prev(self, value: Any) -> None:
        self._mem().write_word(self.addr + WORD, value)


class PoisonedListHead(ListHead):
    """A list head inside a quarantined (kasan) object."""

    __slots__ = ()

    @property
    def next(self) -> Any:
        raise self.owner.cache.mem.uaf(self.owner, self.member.field + ".next", "read")

    @next.setter
    def next(self, value: Any) -> None:
        raise self.owner.cache.mem.uaf(self.owner, self.member.field + ".next", "write")

    @property
    def prev(self) -> Any:
        raise self.owner.cache.mem.uaf(self.owner, self.member.field + ".prev", "read")

    @prev.setter
    def prev(self, value: Any) -> None:
        raise self.owner.cache.mem.uaf(self.owner, self.member.field + ".prev", "write")


class _ViewCache:
    """Stands in for a slab cache on views made at arbitrary addresses."""

    label = "view"

    def __init__(self, mem: Memory) -> None:
        self.mem = mem


class ListHeadView(StaleListHead):
    """The 16 bytes at an address that is not a list head of its current owner."""

    __slots__ = ()

    def describe(self) -> str:
        return f"list_head@{self.addr:#x} (inside {self._mem().describe_addr(self.addr)})"


class LockWordView:
    """spin_lock() on a word that is no longer a spinlock.

    x86 ticket spinlocks (NR_CPUS < 256): byte 0 is the owner ticket, byte 1 the
    next ticket; the lock looks free when they are equal.  Taking it bumps the next
    ticket in place, so taking a stale "lock" scribbles on whatever lives there.
    """

    __slots__ = ("addr", "mem")

    def __init__(self, mem: Memory, addr: int) -> None:
        self.mem = mem
        self.addr = addr

    def _word(self) -> int:
        return self.mem.to_int(self.mem.read_word(self.addr)) & _WORD_MASK

    def locked(self) -> bool:
        v = self._word()
        return (v & 0xFF) != ((v >> 8) & 0xFF)

    def acquire(self, blocking: bool = True) -> bool:
        v = self._word()
        owner, ticket = v & 0xFF, (v >> 8) & 0xFF
        if owner != ticket:
            if not blocking:
                return False
            raise Lockup(
                f"soft lockup: spin_lock on {self.mem.describe_addr(self.addr)} at "
                f"{self.addr:#x}, which is no longer a spinlock: the word reads {v:#018x} "
                f"(owner ticket {owner:#04x} != next ticket {ticket:#04x}), so it never frees",
                address=self.addr,
                word=v,
            )
        self.mem.write_word(self.addr, (v & ~0xFF00) | (((ticket + 1) & 0xFF) << 8))
        return True

    def release(self) -> None:
        v = self._word()
        self.mem.write_word(self.addr, (v & ~0xFF) | ((v + 1) & 0xFF))

    def describe(self) -> str:
        return f"lock word @{self.addr:#x}"


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


class Memory:
    """Kernel memory: slab caches over an address space, RCU, and stale-pointer reads."""

    def __init__(
        self,
        mode: str = "reuse",
        *,
        page_bytes: int = 4096,
        min_partial: int = 5,
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
                target = STRUCTS[f.target] if f.target else SlabObject
                raw[f.name].__set__(obj, self.cast(w[0], target) if words else None)
            elif f.kind is Kind.INT:
                raw[f.name].__set__(obj, self.to_int(w[0]))
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
            return obj

    def free(self, obj: SlabObject) -> None:
        with self.lock:
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
                return  # quarantined for ever
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
        self._rcu_pending = keep

    def quiesce(self) -> None:
        """A point where this thread holds no RCU read lock (end of an operation)."""
        with self.lock:
            self._rcu_reap()

    # -- reading and writing words ----------------------------------------------------

    def _page_of(self, addr: int) -> SlabPage:
        page = self.pages.get((addr - KERNEL_BASE) // self.page_bytes)
        if page is None:
            raise KernelOops(
                f"unable to handle kernel paging request at {addr:#018x}", address=addr
            )
        return page

    def mapped(self, addr: int) -> bool:
        return addr >= KERNEL_BASE and (addr - KERNEL_BASE) // self.page_bytes in self.pages

    def _occupant(self, page: SlabPage, addr: int) -> SlabObject | None:
        idx = (addr - page.base) // page.obj_size if page.obj_size else len(page.slots)
        return page.slots[idx] if idx < len(page.slots) else None

    def _raw_word(self, page: SlabPage, addr: int) -> Any:
        occ = self._occupant(page, addr)
        if occ is None:
            return page.tail.get((addr - page.base) // WORD, 0)
        word = (addr - occ.addr) // WORD
        if occ.junk and word in occ.junk:
            return occ.junk[word]
        hit = occ.WORDMAP.get(word)
        if hit is None:
            return 0
        f, i = hit
        value = (
            _RAW[LIVE_CLASS[type(occ)]][f.name].__get__(occ, None)
            if f.kind is not Kind.OPAQUE
            else 0
        )
        if f.kind is Kind.LIST:
            return (_LH_PREV if i else _LH_NEXT).__get__(value, ListHead)
        return value

    def read_word(self, addr: int) -> Any:
        """The 8 bytes at `addr` as the model stores them (object, list head, int...)."""
        page = self._page_of(addr)
        rem = addr % WORD
        if rem == 0:
            return self._raw_word(page, addr)
        lo = self.to_int(self._raw_word(page, addr - rem))
        hi = self.to_int(self.read_word(addr - rem + WORD)) if self.mapped(addr - rem + WORD) else 0
        return ((lo >> (8 * rem)) | (hi << (64 - 8 * rem))) & _WORD_MASK

    def _store(self, occ: SlabObject, f: Field, i: int, value: Any) -> None:
        live = LIVE_CLASS[type(occ)]
        if f.kind is Kind.LIST:
            lh = _RAW[live][f.name].__get__(occ, live)
            (_LH_PREV if i else _LH_NEXT).__set__(lh, self.listptr(value))
        elif f.kind is Kind.PTR:
            target = STRUCTS[f.target] if f.target else SlabObject
            _RAW[live][f.name].__set__(occ, self.cast(value, target))
        elif f.kind is Kind.INT:
            _RAW[live][f.name].__set__(occ, self.to_int(value))
        else:  # lock words and opaque words only keep their bits
            occ.junk = {**(occ.junk or {}), f.word + i: self.to_int(value)}

    def write_word(self, addr: int, value: Any) -> None:
        page = self._page_of(addr)
        rem = addr % WORD
        if rem:
            lo_addr = addr - rem
            v = self.to_int(value)
            lo = self.to_int(self.read_word(lo_addr))
            keep = (1 << (8 * rem)) - 1
            self.write_word(lo_addr, (lo & keep) | ((v << (8 * rem)) & _WORD_MASK))
            if self.mapped(lo_addr + WORD):
                hi = self.to_int(self.read_word(lo_addr + WORD))
                self.write_word(lo_addr + WORD, (hi & ~keep & _WORD_MASK) | (v >> (64 - 8 * rem)))
            return
        occ = self._occupant(page, addr)
        if occ is None:
            page.tail[(addr - page.base) // WORD] = self.to_int(value)
            return
        word = (addr - occ.addr) // WORD
        hit = occ.WORDMAP.get(word)
        if hit is None:
            occ.junk = {**(occ.junk or {}), word: self.to_int(value)}
            return
        if occ.junk and word in occ.junk and hit[0].kind is not Kind.LOCK:
            del occ.junk[word]
        self._store(occ, hit[0], hit[1], value)

    # -- typed views ------------------------------------------------------------------

    def to_int(self, value: Any) -> int:
        """The bits of a stored word."""
        if value is None:
            return 0
        if isinstance(value, int):
            return value & _WORD_MASK
        if isinstance(value, (SlabObject, ListHead, LockWordView)):
            return value.addr
        if isinstance(value, BadAddress):
            return value.address
        locked = getattr(value, "locked", None)
        if callable(locked):
            return 0x0100 if locked() else 0  # a ticket lock: next ticket one ahead
        return 0

    def listptr(self, value: Any) -> Any:
        """A stored word used as a struct list_head pointer."""
        if isinstance(value, (ListHead, BadAddress)):
            return value
        addr = self.to_int(value)
        if addr == 0:
            return NULL_LIST
        return self.listhead_at(addr)

    def listhead_at(self, addr: int) -> Any:
        if not self.mapped(addr):
            return BadAddress(addr, "a wild pointer")
        occ = self._occupant(self._page_of(addr), addr)
        if occ is not None and (addr - occ.addr) % WORD == 0:
            hit = occ.WORDMAP.get((addr - occ.addr) // WORD)
            if hit is not None and hit[0].kind is Kind.LIST and hit[1] == 0:
                live = LIVE_CLASS[type(occ)]
                return _RAW[live][hit[0].name].__get__(occ, live)
        key = (ListHead, addr)
        view: Any = self.views.get(key)
        if view is None:
            view = object.__new__(ListHeadView)
            view.addr = addr
            view.owner = self.viewcache_owner
            view.member = _VIEW_MEMBER
            self.views[key] = view
        return view

    @property
    def viewcache_owner(self) -> Any:
        owner: Any = self.__dict__.get("_view_owner")
        if owner is None:
            owner = object.__new__(STALE[AnonVma])
            owner.cache = self.viewcache
            owner.addr = 0
            owner.name = "memory"
            self.__dict__["_view_owner"] = owner
        return owner

    def cast(self, value: Any, cls: type) -> Any:
        """A stored word used as a pointer to `cls`: the object there, or a view of it."""
        if value is None or isinstance(value, (cls, BadAddress)):
            return value
        addr = self.to_int(value)
        if addr == 0:
            return None
        return self.object_at(addr, cls)

    def object_at(self, addr: int, cls: type) -> Any:
        if not self.mapped(addr):
            return BadAddress(addr, f"a wild {getattr(cls, 'STRUCT', 'object')} pointer")
        occ = self._occupant(self._page_of(addr), addr)
        if occ is not None and occ.addr == addr and isinstance(occ, cls):
            return occ
        if cls is SlabObject or cls not in STALE:
            return BadAddress(addr, "an untyped pointer")
        key = (cls, addr)
        view: Any = self.views.get(key)
        if view is None:
            view = object.__new__(STALE[cls])
            view.addr, view.cache, view.state = addr, self.viewcache, VIEW
            view.serial = view.gen = 0
            view.name = f"{getattr(cls, 'STRUCT', 'object')}@{addr:#x}"
            view.junk = None
            view.alloc_site = view.free_site = None
            self.views[key] = view
        return view

    def lock_at(self, addr: int) -> Any:
        occ = self._occupant(self._page_of(addr), addr)
        if occ is not None and (addr - occ.addr) % WORD == 0:
            word = (addr - occ.addr) // WORD
            hit = occ.WORDMAP.get(word)
            if hit is not None and hit[0].kind is Kind.LOCK and not (occ.junk and word in occ.junk):
                live = LIVE_CLASS[type(occ)]
                lock = _RAW[live][hit[0].name].__get__(occ, live)
                if lock is not None:
                    return lock
        return LockWordView(self, addr)

    def typed_read(self, addr: int, f: Field) -> Any:
        kind = f.kind
        if kind is Kind.LIST:
            return self.listhead_at(addr)
        if kind is Kind.LOCK:
            return self.lock_at(addr)
        value = self.read_word(addr)
        if kind is Kind.PTR:
            return self.cast(value, STRUCTS[f.target] if f.target else SlabObject)
        return self.to_int(value)

    def typed_write(self, addr: int, f: Field, value: Any) -> None:
        if f.kind is Kind.LIST:
            self.write_word(addr, value.next)
            self.write_word(addr + WORD, value.prev)
        else:
            self.write_word(addr, value)

    def describe_addr(self, addr: int) -> str:
        """What occupies `addr` now, for reports."""
        if not self.mapped(addr):
            return "unmapped memory"
        page = self._page_of(addr)
        occ = self._occupant(page, addr)
        if occ is None:
            return f"the unused tail of slab page {page.pageno}"
        hit = occ.WORDMAP.get((addr - occ.addr) // WORD)
        field = hit[0].name if hit else f"+{addr - occ.addr}"
        state = {LIVE: "", FREE: " (free)"}.get(occ.state, "")
        owner = page.cache.label if page.cache else "a freed slab page"
        return f"{occ.name}{state}.{field} [{owner}]"

    # -- kasan ------------------------------------------------------------------------

    def uaf(self, obj: SlabObject, field: str, access: str) -> UseAfterFree:
        site = self.current_site()
        return UseAfterFree(
            f"KASAN: use-after-free {access} of {obj.name}->{field} in {_accessor()} "
            f"(allocated at {_site_text(obj.alloc_site)}, freed at {_site_text(obj.free_site)}, "
            f"accessed at {_site_text(site)})",
            object=obj.name,
            field=field,
            access=access,
            function=_accessor(),
            allocated_at=_site_text(obj.alloc_site),
            freed_at=_site_text(obj.free_site),
            accessed_at=_site_text(site),
        )

    def double_free(self, obj: SlabObject) -> UseAfterFree:
        site = self.current_site()
        return UseAfterFree(
            f"KASAN: double-free of {obj.name} in {_accessor()} (allocated at "
            f"{_site_text(obj.alloc_site)}, freed at {_site_text(obj.free_site)}, freed again at "
            f"{_site_text(site)})",
            object=obj.name,
            access="double-free",
            function=_accessor(),
            allocated_at=_site_text(obj.alloc_site),
            freed_at=_site_text(obj.free_site),
            accessed_at=_site_text(site),
        )

    def is_freed(self, obj: Any) -> bool:
        return isinstance(obj, SlabObject) and obj.state != LIVE


def _site_text(site: Any) -> str:
    if site is None:
        return "?"
    if isinstance(site, tuple) and len(site) == 2:
        return f"line {site[0]} ({site[1]})"
    return str(site)
