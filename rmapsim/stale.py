"""What a stale pointer reads: the words of kernel memory, typed on the way out.

Live objects are plain Python objects.  A freed object has its class switched to a
"stale" variant whose fields are read from the memory words at its address (so they
see SLUB's free pointer, or whatever a new owner of a recycled slab page wrote there),
or, in kasan mode, to a poisoned variant whose every field access raises
`UseAfterFree`.  `Words` (mixed into `rmapsim.slab.Memory`) reads and writes those
words through the x86-64 layouts of `rmapsim.structs`, and turns a word into a typed
pointer: the object at that address, a view of one, or a `BadAddress` that oopses.
"""

from __future__ import annotations

import _thread
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rmapsim.atomic import AtomicWordView, atomic_t
from rmapsim.errors import KernelOops, Lockup, ModelError, UseAfterFree
from rmapsim.lists import NULL_LIST, BadAddress, ListHead, Member
from rmapsim.structs import ALL_STRUCTS, KERNEL_BASE, WORD, AnonVma, Field, Kind, SlabObject

if TYPE_CHECKING:
    from rmapsim.slab import Memory, SlabPage

LIVE, FREE, VIEW = 1, 2, 3

_LH_NEXT = ListHead.__dict__["next"]
_LH_PREV = ListHead.__dict__["prev"]
_WORD_MASK = (1 << 64) - 1
#: Serialises atomic operations made through stale pointers (AtomicWordView).
_VIEW_ATOMIC_LOCK = _thread.allocate_lock()


def signed(word: int) -> int:
    """A 64-bit word as the signed value an atomic_t (or long) holds."""
    return word - (1 << 64) if word >= 1 << 63 else word
_VIEW_MEMBER = Member("memory", "list_head", 0)


def _raw_descriptors(cls: type[SlabObject]) -> dict[str, Any]:
    out = {}
    for klass in cls.__mro__:
        for name in getattr(klass, "__slots__", ()):
            if name not in out:
                out[name] = klass.__dict__[name]
    return out


_RAW: dict[type, dict[str, Any]] = {c: _raw_descriptors(c) for c in ALL_STRUCTS}


#: type -> (the raw slot table of its structure, that structure's class), found once.
_PEEK: dict[type, tuple[dict[str, Any], type]] = {}


def peek(obj: SlabObject, name: str, default: Any = None) -> Any:
    """Read a field's stored value, bypassing stale/poisoned views (for audits)."""
    found = _PEEK.get(type(obj))
    if found is None:
        klass = next((c for c in type(obj).__mro__ if c in _RAW), None)
        if klass is None:
            raise ModelError(f"not a slab object: {obj!r}")
        found = _PEEK[type(obj)] = (_RAW[klass], klass)
    table, klass = found
    try:
        return table[name].__get__(obj, klass)
    except AttributeError:
        return default


def peek_list(head: ListHead) -> tuple[Any, Any]:
    """(next, prev) of a list head as stored, bypassing views."""
    return _LH_NEXT.__get__(head, ListHead), _LH_PREV.__get__(head, ListHead)


#: Modules that implement memory itself: an access is blamed on the first frame outside.
MEMORY_MODULES = ("rmapsim.slab", "rmapsim.stale", "rmapsim.lists", "rmapsim.walk")
#: Static inlines of include/linux/rmap.h: the kernel's report names their caller.
INLINE_HELPERS = frozenset({"anon_vma_lockptr", "anon_vma_lock", "anon_vma_unlock"})


def _accessor() -> str:
    """The modelled kernel function that made the current access."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if (
            module.startswith("rmapsim.")
            and module not in MEMORY_MODULES
            and frame.f_code.co_name not in INLINE_HELPERS
        ):
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


STALE: dict[type, type] = {c: _variant(c, "Stale", _stale_property) for c in ALL_STRUCTS}
POISONED: dict[type, type] = {c: _variant(c, "Poisoned", _poisoned_property) for c in ALL_STRUCTS}
LIVE_CLASS: dict[type, type] = {}
for _c in ALL_STRUCTS:
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
    ticket in place (one locked xadd), so taking a stale "lock" scribbles on
    whatever lives there, and then the CPU spins until the owner byte reaches its
    ticket.

    With one CPU (single-threaded runs) nothing else can change the word, so a spin
    is a lockup at once (`Lockup`).  On several CPUs (`Words.spin_on_word` set) the
    CPU really spins, re-reading the word, because another CPU may still write that
    memory; a watchdog names the spin when it never ends.
    """

    __slots__ = ("addr", "mem")

    def __init__(self, mem: Words, addr: int) -> None:
        self.mem = mem
        self.addr = addr

    def _word(self) -> int:
        return self.mem.to_int(self.mem.read_word(self.addr)) & _WORD_MASK

    def word(self) -> int:
        """The word now (for evidence)."""
        return self._word()

    def locked(self) -> bool:
        v = self._word()
        return (v & 0xFF) != ((v >> 8) & 0xFF)

    def owner_is(self, ticket: int) -> bool:
        """Has the owner byte reached `ticket` (the spinner's turn)?"""
        return self._word() & 0xFF == ticket

    def acquire(self, blocking: bool = True) -> bool:
        spin = self.mem.spin_on_word
        with _VIEW_ATOMIC_LOCK:  # the ticket bump is one locked xadd on the machine
            v = self._word()
            owner, ticket = v & 0xFF, (v >> 8) & 0xFF
            if owner == ticket:
                self.mem.write_word(self.addr, (v & ~0xFF00) | (((ticket + 1) & 0xFF) << 8))
                return True
            if not blocking:
                return False
            if spin is not None:  # take a ticket, then wait for it
                self.mem.write_word(self.addr, (v & ~0xFF00) | (((ticket + 1) & 0xFF) << 8))
        if spin is not None:
            spin(self, ticket)
            return True
        raise Lockup(
            f"soft lockup: spin_lock on {self.mem.describe_addr(self.addr)} at "
            f"{self.addr:#x}, which is no longer a spinlock: the word reads {v:#018x} "
            f"(owner ticket {owner:#04x} != next ticket {ticket:#04x}), so it never frees",
            address=self.addr,
            word=v,
        )

    def release(self) -> None:
        with _VIEW_ATOMIC_LOCK:  # the owner byte's increment
            v = self._word()
            self.mem.write_word(self.addr, (v & ~0xFF) | ((v + 1) & 0xFF))

    def describe(self) -> str:
        return f"lock word @{self.addr:#x}"


class Words:
    """Reading and writing kernel memory words (a mixin of Memory)."""

    page_bytes: int
    pages: dict[int, SlabPage]
    views: dict[tuple[type, int], Any]
    viewcache: Any
    structs: dict[str, type[SlabObject]]
    #: When a list: every object allocated, freed or written through memory words (a
    #: stale pointer) is appended, so a single-threaded auditor knows what a line reached.
    journal: list[Any] | None
    #: How a CPU spins on a word that is no longer a free lock (`LockWordView`): set by
    #: a kernel running on several CPUs; None means one CPU, where it spins for ever.
    spin_on_word: Any = None

    def current_site(self) -> Any:
        raise NotImplementedError

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
        value: Any = (
            _RAW[LIVE_CLASS[type(occ)]][f.name].__get__(occ, None)
            if f.kind is not Kind.OPAQUE
            else 0
        )
        if f.kind is Kind.LIST:
            return (_LH_PREV if i else _LH_NEXT).__get__(value, ListHead)
        if f.kind is Kind.ATOMIC:
            return int(value.counter) & _WORD_MASK
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
        if self.journal is not None:
            self.journal.append(occ)
        live = LIVE_CLASS[type(occ)]
        if f.kind is Kind.LIST:
            lh = _RAW[live][f.name].__get__(occ, live)
            (_LH_PREV if i else _LH_NEXT).__set__(lh, self.listptr(value))
        elif f.kind is Kind.PTR:
            target = self.structs[f.target] if f.target else SlabObject
            _RAW[live][f.name].__set__(occ, self.cast(value, target))
        elif f.kind is Kind.INT:
            _RAW[live][f.name].__set__(occ, self.to_int(value))
        elif f.kind is Kind.ATOMIC:
            _RAW[live][f.name].__get__(occ, live).counter = signed(self.to_int(value))
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
        if isinstance(value, atomic_t):
            return int(value.counter) & _WORD_MASK
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
        if kind is Kind.ATOMIC:
            return AtomicWordView(self, addr, _VIEW_ATOMIC_LOCK)
        value = self.read_word(addr)
        if kind is Kind.PTR:
            return self.cast(value, self.structs[f.target] if f.target else SlabObject)
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


def _site_text(site: Any) -> str:
    if site is None:
        return "?"
    if isinstance(site, tuple) and len(site) == 2:
        return f"line {site[0]} ({site[1]})"
    return str(site)
