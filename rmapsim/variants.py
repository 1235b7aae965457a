"""Kernel variants: a base plus independent patches, named as in variants.md.

A variant is written ``BASE+patch+patch``; ``BASE`` may be the base or a preset
(``2.6.34+hannes-merge``).  Each patch toggles the rule of the few functions it
changes; the kernel functions consult `Variant` flags and their docstrings say
which rule they follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmapsim.errors import ModelError

BASE = "2.6.34-rc3"


@dataclass(frozen=True)
class Patch:
    name: str
    #: "fix" (went into a released kernel) or "thread" (proposed in the April 2010 thread)
    kind: str
    changes: str
    source: str
    reconstructed: bool = False
    #: The release that first shipped it (fixes), for `rmapstress list`.
    release: str = ""


PATCHES: tuple[Patch, ...] = (
    Patch(
        "reuse-singular",
        "fix",
        "find_mergeable_anon_vma reuses a neighbour's anon_vma only when the neighbour's "
        "chain is a single entry (anon_vma_compatible + reusable_anon_vma)",
        "d0e9fe17 (Linus Torvalds, 10 Apr 2010)",
        release="2.6.34",
    ),
    Patch(
        "adjust-exporter",
        "fix",
        "vma_adjust tracks importer and exporter and clones the chain from the exporter",
        "287d97ac (Linus Torvalds, 10 Apr 2010)",
        release="2.6.34",
    ),
    Patch(
        "clone-order",
        "fix",
        "anon_vma_clone walks the source chain in reverse, keeping newest->oldest order",
        '646d87b4 "anon_vma: clone the anon_vma chain in the right order" (Linus Torvalds, '
        "11 Apr 2010)",
        release="2.6.34",
    ),
    Patch(
        "oldest-anon-vma",
        "fix",
        "__page_set_anon_rmap gives non-exclusive pages the anon_vma of the chain's last "
        "entry (the oldest ancestor)",
        "ea90002b (Linus Torvalds, 12 Apr 2010)",
        release="2.6.34",
    ),
    Patch(
        "rik-v2",
        "thread",
        "anon_vma_prepare links a vma with a mergeable neighbour to all of the neighbour's "
        "anon_vmas with anon_vma_clone, under mmap_sem read only, and sets nothing else",
        "Rik van Riel, [PATCH -v2] rmap: make anon_vma_prepare link in all the anon_vmas of "
        "a mergeable VMA (LKML, 9 Apr 2010; text not available)",
        reconstructed=True,
    ),
    Patch(
        "clone-sets-anon-vma",
        "thread",
        "anon_vma_clone(dst, src) ends its success path with dst->anon_vma = src->anon_vma",
        "Linus Torvalds' suggestion, LKML 9 Apr 2010 (quoted in the seed mail)",
    ),
    Patch(
        "hannes-merge",
        "thread",
        "anon_vma_merge keeps next's anon_vmas: drops next's chain only when vma's chain is "
        "not singular, else moves next's AVCs to vma one by one under each anon_vma's lock",
        "Johannes Weiner, LKML 9 Apr 2010 (the seed mail's diff)",
    ),
    Patch(
        "anon-vma-refcount",
        "fix",
        "anon_vma gains external_refcount (shared by KSM and migration); unmap_and_move "
        "pins the anon_vma of a mapped page with it for the whole migration, gives up on "
        "an unmapped page unless it is in the swap cache (then migrates it without "
        "remapping), and the last reference frees an anon_vma whose list is empty; "
        "anon_vma_unlink frees only when the list is empty and the count is zero",
        "3f6c8272, 7f60c214, 67b9509b, 3fe2011f (Mel Gorman, memory compaction series, "
        "24 May 2010)",
        release="2.6.35",
    ),
    Patch(
        "root-anon-vma",
        "fix",
        "every anon_vma points at the root (oldest) anon_vma of its tree: anon_vma_prepare "
        "makes a new one its own root, anon_vma_fork gives the child's the parent's root "
        "and pins it with a reference dropped when the child's is freed (drop_anon_vma); "
        "every anon_vma lock operation (prepare, link, unlink, page_lock_anon_vma, "
        "rmap_walk_anon) takes anon_vma->root->lock, reading ->root each time; vma_adjust "
        "takes that lock around the boundary writes again (vma->anon_vma's root, when "
        "inserting, importing or moving vm_start)",
        "5c341ee1, 012f1800, 76545066 (Rik van Riel, 9 Aug 2010)",
        release="2.6.36-rc1",
    ),
    Patch(
        "root-rmap",
        "fix",
        "__page_set_anon_rmap leaves a page that already has an anon_vma alone and gives "
        "other non-exclusive pages anon_vma->root; an exclusive swap-in goes to the vma's "
        "own anon_vma (do_page_add_anon_rmap); anon_vma_prepare adds the new edge at the "
        "tail of the anon_vma's list; __page_check_anon_rmap checks the roots match and "
        "drop_anon_vma that the count is positive",
        "288468c3, 26ba0cb6, 44ab57a0 (Andrea Arcangeli), ad8c2ee8 (Rik van Riel), 9 Aug 2010",
        release="2.6.36-rc1",
    ),
    Patch(
        "root-lock-recheck",
        "fix",
        "page_lock_anon_vma reads anon_vma->root once, locks that root and checks "
        "page_mapped() again; if the page was unmapped meanwhile it unlocks the same root "
        "and fails, so page_unlock_anon_vma can never address another root's lock",
        'f18194275c39 "mm: fix hang on anon_vma->root->lock" (Hugh Dickins, 25 Aug 2010)',
        release="2.6.36-rc3",
    ),
    Patch(
        "swapin-recheck",
        "fix",
        "do_swap_page, once it holds the page lock, checks that the page it looked up is "
        "still in the swap cache under the faulting entry's slot, and lets the fault retry "
        "if not: a slot freed and handed out again meanwhile no longer maps another "
        "address's page (pte_same alone cannot tell the slot's two lives apart)",
        '4969c1192d15 "mm: fix swapin race condition" (Andrea Arcangeli, 2010; also in '
        "2.6.35.6)",
        release="2.6.36",
    ),
)
PATCH_NAMES = tuple(p.name for p in PATCHES)
_PATCHES = {p.name: p for p in PATCHES}

#: preset name -> (patches, role in the thread)
PRESETS: dict[str, tuple[tuple[str, ...], str]] = {
    "2.6.34-rc3": ((), "the code that crashed after hibernation"),
    "rik-v2": (
        ("rik-v2",),
        'Rik\'s patch as first tested ("third hibernate cycle is a charm^Wboom")',
    ),
    "rik-v2-dst": (
        ("rik-v2", "clone-sets-anon-vma"),
        "Rik's patch with Linus' line: the endless list_for_each_entry walk with "
        "anon_vma->lock held",
    ),
    "hannes-merge": (
        ("hannes-merge",),
        "Johannes' patch in the seed mail: \"compiles and boots but I have not really "
        'exercised this code"',
    ),
    "2.6.34": (
        ("reuse-singular", "adjust-exporter", "clone-order", "oldest-anon-vma"),
        "the released kernel",
    ),
    "2.6.35": (
        (
            "reuse-singular",
            "adjust-exporter",
            "clone-order",
            "oldest-anon-vma",
            "anon-vma-refcount",
            "root-anon-vma",
            "root-rmap",
        ),
        "the root anon_vma and root locking before Hugh's fix: what hung in kbuild tests "
        "(\"anon_vma_prepare() spinning on a newly allocated anon_vma's lock\")",
    ),
    "2.6.36": (
        (
            "reuse-singular",
            "adjust-exporter",
            "clone-order",
            "oldest-anon-vma",
            "anon-vma-refcount",
            "root-anon-vma",
            "root-rmap",
            "root-lock-recheck",
            "swapin-recheck",
        ),
        "the released kernel with Hugh's fix and the migration fixes",
    ),
}

#: preset -> how its code relates to what ran in 2010: what was tested, or a guess.
PROVENANCE: dict[str, str] = {
    "2.6.34-rc3": "tested: the kernel that crashed for Borislav and in bugzilla 15680 "
    "(reconstructed from 2.6.33 and 5beb4930, the April fixes taken out)",
    "rik-v2": "a guess at what was tested: the text of Rik's -v2 is not available, and the "
    "BUG_ON(!anon_vma) this reconstruction hits on the first write fault was never "
    "reported; kept only to compare with rik-v2-dst",
    "rik-v2-dst": "tested: what the thread says Borislav ran when the endless walk under "
    "anon_vma->lock appeared (Rik's -v2 with Linus' dst->anon_vma line; the -v2 part is "
    "reconstructed)",
    "hannes-merge": "exact text (the seed mail's diff); the thread never reports running it",
    "2.6.34": "released 16 May 2010; checked against the 2.6.34 tree",
    "2.6.35": "tested (Hugh's kbuild boxes): the reverse map of 2.6.36-rc1 and -rc2, checked "
    "against those commits.  Named 2.6.35 here, but the released 2.6.35 (1 Aug 2010) had no "
    "root anon_vma: its reverse map is 2.6.34+anon-vma-refcount",
    "2.6.36": "released 20 Oct 2010 (Hugh's fix is in 2.6.36-rc3); checked against the "
    "2.6.36 tree",
}


@dataclass(frozen=True)
class Variant:
    """A base plus a set of patches."""

    patches: frozenset[str]

    @property
    def name(self) -> str:
        """The canonical spelling: the largest preset it contains, plus the other patches.

        ``2.6.34-rc3+reuse-singular+adjust-exporter+clone-order+oldest-anon-vma+hannes-merge``
        is spelled ``2.6.34+hannes-merge``.
        """
        best, best_patches = BASE, frozenset[str]()
        for preset, (patches, _) in PRESETS.items():
            ps = frozenset(patches)
            if ps <= self.patches and len(ps) > len(best_patches):
                best, best_patches = preset, ps
        rest = [p for p in PATCH_NAMES if p in self.patches - best_patches]
        return "+".join([best, *rest])

    @property
    def expression(self) -> str:
        return "+".join([BASE, *[p for p in PATCH_NAMES if p in self.patches]])

    def has(self, patch: str) -> bool:
        return patch in self.patches

    @property
    def reconstructed(self) -> tuple[str, ...]:
        return tuple(p for p in PATCH_NAMES if p in self.patches and _PATCHES[p].reconstructed)

    # The rules, by the function they change.
    @property
    def reuse_singular(self) -> bool:
        return "reuse-singular" in self.patches

    @property
    def adjust_exporter(self) -> bool:
        return "adjust-exporter" in self.patches

    @property
    def clone_order(self) -> bool:
        return "clone-order" in self.patches

    @property
    def oldest_anon_vma(self) -> bool:
        return "oldest-anon-vma" in self.patches

    @property
    def rik_v2(self) -> bool:
        return "rik-v2" in self.patches

    @property
    def clone_sets_anon_vma(self) -> bool:
        return "clone-sets-anon-vma" in self.patches

    @property
    def hannes_merge(self) -> bool:
        return "hannes-merge" in self.patches

    @property
    def anon_vma_refcount(self) -> bool:
        return "anon-vma-refcount" in self.patches

    @property
    def root_anon_vma(self) -> bool:
        return "root-anon-vma" in self.patches

    @property
    def root_rmap(self) -> bool:
        return "root-rmap" in self.patches

    @property
    def root_lock_recheck(self) -> bool:
        return "root-lock-recheck" in self.patches

    @property
    def swapin_recheck(self) -> bool:
        return "swapin-recheck" in self.patches

    @property
    def has_refcount(self) -> bool:
        """struct anon_vma has external_refcount (2.6.35's layout or later)."""
        return self.anon_vma_refcount or self.root_anon_vma

    def __str__(self) -> str:
        return self.name


def known_names() -> str:
    return f"bases: {BASE}; presets: {', '.join(PRESETS)}; patches: {', '.join(PATCH_NAMES)}"


def parse_variant(text: str) -> Variant:
    """Parse ``BASE[+patch...]``; an unknown name is a ModelError listing the known ones."""
    parts = [p.strip() for p in text.strip().split("+")]
    if not parts or not parts[0]:
        raise ModelError(f"empty variant name ({known_names()})")
    head, rest = parts[0], parts[1:]
    if head in PRESETS:
        patches = set(PRESETS[head][0])
    elif head in _PATCHES:
        raise ModelError(
            f"variant {text!r} must start with a base or preset, not the patch {head!r} "
            f"(try {BASE}+{head}; {known_names()})"
        )
    else:
        raise ModelError(f"unknown variant base {head!r} ({known_names()})")
    for p in rest:
        if p not in _PATCHES:
            raise ModelError(f"unknown patch {p!r} in variant {text!r} ({known_names()})")
        if p in patches:
            raise ModelError(f"patch {p!r} appears twice in variant {text!r}")
        patches.add(p)
    return Variant(frozenset(patches))


def patch(name: str) -> Patch:
    return _PATCHES[name]
