"""``callgate.policy.matrix`` against ``decide()`` itself: the class shortcut (one decision per
pair of interchangeable extensions) must give every cell, count and change that asking
``decide()`` for every pair gives -- with protected extensions and grants too, at a given time."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.policy import PolicyDocument, compile_policy, parse_document
from callgate.policy.grants import Grant
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
from callgate.policy.settings import CallControlSettings
from callgate.policy.supervision import Supervision, compile_supervision
from reference_policy import REFERENCE_DOCUMENT

EXTS = ["100", "101", "102", "103", "104", "105"]
GROUPS = ["a", "b", "c"]
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


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


@st.composite
def grant_lists(draw: st.DrawFn) -> list[Grant]:
    """A few grants around ``NOW``: active, over, to come; reaching groups, extensions or both
    (and ``"199"``, an extension no document names)."""
    found = []
    for n in range(draw(st.integers(0, 4))):
        ext = draw(st.sampled_from([*EXTS, "199"]))
        groups = draw(st.lists(st.sampled_from([*GROUPS, "gone"]), max_size=2, unique=True))
        others = [e for e in [*EXTS, "199"] if e != ext]
        extensions = draw(st.lists(st.sampled_from(others), max_size=2, unique=True))
        if not groups and not extensions:
            extensions = [others[0]]
        start = NOW + HOUR * draw(st.sampled_from([-2, -1, 1]))
        body = {
            "id": f"g{n}",
            "ext": ext,
            "action": draw(st.sampled_from(["eavesdrop", "whisper", "pickup"])),
            "groups": groups,
            "extensions": extensions,
            "from": start,
            "until": start + HOUR * draw(st.sampled_from([1, 3])),
            "note": "test",
            "created_by": "tests",
        }
        found.append(Grant.model_validate(body))
    return found


def supervision_of(
    document: PolicyDocument, protected: list[str], grants: list[Grant]
) -> Supervision | None:
    settings = CallControlSettings(protected_extensions=tuple(protected))
    return compile_supervision(settings, grants, document)


def decoded(matrix: dict[str, Any], action: str, i: int, j: int) -> tuple[object, ...]:
    width, alphabet = matrix["width"], matrix["alphabet"]
    code = 0
    for char in matrix["cells"][action][i][j * width : (j + 1) * width]:
        code = code * 64 + alphabet.index(char)
    entry = matrix["legend"][code]
    return (entry["allowed"], entry["reason"], entry["group"], tuple(entry.get("grant_ids", ())))


def check_matrix(
    raw: dict[str, Any], protected: list[str] | None = None, grants: list[Grant] | None = None
) -> None:
    document = parse_document(raw)
    policy = compile_policy(document)
    supervision = supervision_of(document, protected or [], grants or [])
    beside: dict[str, Any] = {"now": NOW, "supervision": supervision}

    def cell(action: str, ext: str, target: str) -> tuple[object, ...]:
        return decide_cell(policy, action, ext, target, **beside)

    matrix = permission_matrix(document, policy, **beside)
    exts = matrix["extensions"]
    assert exts == extensions_of(document, supervision, NOW)
    for action in ACTIONS:
        for (i, ext), (j, target) in product(enumerate(exts), repeat=2):
            assert decoded(matrix, action, i, j) == cell(action, ext, target)
    ends = {grant.id: grant.until for grant in grants or []}
    for entry in matrix["legend"]:
        if "grant_ids" in entry:
            (grant_id,) = entry["grant_ids"]  # a directed decision names one grant
            assert datetime.fromisoformat(entry["until"]) == ends[grant_id]
    summary = group_summary(document, policy, **beside)
    for (i, a), (j, b) in product(enumerate(summary["groups"]), repeat=2):
        pairs = [(x, y) for x in document.groups[a] for y in document.groups[b] if x != y]
        assert summary["pairs"][i][j] == len(pairs)
        for action in ACTIONS:
            allowed = sum(bool(cell(action, x, y)[0]) for x, y in pairs)
            assert summary["allowed"][action][i][j] == allowed
    for ext in [*exts, "198"]:  # "198": an extension neither the document nor a grant names
        view = extension_view(document, policy, ext, **beside)
        for j, other in enumerate(view["others"]):
            for action in ACTIONS:
                row = decoded({**view, "cells": {action: [view["row"][action]]}}, action, 0, j)
                assert row == cell(action, ext, other)
                column = decoded(
                    {**view, "cells": {action: [view["column"][action]]}}, action, 0, j
                )
                assert column == cell(action, other, ext)


def test_signature_knows_every_field_of_the_document() -> None:
    """A new field naming extensions would make classes too coarse: teach ``signature`` it."""
    assert set(PolicyDocument.model_fields) == SIGNATURE_FIELDS


def test_the_reference_policy() -> None:
    check_matrix(REFERENCE_DOCUMENT)


@settings(max_examples=60, deadline=None)
@given(documents())
def test_any_document_cell_by_cell(raw: dict[str, Any]) -> None:
    check_matrix(raw)


@settings(max_examples=80, deadline=None)
@given(
    documents(),
    st.lists(st.sampled_from([*EXTS, "199"]), max_size=3, unique=True),
    grant_lists(),
)
def test_any_document_with_protection_and_grants_cell_by_cell(
    raw: dict[str, Any], protected: list[str], grants: list[Grant]
) -> None:
    check_matrix(raw, protected, grants)


def test_the_picture_names_the_extensions_of_protection_and_of_grants_not_over() -> None:
    document = parse_document(REFERENCE_DOCUMENT)
    over = Grant.model_validate(
        {
            "id": "over",
            "ext": "300",
            "action": "eavesdrop",
            "extensions": ["301"],
            "from": NOW - 2 * HOUR,
            "until": NOW - HOUR,
            "note": "test",
            "created_by": "tests",
        }
    )
    coming = over.model_copy(
        update={"id": "coming", "ext": "200", "extensions": ("201",), "from_": NOW + HOUR}
    )
    coming = coming.model_copy(update={"until": NOW + 2 * HOUR})
    supervision = supervision_of(document, ["999"], [over, coming])
    assert extensions_of(document, supervision, NOW) == [
        "100",
        "101",
        "102",
        "103",
        "200",
        "201",
        "999",
    ]
    policy = compile_policy(document)
    matrix = permission_matrix(document, policy, now=NOW, supervision=supervision)
    exts = matrix["extensions"]
    assert decoded(matrix, "eavesdrop", exts.index("100"), exts.index("999"))[:2] == (
        False,
        "protected",
    )


@settings(max_examples=60, deadline=None)
@given(documents(), documents())
def test_the_impact_is_every_flip_between_two_documents(
    old_raw: dict[str, Any], new_raw: dict[str, Any]
) -> None:
    check_impact(old_raw, new_raw, [], [])


@settings(max_examples=60, deadline=None)
@given(
    documents(),
    documents(),
    st.lists(st.sampled_from([*EXTS, "199"]), max_size=3, unique=True),
    grant_lists(),
)
def test_the_impact_with_protection_and_grants_is_every_flip(
    old_raw: dict[str, Any], new_raw: dict[str, Any], protected: list[str], grants: list[Grant]
) -> None:
    check_impact(old_raw, new_raw, protected, grants)


def check_impact(
    old_raw: dict[str, Any], new_raw: dict[str, Any], protected: list[str], grants: list[Grant]
) -> None:
    """Both sides at ``NOW``, each with the settings and grants compiled against its document."""
    old_doc, new_doc = parse_document(old_raw), parse_document(new_raw)
    old, new = compile_policy(old_doc), compile_policy(new_doc)
    old_sup = supervision_of(old_doc, protected, grants)
    new_sup = supervision_of(new_doc, protected, grants)
    exts = sorted(
        set(extensions_of(old_doc, old_sup, NOW)) | set(extensions_of(new_doc, new_sup, NOW))
    )
    expected = set()
    for action in ACTIONS:
        for ext, target in product(exts, repeat=2):
            was = decide_cell(old, action, ext, target, now=NOW, supervision=old_sup)
            will = decide_cell(new, action, ext, target, now=NOW, supervision=new_sup)
            if was[0] != will[0]:
                expected.add((action, ext, target, will[0]))
    found = impact(
        old_doc,
        old,
        new_doc,
        new,
        limit=10_000,
        now=NOW,
        old_supervision=old_sup,
        new_supervision=new_sup,
    )
    assert {(c.action, c.ext, c.target, c.after[0]) for c in found.changes} == expected
    assert sum(found.became_allowed.values()) == sum(1 for e in expected if e[3])
    assert sum(found.became_denied.values()) == sum(1 for e in expected if not e[3])
    assert not found.truncated
    # A limit keeps the first changes of that same list, and every count.
    limit = len(expected) // 2
    cut = impact(
        old_doc,
        old,
        new_doc,
        new,
        limit=limit,
        now=NOW,
        old_supervision=old_sup,
        new_supervision=new_sup,
    )
    assert cut.changes == found.changes[:limit]
    assert cut.truncated == (len(expected) > limit)
    assert (cut.became_allowed, cut.became_denied) == (found.became_allowed, found.became_denied)


MANY_EXTS = [str(300 + n) for n in range(16)]
MANY_GROUPS = ["p", "q", "r", "s"]


@st.composite
def crowded(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], list[Grant]]:
    """Most extensions hold grants, and several holders share a class of the document with
    extensions that hold none: each holder's row is the class's, decided again at its grants'
    reach (groups, listed extensions, both; for any action; active, over or to come)."""
    groups = {
        name: draw(st.lists(st.sampled_from(MANY_EXTS), min_size=2, max_size=8, unique=True))
        for name in MANY_GROUPS
    }
    raw: dict[str, Any] = {
        "allow_all": False,
        "pickup_all": draw(st.booleans()),
        "groups": groups,
        "pickup_share_groups": draw(st.lists(st.sampled_from(MANY_GROUPS), max_size=2)),
        "phone_replace_groups": draw(st.lists(st.sampled_from(MANY_GROUPS), max_size=2)),
    }
    raw["pickup_share_groups"] = list(dict.fromkeys(raw["pickup_share_groups"]))
    raw["phone_replace_groups"] = list(dict.fromkeys(raw["phone_replace_groups"]))
    for ext in draw(st.lists(st.sampled_from(MANY_EXTS), max_size=4, unique=True)):
        raw["eavesdrop_" + ext] = [draw(st.sampled_from(MANY_GROUPS))]
    protected = draw(st.lists(st.sampled_from([*MANY_EXTS, "399"]), max_size=4, unique=True))
    everyone = [*MANY_EXTS, "399"]  # "399": in no group
    grants = []
    for n in range(draw(st.integers(8, 24))):
        ext = draw(st.sampled_from(everyone))
        others = [e for e in everyone if e != ext]
        reach_groups = draw(st.lists(st.sampled_from([*MANY_GROUPS, "gone"]), max_size=2))
        extensions = draw(st.lists(st.sampled_from(others), max_size=3, unique=True))
        start = NOW + HOUR * draw(st.sampled_from([-2, -1, -1, 1]))
        body = {
            "id": f"g{n:02}",
            "ext": ext,
            "action": draw(st.sampled_from(["eavesdrop", "whisper", "pickup"])),
            "groups": list(dict.fromkeys(reach_groups)),
            "extensions": extensions or ([] if reach_groups else [others[n % len(others)]]),
            "from": start,
            "until": start + HOUR * draw(st.sampled_from([1, 3])),
            "note": "test",
            "created_by": "tests",
        }
        grants.append(Grant.model_validate(body))
    return raw, protected, grants


@settings(max_examples=40, deadline=None)
@given(crowded())
def test_many_holders_among_alike_extensions_cell_by_cell(
    case: tuple[dict[str, Any], list[str], list[Grant]],
) -> None:
    raw, protected, grants = case
    check_matrix(raw, protected, grants)


@st.composite
def crowded_changes(
    draw: st.DrawFn,
) -> tuple[dict[str, Any], dict[str, Any], list[str], list[Grant]]:
    """``crowded()`` and a candidate of it: some groups redrawn (so the members a grant's group
    reaches differ between the sides), one perhaps removed (its grants then reach nobody on the
    new side), the pickup and listen rules partly redrawn."""
    old, protected, grants = draw(crowded())
    new = copy.deepcopy(old)
    for name in MANY_GROUPS:
        if draw(st.booleans()):
            new["groups"][name] = draw(
                st.lists(st.sampled_from(MANY_EXTS), min_size=2, max_size=8, unique=True)
            )
    if draw(st.booleans()):
        gone = draw(st.sampled_from(MANY_GROUPS))
        del new["groups"][gone]
        for key in ("pickup_share_groups", "phone_replace_groups"):
            new[key] = [name for name in new[key] if name != gone]
        for key in [k for k in new if k.startswith("eavesdrop_")]:
            new[key] = [name for name in new[key] if name != gone]
            if not new[key]:
                del new[key]
    kept = list(new["groups"])
    new["pickup_all"] = draw(st.booleans())
    new["pickup_share_groups"] = draw(st.lists(st.sampled_from(kept), max_size=2, unique=True))
    for ext in draw(st.lists(st.sampled_from(MANY_EXTS), max_size=3, unique=True)):
        new["whisper_" + ext] = [draw(st.sampled_from(kept))]
    return old, new, protected, grants


@settings(max_examples=60, deadline=None)
@given(crowded_changes())
def test_the_impact_with_many_holders_among_alike_extensions_is_every_flip(
    case: tuple[dict[str, Any], dict[str, Any], list[str], list[Grant]],
) -> None:
    old, new, protected, grants = case
    check_impact(old, new, protected, grants)


def thousand_holders() -> tuple[dict[str, Any], list[str], list[Grant]]:
    """10 groups of 20 alike extensions, 1,000 grants held by 200 extensions (every one), each
    reaching one group, or one extension, or both."""
    groups = {f"t{g}": [str(2000 + g * 20 + n) for n in range(20)] for g in range(10)}
    names = list(groups)
    raw: dict[str, Any] = {
        "pickup_all": False,
        "groups": groups,
        "pickup_share_groups": names[:3],
        "phone_replace_groups": names[3:5],
    }
    for g, name in enumerate(names):
        for ext in groups[name][::4]:
            raw["eavesdrop_" + ext] = [name]
            raw["whisper_" + ext] = [names[(g + 1) % 10]]
    exts = [ext for members in groups.values() for ext in members]
    grants = []
    for n in range(1000):
        ext = exts[n % 200]
        target = exts[(n * 7 + 3) % 200]
        reach: dict[str, Any] = {"groups": [names[(n * 3) % 10]]}
        if n % 3 == 1:
            reach = {"extensions": [target] if target != ext else [exts[(n + 1) % 200]]}
        elif n % 3 == 2:
            reach["extensions"] = [target] if target != ext else []
        start = NOW - HOUR if n % 5 else NOW + HOUR
        body = {
            "id": f"g{n:04}",
            "ext": ext,
            "action": ("eavesdrop", "whisper", "pickup")[n % 3],
            **reach,
            "from": start,
            "until": start + HOUR * (1 + n % 4),
            "note": "test",
            "created_by": "tests",
        }
        grants.append(Grant.model_validate(body))
    return raw, exts, grants


def test_a_thousand_holders_each_reaching_a_group() -> None:
    """The console's large case, smaller, a few extensions protected: the summary's counts, the
    matrix and the extension views cell by cell."""
    raw, exts, grants = thousand_holders()
    check_matrix(raw, exts[5:200:40], grants)


def test_the_impact_with_a_thousand_holders_is_every_flip() -> None:
    """The large case's preview: a candidate that swaps members between two groups the grants
    name and drops another (its grants reach nobody there), shares pickup in other groups and
    takes one listen away; each side with its own protection too."""
    old, exts, grants = thousand_holders()
    new = copy.deepcopy(old)
    groups = new["groups"]
    groups["t1"], groups["t2"] = (
        [*groups["t2"][:5], *groups["t1"][5:]],
        [
            *groups["t1"][:5],
            *groups["t2"][5:],
        ],
    )
    del groups["t9"]
    for key in [k for k in new if k.startswith(("eavesdrop_", "whisper_"))]:
        new[key] = [name for name in new[key] if name != "t9"]
        if not new[key]:
            del new[key]
    new["pickup_share_groups"] = ["t2", "t3", "t4"]
    del new["eavesdrop_" + exts[0]]
    check_impact(old, new, exts[5:200:40], grants)
