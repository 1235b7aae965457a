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
    kind: str  # "fix" (went into 2.6.34) or "thread" (proposed in the April 2010 thread)
    changes: str
    source: str
    reconstructed: bool = False


PATCHES: tuple[Patch, ...] = (
    Patch(
        "reuse-singular",
        "fix",
        "find_mergeable_anon_vma reuses a neighbour's anon_vma only when the neighbour's "
        "chain is a single entry (anon_vma_compatible + reusable_anon_vma)",
        "d0e9fe17 (Linus Torvalds, 10 Apr 2010)",
    ),
    Patch(
        "adjust-exporter",
        "fix",
        "vma_adjust tracks importer and exporter and clones the chain from the exporter",
        "287d97ac (Linus Torvalds, Apr 2010)",
    ),
    Patch(
        "clone-order",
        "fix",
        "anon_vma_clone walks the source chain in reverse, keeping newest->oldest order",
        '"anon_vma: clone the anon_vma chain in the right order" (Linus Torvalds, Apr 2010)',
    ),
    Patch(
        "oldest-anon-vma",
        "fix",
        "__page_set_anon_rmap gives non-exclusive pages the anon_vma of the chain's last "
        "entry (the oldest ancestor)",
        "ea90002b (Linus Torvalds, 12 Apr 2010)",
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
