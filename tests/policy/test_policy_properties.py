"""The compiled engine against a naive reading of policy.md's rules, over random documents.

``naive_decide`` is written straight from the spec's sentences, on the document as JSON, with no
precomputation: if the compiled tables ever disagree with it, one of them misreads the rules.
"""

from __future__ import annotations

import random
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.policy import compile_policy, decide, parse_document

_EXTENSION = re.compile(r"[A-Za-z0-9_.+\-]{1,32}")
ACTIONS = ("pickup", "eavesdrop", "whisper", "replace", "restore")

Answer = tuple[str, str, tuple[str, ...], str | None]


def members(doc: dict[str, Any], group: str) -> set[str]:
    return set(doc["groups"][group])


def reach(doc: dict[str, Any], groups: list[str]) -> set[str]:
    return set().union(*(members(doc, g) for g in groups))


def first(doc: dict[str, Any], groups: list[str], *exts: str) -> str | None:
    """The first listed group containing all of ``exts``."""
    return next((g for g in groups if all(e in members(doc, g) for e in exts)), None)


def first_with_other(doc: dict[str, Any], groups: list[str], ext: str) -> str | None:
    """The first listed group with a member other than ``ext``."""
    return next((g for g in groups if members(doc, g) - {ext}), None)


def naive_decide(doc: dict[str, Any], action: str, a: str, t: str | None) -> Answer:
    allow_all = doc.get("allow_all", False)
    pickup_all = doc.get("pickup_all", True)
    share_groups = [g for g in doc.get("pickup_share_groups", []) if a in members(doc, g)]
    replace_groups = [g for g in doc.get("phone_replace_groups", []) if a in members(doc, g)]
    eavesdrop = doc.get(f"eavesdrop_{a}", [])
    whisper = doc.get(f"whisper_{a}", [])

    def allow(reason: str, targets: tuple[str, ...] = (), group: str | None = None) -> Answer:
        return ("allow", reason, targets, group)

    def deny(reason: str) -> Answer:
        return ("deny", reason, (), None)

    # 1. unknown action, A or T not a valid extension (replace always names T)
    if action not in ACTIONS or not _EXTENSION.fullmatch(a):
        return deny("invalid_request")
    if t and not _EXTENSION.fullmatch(t):
        return deny("invalid_request")
    if action == "replace" and not t:
        return deny("invalid_request")
    # 2. T equals A
    if t == a:
        return deny("self_target")
    # going home is never forbidden by the policy
    if action == "restore":
        return allow("restored")
    # 3. allow_all
    if allow_all:
        return allow("allow_all", () if t else ("*",))
    # 4./5. pickup
    if action == "pickup" and t:
        if pickup_all:
            return allow("pickup_all")
        if t in reach(doc, share_groups):
            return allow("pickup_share_group", group=first(doc, share_groups, t))
        return deny("pickup_not_permitted")
    if action == "pickup":
        targets = reach(doc, share_groups) - {a}
        if targets:
            group = first_with_other(doc, share_groups, a)
            return allow("pickup_share_group", tuple(sorted(targets)), group)
        return deny("no_pickup_group")
    # 6./7. listen and whisper
    if action == "eavesdrop" and t:
        if t in reach(doc, eavesdrop):
            return allow("eavesdrop_group", group=first(doc, eavesdrop, t))
        if t in reach(doc, whisper):
            return allow("whisper_group", group=first(doc, whisper, t))
        return deny("eavesdrop_not_permitted")
    if action == "whisper" and t:
        if t in reach(doc, whisper):
            return allow("whisper_group", group=first(doc, whisper, t))
        return deny("whisper_not_permitted")
    if action == "eavesdrop":
        targets = tuple(sorted((reach(doc, eavesdrop) | reach(doc, whisper)) - {a}))
        if reach(doc, eavesdrop) - {a}:
            return allow("eavesdrop_group", targets, first_with_other(doc, eavesdrop, a))
        if targets:
            return allow("whisper_group", targets, first_with_other(doc, whisper, a))
        return deny("eavesdrop_not_permitted")
    if action == "whisper":
        targets = tuple(sorted(reach(doc, whisper) - {a}))
        if targets:
            return allow("whisper_group", targets, first_with_other(doc, whisper, a))
        return deny("whisper_not_permitted")
    # 8. replace: the authorization half
    if t in reach(doc, replace_groups):
        return allow("phone_replace_group", group=first(doc, replace_groups, t))
    return deny("replace_not_permitted")


# A small pool makes extensions meet in groups and grants; random valid ones and outsiders test the
# rest. (one_of picks its branches about evenly: the pool is listed three times to weigh it up.)
POOL = [str(n) for n in range(100, 108)]
pooled = st.sampled_from(POOL)
extensions = st.one_of(
    pooled, pooled, pooled, st.from_regex(r"[A-Za-z0-9_.+\-]{1,32}", fullmatch=True)
)
named = st.sampled_from(["support", "sales", "hr", "ops", "night"])
group_names = st.one_of(
    named,
    named,
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=64),
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.dictionaries(group_names, st.lists(extensions, max_size=8), max_size=6))
    names = sorted(groups)
    group_lists = st.lists(st.sampled_from(names), max_size=5) if names else st.just([])
    doc: dict[str, Any] = {"groups": groups}
    if draw(st.booleans()):
        doc["allow_all"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["pickup_all"] = draw(st.booleans())
    for field in ("pickup_share_groups", "phone_replace_groups"):
        if draw(st.booleans()):
            doc[field] = draw(group_lists)
    for ext in draw(st.lists(extensions, max_size=6)):
        doc[f"{draw(st.sampled_from(['eavesdrop', 'whisper']))}_{ext}"] = draw(group_lists)
    return doc


queries = st.tuples(
    st.sampled_from([*ACTIONS, "barge", ""]),
    st.one_of(extensions, st.sampled_from(["", "1 00", "x" * 33])),
    st.one_of(st.none(), st.just(""), extensions, st.sampled_from(["1 00", "100\n"])),
)


@settings(max_examples=150, deadline=None)
@given(documents(), st.lists(queries, min_size=1, max_size=15))
def test_compiled_engine_agrees_with_the_naive_rules(
    doc: dict[str, Any], requests: list[tuple[str, str, str | None]]
) -> None:
    policy = compile_policy(parse_document(doc))
    for action, ext, target in requests:
        decision = decide(policy, action, ext, target)
        got = (decision.verdict, str(decision.reason), decision.targets, decision.group)
        assert got == naive_decide(doc, action, ext, target), (action, ext, target)


@settings(max_examples=150, deadline=None)
@given(documents())
def test_every_request_among_the_documents_extensions(doc: dict[str, Any]) -> None:
    """Every action, acting and target extension of the document (and an outsider), exhaustively."""
    granted = [key.partition("_")[2] for key in doc if key.startswith(("eavesdrop_", "whisper_"))]
    exts = {e for group in doc["groups"].values() for e in group} | set(granted) | {"outsider"}
    policy = compile_policy(parse_document(doc))
    for action in ACTIONS:
        for ext in exts:
            for target in (None, *exts):
                decision = decide(policy, action, ext, target)
                got = (decision.verdict, str(decision.reason), decision.targets, decision.group)
                assert got == naive_decide(doc, action, ext, target), (action, ext, target)


def test_a_document_at_the_limits_agrees_with_the_naive_rules() -> None:
    """100 groups of 200 drawn from 3,000 extensions: extensions in many groups, long lists."""
    rng = random.Random(7)
    pool = [f"{n}" for n in range(1000, 4000)]
    groups = {f"g{g}": rng.sample(pool, 200) for g in range(100)}
    names = list(groups)
    doc: dict[str, Any] = {
        "pickup_all": False,
        "groups": groups,
        "pickup_share_groups": rng.sample(names, 50),
        "phone_replace_groups": rng.sample(names, 30),
    }
    for ext in rng.sample(pool, 300):
        doc[f"{rng.choice(['eavesdrop', 'whisper'])}_{ext}"] = rng.sample(names, rng.randint(1, 4))
    policy = compile_policy(parse_document(doc))
    granted = [key.partition("_")[2] for key in doc if key.startswith(("eavesdrop_", "whisper_"))]
    for _ in range(1500):
        action = rng.choice(ACTIONS)
        ext = rng.choice(granted) if rng.random() < 0.5 else rng.choice(pool)
        target = rng.choice([None, rng.choice(pool)])
        decision = decide(policy, action, ext, target)
        got = (decision.verdict, str(decision.reason), decision.targets, decision.group)
        assert got == naive_decide(doc, action, ext, target), (action, ext, target)
