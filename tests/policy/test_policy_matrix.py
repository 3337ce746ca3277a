"""``callgate.policy.matrix`` against ``decide()`` itself: the class shortcut (one decision per
pair of interchangeable extensions) must give every cell, count and change that asking
``decide()`` for every pair gives."""

from __future__ import annotations

from itertools import product
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.policy import PolicyDocument, compile_policy, parse_document
from callgate.policy.matrix import (
    ACTIONS,
    SIGNATURE_FIELDS,
    decide_cell,
    extension_view,
    extensions_of,
    group_summary,
    impact,
    permission_matrix,
)
from reference_policy import REFERENCE_DOCUMENT

EXTS = ["100", "101", "102", "103", "104", "105"]
GROUPS = ["a", "b", "c"]


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    groups = {g: draw(st.lists(st.sampled_from(EXTS), max_size=4, unique=True)) for g in GROUPS}
    document: dict[str, Any] = {
        "allow_all": draw(st.sampled_from([False, False, False, True])),
        "pickup_all": draw(st.booleans()),
        "groups": groups,
        "pickup_share_groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)),
        "phone_replace_groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)),
    }
    for prefix in ("eavesdrop_", "whisper_"):
        for ext in draw(st.lists(st.sampled_from(EXTS), max_size=3, unique=True)):
            document[prefix + ext] = draw(
                st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True)
            )
    return document


def decoded(matrix: dict[str, Any], action: str, i: int, j: int) -> tuple[bool, str, Any]:
    width, alphabet = matrix["width"], matrix["alphabet"]
    code = 0
    for char in matrix["cells"][action][i][j * width : (j + 1) * width]:
        code = code * 64 + alphabet.index(char)
    entry = matrix["legend"][code]
    return (entry["allowed"], entry["reason"], entry["group"])


def check_matrix(raw: dict[str, Any]) -> None:
    document = parse_document(raw)
    policy = compile_policy(document)
    matrix = permission_matrix(document, policy)
    exts = matrix["extensions"]
    for action in ACTIONS:
        for (i, ext), (j, target) in product(enumerate(exts), repeat=2):
            assert decoded(matrix, action, i, j) == decide_cell(policy, action, ext, target)
    summary = group_summary(document, policy)
    for (i, a), (j, b) in product(enumerate(summary["groups"]), repeat=2):
        pairs = [(x, y) for x in document.groups[a] for y in document.groups[b] if x != y]
        assert summary["pairs"][i][j] == len(pairs)
        for action in ACTIONS:
            allowed = sum(decide_cell(policy, action, x, y)[0] for x, y in pairs)
            assert summary["allowed"][action][i][j] == allowed
    for ext in [*exts, "199"]:  # "199": an extension the document does not name
        view = extension_view(document, policy, ext)
        for j, other in enumerate(view["others"]):
            for action in ACTIONS:
                row = decoded({**view, "cells": {action: [view["row"][action]]}}, action, 0, j)
                assert row == decide_cell(policy, action, ext, other)
                column = decoded(
                    {**view, "cells": {action: [view["column"][action]]}}, action, 0, j
                )
                assert column == decide_cell(policy, action, other, ext)


def test_signature_knows_every_field_of_the_document() -> None:
    """A new field naming extensions would make classes too coarse: teach ``signature`` it."""
    assert set(PolicyDocument.model_fields) == SIGNATURE_FIELDS


def test_the_reference_policy() -> None:
    check_matrix(REFERENCE_DOCUMENT)


@settings(max_examples=60, deadline=None)
@given(documents())
def test_any_document_cell_by_cell(raw: dict[str, Any]) -> None:
    check_matrix(raw)


@settings(max_examples=60, deadline=None)
@given(documents(), documents())
def test_the_impact_is_every_flip_between_two_documents(
    old_raw: dict[str, Any], new_raw: dict[str, Any]
) -> None:
    old_doc, new_doc = parse_document(old_raw), parse_document(new_raw)
    old, new = compile_policy(old_doc), compile_policy(new_doc)
    exts = sorted(set(extensions_of(old_doc)) | set(extensions_of(new_doc)))
    expected = set()
    for action in ACTIONS:
        for ext, target in product(exts, repeat=2):
            was, now = decide_cell(old, action, ext, target), decide_cell(new, action, ext, target)
            if was[0] != now[0]:
                expected.add((action, ext, target, now[0]))
    found = impact(old_doc, old, new_doc, new, limit=10_000)
    assert {(c.action, c.ext, c.target, c.after[0]) for c in found.changes} == expected
    assert sum(found.became_allowed.values()) == sum(1 for e in expected if e[3])
    assert sum(found.became_denied.values()) == sum(1 for e in expected if not e[3])
    assert not found.truncated
