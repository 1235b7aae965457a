"""Variant names: base, patches, presets, canonical spelling, errors."""

from __future__ import annotations

import pytest

from rmapsim.errors import ModelError
from rmapsim.variants import BASE, PATCH_NAMES, PRESETS, parse_variant


def test_presets_expand_to_the_table_of_variants_md() -> None:
    assert parse_variant("2.6.34-rc3").patches == frozenset()
    assert parse_variant("rik-v2-dst").patches == {"rik-v2", "clone-sets-anon-vma"}
    assert parse_variant("2.6.34").patches == {
        "reuse-singular",
        "adjust-exporter",
        "clone-order",
        "oldest-anon-vma",
    }
    for name in PRESETS:
        assert parse_variant(name).name == name


def test_canonical_name_uses_the_largest_preset_and_expression_lists_every_patch() -> None:
    v = parse_variant(
        f"{BASE}+oldest-anon-vma+hannes-merge+clone-order+adjust-exporter+reuse-singular"
    )
    assert v.name == "2.6.34+hannes-merge"
    assert v.expression == (
        "2.6.34-rc3+reuse-singular+adjust-exporter+clone-order+oldest-anon-vma+hannes-merge"
    )
    assert parse_variant("2.6.34-rc3+rik-v2+clone-sets-anon-vma").name == "rik-v2-dst"
    assert parse_variant("2.6.34-rc3+clone-sets-anon-vma").name == "2.6.34-rc3+clone-sets-anon-vma"


def test_rules_follow_the_patches() -> None:
    v = parse_variant("2.6.34-rc3+clone-order")
    assert v.clone_order and not v.oldest_anon_vma and not v.reuse_singular
    assert parse_variant("rik-v2").reconstructed == ("rik-v2",)
    assert parse_variant("2.6.34").reconstructed == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty variant name"),
        ("2.6.37", "unknown variant base '2.6.37'"),
        ("2.6.34+bogus", "unknown patch 'bogus'"),
        ("reuse-singular", "must start with a base or preset"),
        ("2.6.34+clone-order", "patch 'clone-order' appears twice"),
    ],
)
def test_bad_names_are_refused_listing_the_known_ones(text: str, message: str) -> None:
    with pytest.raises(ModelError) as info:
        parse_variant(text)
    assert message in str(info.value)
    if "unknown" in message:
        assert all(p in str(info.value) for p in PATCH_NAMES)
