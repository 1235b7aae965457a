"""The structures of the 2.6.34 anonymous reverse map, with their memory layout.

Each slab-allocated structure (anon_vma, anon_vma_chain, vm_area_struct,
mm_struct) declares its x86-64 layout as a list of `Field`s, word by word.  Live
code uses plain attributes; the layout is what a *stale* pointer reads: once an
object is freed (and perhaps its slab page handed to another cache), reads through
an old pointer go to the words at its address, whatever now lives there
(see `rmapsim.slab`).

struct page, PTEs and swap slots are not slab memory: they are plain objects.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar

from rmapsim.atomic import atomic_read, atomic_set, atomic_t
from rmapsim.lists import ListHead, Member

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: One page table (a PTE page of 512 entries) maps 2 MiB: the unit of a split PTE lock.
PMD_SHIFT = 21
WORD = 8

# include/linux/mm.h vm_flags
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_GROWSDOWN = 0x00000100
VM_LOCKED = 0x00002000
VM_IO = 0x00004000
VM_DONTEXPAND = 0x00040000
VM_RESERVED = 0x00080000
VM_ACCOUNT = 0x00100000
VM_NORESERVE = 0x00200000
VM_HUGETLB = 0x00400000
VM_PFNMAP = 0x00000400
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_RESERVED | VM_PFNMAP
VM_RWX = VM_READ | VM_WRITE | VM_EXEC

TASK_SIZE = 0x00007FFFFFFFF000
MMAP_MIN_ADDR = 0x1000

# What a pointer value looks like when the reports print one.
KERNEL_BASE = 0xFFFF880000000000


class Kind(IntEnum):
    PTR = 1  # pointer to a structure (or NULL)
    INT = 2  # integer (addresses, flags, offsets, counters)
    LIST = 3  # struct list_head: two words
    LOCK = 4  # a spinlock word (lock object when initialised)
    OPAQUE = 5  # words the model does not use (rb nodes, ops pointers, ...)
    ATOMIC = 6  # an atomic_t: changed only through rmapsim.atomic


class Field:
    """One member of a structure at a word offset."""

    __slots__ = ("kind", "member", "name", "nwords", "target", "word")

    def __init__(
        self, name: str, word: int, kind: Kind, nwords: int = 1, target: str | None = None
    ) -> None:
        self.name = name
        self.word = word
        self.kind = kind
        self.nwords = 2 if kind is Kind.LIST else nwords
        self.target = target
        self.member: Member | None = None


class SlabObject:
    """Base of every slab-allocated structure.

    The slots up to `junk` are the model's own bookkeeping (addresses, names,
    allocation history), not kernel memory.
    """

    __slots__ = (
        "addr",
        "alloc_site",
        "cache",
        "free_site",
        "gen",
        "junk",
        "name",
        "serial",
        "state",
    )

    STRUCT: ClassVar[str] = "object"
    LAYOUT: ClassVar[tuple[Field, ...]] = ()
    SIZE: ClassVar[int] = 8
    # Derived once per class by `finish_layout`.
    WORDMAP: ClassVar[dict[int, tuple[Field, int]]] = {}
    LIST_FIELDS: ClassVar[tuple[Field, ...]] = ()

    addr: int
    alloc_site: Any
    cache: Any
    free_site: Any
    gen: int
    junk: dict[int, int] | None
    name: str
    serial: int
    state: int

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{self.STRUCT} {self.name} @{self.addr:#x}>"


def finish_layout(cls: type[SlabObject]) -> None:
    """Derive the word map and list members of a structure from its LAYOUT."""
    wordmap: dict[int, tuple[Field, int]] = {}
    lists = []
    for f in cls.LAYOUT:
        for i in range(f.nwords):
            wordmap[f.word + i] = (f, i)
        if f.kind is Kind.LIST:
            f.member = Member(cls.STRUCT, f.name, f.word * WORD)
            lists.append(f)
    cls.WORDMAP = wordmap
    cls.LIST_FIELDS = tuple(lists)
    assert max(wordmap, default=0) * WORD < cls.SIZE, cls


def member(cls: type[SlabObject], field: str) -> Member:
    for f in cls.LIST_FIELDS:
        if f.name == field:
            assert f.member is not None
            return f.member
    raise KeyError(field)


class AnonVma(SlabObject):
    """struct anon_vma (include/linux/rmap.h:27): a lock and the same_anon_vma list.

    2.6.34's layout.  The kernels with a refcount or a root pointer have layouts of
    their own (`AnonVmaRef`, `AnonVmaRoot`); `anon_vma_class` picks one per variant.
    """

    __slots__ = ("head", "lock")
    STRUCT = "anon_vma"
    SIZE = 24
    LAYOUT: ClassVar[tuple[Field, ...]] = (
        Field("lock", 0, Kind.LOCK),  # spinlock_t + ksm_refcount share word 0
        Field("head", 1, Kind.LIST),
    )

    head: ListHead
    lock: Any


class AnonVmaRef(AnonVma):
    """2.6.35's struct anon_vma: plus external_refcount (3f6c8272, 7f60c214).

    KSM and migration pin an anon_vma with it.  In the kernel the 4-byte count
    shares word 0 with the 4-byte spinlock (24 bytes in all); here it has a word of
    its own, so the object is 32 bytes.
    """

    __slots__ = ("external_refcount",)
    SIZE = 32
    LAYOUT: ClassVar[tuple[Field, ...]] = (
        Field("lock", 0, Kind.LOCK),
        Field("external_refcount", 1, Kind.ATOMIC),
        Field("head", 2, Kind.LIST),
    )

    external_refcount: atomic_t


class AnonVmaRoot(AnonVmaRef):
    """2.6.36's struct anon_vma: plus ->root, the oldest anon_vma of the tree (5c341ee1).

    Every lock operation takes the root's lock (012f1800).  x86-64 layout: the
    spinlock, the root pointer, the refcount, the list head (40 bytes).
    """

    __slots__ = ("root",)
    SIZE = 40
    LAYOUT = (
        Field("lock", 0, Kind.LOCK),
        Field("root", 1, Kind.PTR, target="anon_vma"),
        Field("external_refcount", 2, Kind.ATOMIC),
        Field("head", 3, Kind.LIST),
    )

    root: AnonVma


class AnonVmaChain(SlabObject):
    """struct anon_vma_chain (include/linux/rmap.h:56): one (vma, anon_vma) edge."""

    __slots__ = ("anon_vma", "same_anon_vma", "same_vma", "vma")
    STRUCT = "anon_vma_chain"
    SIZE = 48
    LAYOUT = (
        Field("vma", 0, Kind.PTR, target="vm_area_struct"),
        Field("anon_vma", 1, Kind.PTR, target="anon_vma"),
        Field("same_vma", 2, Kind.LIST),
        Field("same_anon_vma", 4, Kind.LIST),
    )

    vma: VmArea
    anon_vma: AnonVma
    same_vma: ListHead
    same_anon_vma: ListHead


class VmArea(SlabObject):
    """struct vm_area_struct (include/linux/mm_types.h:130), the fields the rmap uses."""

    __slots__ = (
        "anon_vma",
        "anon_vma_chain",
        "shadow_oldest",
        "vm_end",
        "vm_flags",
        "vm_mm",
        "vm_next",
        "vm_page_prot",
        "vm_pgoff",
        "vm_start",
    )
    STRUCT = "vm_area_struct"
    SIZE = 176
    LAYOUT = (
        Field("vm_mm", 0, Kind.PTR, target="mm_struct"),
        Field("vm_start", 1, Kind.INT),
        Field("vm_end", 2, Kind.INT),
        Field("vm_next", 3, Kind.PTR, target="vm_area_struct"),
        Field("vm_page_prot", 4, Kind.INT),
        Field("vm_flags", 5, Kind.INT),
        Field("vm_rb", 6, Kind.OPAQUE, nwords=3),
        Field("shared", 9, Kind.OPAQUE, nwords=4),
        Field("anon_vma_chain", 13, Kind.LIST),
        Field("anon_vma", 15, Kind.PTR, target="anon_vma"),
        Field("vm_ops", 16, Kind.OPAQUE),
        Field("vm_pgoff", 17, Kind.INT),
        Field("vm_file", 18, Kind.OPAQUE),
        Field("vm_private_data", 19, Kind.OPAQUE),
        Field("vm_truncate_count", 20, Kind.OPAQUE),
        Field("vm_policy", 21, Kind.OPAQUE),
    )

    vm_mm: MmStruct
    vm_start: int
    vm_end: int
    vm_next: VmArea | None
    vm_page_prot: int
    vm_flags: int
    anon_vma_chain: ListHead
    anon_vma: AnonVma | None
    vm_pgoff: int
    #: Audit-only shadow state (not kernel memory): the oldest anon_vma this vma's
    #: lineage owns - its first anon_vma, or its fork parent's oldest.  I6 checks
    #: that the chain's tail is this one.
    shadow_oldest: AnonVma | None

    def describe(self) -> str:
        try:
            comm = getattr(self.vm_mm, "comm", "?")
            return f"{self.name} {comm}:[{self.vm_start:#x}-{self.vm_end:#x})"
        except Exception:  # a stale vma may read garbage: its name still identifies it
            return self.name


class MmStruct(SlabObject):
    """struct mm_struct: the VMA list, the locks, and (outside kernel memory) the PTEs."""

    __slots__ = (
        "comm",
        "map_count",
        "mm_users",
        "mmap",
        "mmap_cache",
        "mmap_sem",
        "mmlist",
        "page_table_lock",
        "ptes",
        "ptlocks",
    )
    STRUCT = "mm_struct"
    SIZE = 768
    LAYOUT = (
        Field("mmap", 0, Kind.PTR, target="vm_area_struct"),
        Field("mm_rb", 1, Kind.OPAQUE),
        Field("mmap_cache", 2, Kind.PTR, target="vm_area_struct"),
        Field("get_unmapped_area", 3, Kind.OPAQUE),
        Field("unmap_area", 4, Kind.OPAQUE),
        Field("mmap_base", 5, Kind.OPAQUE),
        Field("task_size", 6, Kind.OPAQUE),
        Field("cached_hole_size", 7, Kind.OPAQUE),
        Field("free_area_cache", 8, Kind.OPAQUE),
        Field("pgd", 9, Kind.OPAQUE),
        Field("mm_users", 10, Kind.ATOMIC),
        Field("map_count", 11, Kind.INT),
        Field("mmap_sem", 12, Kind.OPAQUE, nwords=4),
        Field("page_table_lock", 16, Kind.LOCK),
        Field("mmlist", 17, Kind.LIST),
    )

    mmap: VmArea | None
    mmap_cache: VmArea | None
    mm_users: atomic_t
    map_count: int
    mmap_sem: Any
    page_table_lock: Any
    mmlist: ListHead
    #: The page tables, outside kernel memory: address -> Pte.
    ptes: dict[int, Pte]
    #: Split PTE locks (USE_SPLIT_PTLOCKS): one per page table, by address >> PMD_SHIFT.
    #: They live in the page tables' struct page, not in the mm_struct.
    ptlocks: dict[int, Any]
    comm: str


for _cls in (AnonVma, AnonVmaRef, AnonVmaRoot, AnonVmaChain, VmArea, MmStruct):
    finish_layout(_cls)

#: The structure each pointer field's target names; anon_vma is 2.6.34's unless a
#: kernel says otherwise (`rmapsim.slab.Memory.structs`).
STRUCTS: dict[str, type[SlabObject]] = {
    c.STRUCT: c for c in (AnonVma, AnonVmaChain, VmArea, MmStruct)
}
#: Every laid-out class, the anon_vma layouts of later kernels included.
ALL_STRUCTS: tuple[type[SlabObject], ...] = (
    AnonVma,
    AnonVmaRef,
    AnonVmaRoot,
    AnonVmaChain,
    VmArea,
    MmStruct,
)

AVC_SAME_VMA = member(AnonVmaChain, "same_vma")
AVC_SAME_ANON_VMA = member(AnonVmaChain, "same_anon_vma")


# -- not slab memory -------------------------------------------------------------------


class PteKind(IntEnum):
    PRESENT = 1
    ZERO = 2  # the zero page, mapped read-only by a read fault
    SWAP = 3  # a swap entry
    MIGRATION = 4  # a migration entry: `page` is the page being migrated (no reference)


class Pte:
    """One page table entry of one mm."""

    __slots__ = ("dirty", "kind", "page", "slot", "write", "young")

    def __init__(
        self,
        kind: PteKind,
        page: Page | None = None,
        slot: int = 0,
        write: bool = False,
        young: bool = True,
        dirty: bool = False,
    ) -> None:
        self.kind = kind
        self.page = page
        self.slot = slot
        self.write = write
        self.young = young
        self.dirty = dirty

    def copy(self) -> Pte:
        """The value of the entry (what a fault handler holds as orig_pte)."""
        return Pte(self.kind, self.page, self.slot, self.write, self.young, self.dirty)

    def same(self, other: Pte | None) -> bool:
        """pte_same(): the entry did not change under us (every bit compared)."""
        return (
            other is not None
            and other.kind == self.kind
            and other.page is self.page
            and other.slot == self.slot
            and other.write == self.write
            and other.young == self.young
            and other.dirty == self.dirty
        )


class Page:
    """struct page of one page frame: the anonymous-page fields of mm_types.h.

    `_count` and `_mapcount` are atomic_t, changed only through rmapsim.atomic
    (get_page/put_page and the rmap functions); `count` and `mapcount` read them.
    """

    __slots__ = (
        "_count",
        "_mapcount",
        "alloc_site",
        "dirty",
        "in_use",
        "index",
        "lock",
        "lru",
        "mapping",
        "mapping_gen",
        "name",
        "pfn",
        "private",
        "referenced",
        "serial",
        "swapcache",
    )

    def __init__(self, pfn: int, lock: Any) -> None:
        self.pfn = pfn
        self.lock = lock  # PG_locked, as a real lock
        self.in_use = False
        self.serial = 0
        self.name = f"page#{pfn}"
        self.alloc_site: Any = None
        self._count = atomic_t(0)  # references (PTEs, swap cache, reclaim, lookups)
        self._mapcount = atomic_t(-1)  # PTEs mapping it, minus one
        self.reset()

    @property
    def count(self) -> int:
        """page_count()."""
        return atomic_read(self._count)

    @property
    def mapcount(self) -> int:
        """The raw _mapcount (-1 when unmapped); page_mapcount() is this plus one."""
        return atomic_read(self._mapcount)

    def reset(self) -> None:
        """What free_hot_cold_page leaves: no mapping, no mapcount."""
        self.mapping: AnonVma | None = None
        self.mapping_gen = 0
        self.index = 0
        atomic_set(self._mapcount, -1)  # reset_page_mapcount
        self.private = 0  # swap slot while in the swap cache
        self.swapcache = False
        self.lru = False
        self.referenced = False
        self.dirty = False

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<page {self.name} mapcount={self.mapcount} mapping={self.mapping!r}>"


def shadow_oldest(vma: Any) -> AnonVma | None:
    """A vma's audit-only oldest anon_vma; None for a vma read through a wild pointer.

    It is not kernel memory, so a view of recycled memory has none.
    """
    value: AnonVma | None = getattr(vma, "shadow_oldest", None)
    return value


def linear_page_index(vma: VmArea, address: int) -> int:
    return ((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff
