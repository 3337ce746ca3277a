"""Decisions with protected extensions and grants that expire (policy.md, "Beside the document")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.policy import Decision, Reason, compile_policy, decide, parse_document
from callgate.policy.grants import Grant
from callgate.policy.settings import CallControlSettings, Notice, NoticeMode
from callgate.policy.supervision import Supervision, compile_supervision

from .policy_examples import REFERENCE
from .test_policy_properties import POOL, documents, extensions, queries

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def grant(
    grant_id: str,
    ext: str,
    action: str,
    *,
    groups: Iterable[str] = (),
    extensions: Iterable[str] = (),
    start: datetime = NOW - HOUR,
    end: datetime = NOW + HOUR,
) -> Grant:
    return Grant.model_validate(
        {
            "id": grant_id,
            "ext": ext,
            "action": action,
            "groups": list(groups),
            "extensions": list(extensions),
            "from": start,
            "until": end,
            "note": "test",
            "created_by": "tests",
        }
    )


def supervised(
    document: dict[str, Any], *, protected: Iterable[str] = (), grants: Iterable[Grant] = ()
) -> Supervision | None:
    """``None`` when there is neither protection nor a grant (today's decisions)."""
    return compile_supervision(
        CallControlSettings(protected_extensions=tuple(protected)),
        list(grants),
        parse_document(document),
    )


def decide_with(
    document: dict[str, Any],
    action: str,
    ext: str,
    target: str | None,
    *,
    protected: Iterable[str] = (),
    grants: Iterable[Grant] = (),
) -> Decision:
    """One decision at ``NOW``, everything compiled afresh."""
    supervision = supervised(document, protected=protected, grants=grants)
    policy = compile_policy(parse_document(document))
    return decide(policy, action, ext, target, now=NOW, supervision=supervision)


GRANTS = [
    grant("g-listen", "100", "eavesdrop", extensions=["102"]),
    grant("g-group", "103", "whisper", groups=["support"]),
    grant("g-expired", "102", "eavesdrop", extensions=["100"], end=NOW),
    grant("g-future", "102", "whisper", extensions=["103"], start=NOW + timedelta(seconds=1)),
    grant("g-pickup", "100", "pickup", extensions=["103"]),
    grant("g-replace-ish", "100", "pickup", extensions=["102"]),
]
NO_PICKUP_ALL = {**REFERENCE, "pickup_all": False}
ALLOW_ALL = {**REFERENCE, "allow_all": True}


def answer(decision: Decision) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    return decision.verdict, str(decision.reason), decision.targets, decision.grant_ids


# (document, protected, action, A, T, verdict, reason, grant ids)
DIRECTED = [
    # precedence: invalid_request, then self_target, then protected
    (REFERENCE, ["103"], "eavesdrop", "1 00", "103", "deny", "invalid_request", ()),
    (REFERENCE, ["103"], "eavesdrop", "101", "10 3", "deny", "invalid_request", ()),
    (REFERENCE, ["103"], "eavesdrop", "103", "103", "deny", "self_target", ()),
    (REFERENCE, ["103"], "whisper", "103", "103", "deny", "self_target", ()),
    # protected wins over the document, allow_all and grants
    (REFERENCE, ["103"], "eavesdrop", "101", "103", "deny", "protected", ()),
    (REFERENCE, ["103"], "whisper", "101", "103", "deny", "protected", ()),
    (ALLOW_ALL, ["103"], "eavesdrop", "100", "103", "deny", "protected", ()),
    (ALLOW_ALL, ["103"], "whisper", "100", "103", "deny", "protected", ()),
    (ALLOW_ALL, ["103"], "eavesdrop", "100", "101", "allow", "allow_all", ()),
    (REFERENCE, ["102"], "eavesdrop", "100", "102", "deny", "protected", ()),  # g-listen
    (REFERENCE, ["101"], "whisper", "103", "101", "deny", "protected", ()),  # g-group
    # protection is about being heard: pickup and replace are not affected
    (REFERENCE, ["103"], "pickup", "100", "103", "allow", "pickup_all", ()),
    (NO_PICKUP_ALL, ["103"], "pickup", "100", "103", "allow", "temporary_grant", ("g-pickup",)),
    (ALLOW_ALL, ["103"], "replace", "100", "103", "allow", "allow_all", ()),
    # an active grant allows what the document denies, with its id
    (REFERENCE, [], "eavesdrop", "100", "102", "allow", "temporary_grant", ("g-listen",)),
    (REFERENCE, [], "whisper", "103", "100", "allow", "temporary_grant", ("g-group",)),
    (REFERENCE, [], "eavesdrop", "103", "101", "allow", "temporary_grant", ("g-group",)),
    (NO_PICKUP_ALL, [], "pickup", "100", "103", "allow", "temporary_grant", ("g-pickup",)),
    # ... only for its action: a listen grant never lets its holder whisper
    (REFERENCE, [], "whisper", "100", "102", "deny", "whisper_not_permitted", ()),
    # ... only within its reach
    (REFERENCE, [], "eavesdrop", "103", "102", "deny", "eavesdrop_not_permitted", ()),
    # ... only while active: until is the first instant it no longer holds; from is not yet
    (REFERENCE, [], "eavesdrop", "102", "100", "deny", "eavesdrop_not_permitted", ()),
    (REFERENCE, [], "whisper", "102", "103", "deny", "whisper_not_permitted", ()),
    # never replace, whatever the holder's other grants reach
    (REFERENCE, [], "replace", "100", "102", "deny", "replace_not_permitted", ()),
    (REFERENCE, [], "replace", "100", "103", "deny", "replace_not_permitted", ()),
    # the document allowing anyway: its reason, no grant id
    (REFERENCE, [], "pickup", "100", "103", "allow", "pickup_all", ()),
    (REFERENCE, [], "whisper", "101", "100", "allow", "whisper_group", ()),
    (REFERENCE, [], "restore", "100", "", "allow", "restored", ()),
]


@pytest.mark.parametrize(
    ("document", "protected", "action", "ext", "target", "verdict", "reason", "ids"), DIRECTED
)
def test_directed_decisions(
    document: dict[str, Any],
    protected: list[str],
    action: str,
    ext: str,
    target: str,
    verdict: str,
    reason: str,
    ids: tuple[str, ...],
) -> None:
    got = decide_with(document, action, ext, target or None, protected=protected, grants=GRANTS)
    assert answer(got) == (verdict, reason, (), ids)
    assert got.grant_id == (ids[0] if ids else None)


def test_the_document_allowing_leaves_no_grant_id() -> None:
    """eavesdrop 100 -> 101 is the document's (eavesdrop_100: support) even with a grant for it."""
    mine = grant("g-also", "100", "eavesdrop", extensions=["101"])
    got = decide_with(REFERENCE, "eavesdrop", "100", "101", grants=[mine])
    assert got == Decision(True, Reason.EAVESDROP_GROUP, (), "support")


# (document, protected, action, A, verdict, reason, targets, group, grant ids)
GROUP_FORMS = [
    # the document's targets, plus the grants' reach
    (REFERENCE, [], "eavesdrop", "100", "allow", "eavesdrop_group", ("101", "102"), "support",
     ("g-listen",)),
    (REFERENCE, [], "whisper", "103", "allow", "temporary_grant", ("100", "101"), None,
     ("g-group",)),
    (REFERENCE, [], "eavesdrop", "103", "allow", "temporary_grant", ("100", "101"), None,
     ("g-group",)),
    # a grant adding nothing new is not named; expired and future grants add nothing
    (REFERENCE, [], "eavesdrop", "101", "allow", "whisper_group", ("100", "102", "103"), "sales",
     ()),
    (REFERENCE, [], "whisper", "102", "deny", "whisper_not_permitted", (), None, ()),
    # protected extensions left out; the document's group is the first one still giving a target
    (REFERENCE, ["102"], "eavesdrop", "101", "allow", "whisper_group", ("100", "103"), "hr", ()),
    (REFERENCE, ["101"], "eavesdrop", "100", "allow", "temporary_grant", ("102",), None,
     ("g-listen",)),
    (REFERENCE, ["101", "102"], "eavesdrop", "100", "deny", "protected", (), None, ()),
    (REFERENCE, ["100", "101"], "whisper", "103", "deny", "protected", (), None, ()),
    # group pickup is not a listen: neither protection nor a (directed) pickup grant changes it
    (NO_PICKUP_ALL, ["101"], "pickup", "100", "allow", "pickup_share_group", ("101",), "support",
     ()),
    (REFERENCE, [], "pickup", "103", "deny", "no_pickup_group", (), None, ()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("document", "protected", "action", "ext", "verdict", "reason", "targets", "group", "ids"),
    GROUP_FORMS,
)
def test_group_forms(
    document: dict[str, Any],
    protected: list[str],
    action: str,
    ext: str,
    verdict: str,
    reason: str,
    targets: tuple[str, ...],
    group: str | None,
    ids: tuple[str, ...],
) -> None:
    got = decide_with(document, action, ext, None, protected=protected, grants=GRANTS)
    assert (*answer(got), got.group) == (verdict, reason, targets, ids, group)


@pytest.mark.parametrize(
    ("action", "ext", "excluded"),
    [
        ("eavesdrop", "100", ("101", "103")),
        ("whisper", "100", ("101", "103")),
        ("eavesdrop", "103", ("101",)),  # the acting extension is no target anyway
        ("pickup", "100", ()),  # group pickup: not protected
    ],
)
def test_allow_all_group_forms_keep_star_and_name_the_protected(
    action: str, ext: str, excluded: tuple[str, ...]
) -> None:
    got = decide_with(ALLOW_ALL, action, ext, "", protected=["103", "101"], grants=GRANTS)
    assert (got.verdict, got.reason, got.targets, got.excluded) == (
        "allow",
        Reason.ALLOW_ALL,
        ("*",),
        excluded,
    )
    body = got.to_json()
    assert body.get("excluded", []) == list(excluded)


def test_grant_reach_by_group_follows_the_document() -> None:
    """A grant's group means its members when the decision is made; a removed group, nobody."""
    mine = [grant("g-sales", "103", "eavesdrop", groups=["sales"])]
    assert decide_with(REFERENCE, "eavesdrop", "103", "102", grants=mine).grant_ids == ("g-sales",)
    changed = {**REFERENCE, "groups": {**REFERENCE["groups"], "sales": ["101"]}}
    got = decide_with(changed, "eavesdrop", "103", "102", grants=mine)
    assert got.reason is Reason.EAVESDROP_NOT_PERMITTED
    removed: dict[str, Any] = {"groups": {"support": ["100", "101"]}}
    got = decide_with(removed, "eavesdrop", "103", "101", grants=mine)
    assert got.reason is Reason.EAVESDROP_NOT_PERMITTED


@pytest.mark.parametrize("count", [2, 12])  # below and above the scan limit of the index
def test_several_grants_name_the_longest_lasting_active_one(count: int) -> None:
    mine = [
        grant(
            f"g{n:02}",
            "103",
            "eavesdrop",
            extensions=["102" if n % 2 else "100"],
            end=NOW + timedelta(minutes=n + 1),
        )
        for n in range(count)
    ]
    mine.append(
        grant(
            "g-late",
            "103",
            "eavesdrop",
            groups=["sales"],
            end=NOW + timedelta(days=1),
            start=NOW + timedelta(minutes=1),
        )
    )
    policy = compile_policy(parse_document(REFERENCE))
    supervision = supervised(REFERENCE, grants=mine)
    got = decide(policy, "eavesdrop", "103", "102", now=NOW, supervision=supervision)
    assert got.grant_ids == (f"g{count - 1:02}",)
    later = NOW + timedelta(minutes=1)  # g-late starts, through group sales
    got = decide(policy, "eavesdrop", "103", "102", now=later, supervision=supervision)
    assert got.grant_ids == ("g-late",)
    # at its until, each grant stops allowing: re-deciding a session then ends it
    ended = NOW + timedelta(minutes=count)
    got = decide(policy, "eavesdrop", "103", "100", now=ended, supervision=supervision)
    assert got.reason is Reason.EAVESDROP_NOT_PERMITTED


def test_grants_need_an_aware_now() -> None:
    policy = compile_policy(parse_document(REFERENCE))
    supervision = supervised(REFERENCE, grants=GRANTS)
    with pytest.raises(ValueError, match="aware datetime"):
        decide(policy, "eavesdrop", "100", "102", supervision=supervision)
    with pytest.raises(ValueError, match="aware datetime"):
        decide(
            policy, "eavesdrop", "100", "102", now=datetime(2026, 5, 1, 12), supervision=supervision
        )
    with pytest.raises(ValueError, match="aware datetime"):
        decide(policy, "eavesdrop", "100", None, supervision=supervision)
    # protection alone needs no clock
    protection = supervised(REFERENCE, protected=["103"])
    assert decide(policy, "eavesdrop", "101", "103", supervision=protection).reason == "protected"


def test_nothing_to_apply_compiles_to_none() -> None:
    document = parse_document(REFERENCE)
    assert compile_supervision(None, [], document) is None
    assert compile_supervision(CallControlSettings(), [], document) is None
    notice = CallControlSettings(notice=Notice(mode=NoticeMode.TONE, repeat_seconds=30))
    assert compile_supervision(notice, [], document) is None


def test_next_change_after() -> None:
    mine = [
        grant("a", "100", "eavesdrop", extensions=["102"], start=NOW, end=NOW + HOUR),
        grant("b", "100", "whisper", extensions=["102"], start=NOW + HOUR, end=NOW + 2 * HOUR),
        grant("c", "101", "pickup", extensions=["103"], start=NOW - HOUR, end=NOW + 3 * HOUR),
    ]
    supervision = supervised(REFERENCE, grants=mine)
    assert supervision is not None
    assert supervision.next_change_after(NOW - 2 * HOUR) == NOW - HOUR
    assert supervision.next_change_after(NOW - HOUR) == NOW  # strictly after
    assert supervision.next_change_after(NOW + timedelta(minutes=5)) == NOW + HOUR
    assert supervision.next_change_after(NOW + HOUR) == NOW + 2 * HOUR
    assert supervision.next_change_after(NOW + 3 * HOUR) is None
    # other offsets name the same instants
    paris = NOW.astimezone(timezone(2 * HOUR))
    assert supervision.next_change_after(paris) == NOW + HOUR
    protection = supervised(REFERENCE, protected=["100"])
    assert protection is not None
    assert protection.next_change_after(NOW) is None


# -- properties over random documents, protection and grants

MOMENTS = [NOW - 2 * HOUR, NOW - HOUR, NOW, NOW + HOUR, NOW + 2 * HOUR]


@st.composite
def grant_sets(draw: st.DrawFn, doc: dict[str, Any]) -> list[Grant]:
    names = sorted(doc["groups"])
    found = []
    for n in range(draw(st.integers(0, 8))):
        ext = draw(st.sampled_from(POOL))
        reach = draw(st.lists(st.sampled_from(POOL), max_size=3, unique=True))
        groups = draw(st.lists(st.sampled_from(names), max_size=2, unique=True)) if names else []
        reach = [e for e in reach if e != ext] or ([] if groups else ["outsider"])
        start = draw(st.sampled_from(MOMENTS[:-1]))
        end = draw(st.sampled_from([m for m in MOMENTS if m > start]))
        action = draw(st.sampled_from(["eavesdrop", "whisper", "pickup"]))
        found.append(
            grant(f"g{n}", ext, action, groups=groups, extensions=reach, start=start, end=end)
        )
    return found


Case = tuple[dict[str, Any], list[Grant], list[str], list[tuple[str, str, str | None]], datetime]
"""A document, grants over it, protected extensions, requests and the time they are made at."""
cases = documents().flatmap(
    lambda doc: st.tuples(
        st.just(doc),
        grant_sets(doc),
        st.lists(extensions, max_size=4, unique=True),
        st.lists(queries, min_size=1, max_size=12),
        st.sampled_from(MOMENTS),
    )
)


@settings(max_examples=150, deadline=None)
@given(documents(), st.lists(queries, min_size=1, max_size=15))
def test_without_supervision_decide_is_todays(
    doc: dict[str, Any], requests: list[tuple[str, str, str | None]]
) -> None:
    policy = compile_policy(parse_document(doc))
    assert compile_supervision(CallControlSettings(), [], parse_document(doc)) is None
    for action, ext, target in requests:
        today = decide(policy, action, ext, target)
        assert decide(policy, action, ext, target, now=NOW, supervision=None) == today
        assert (today.grant_ids, today.excluded) == ((), ())


@settings(max_examples=150, deadline=None)
@given(cases)
def test_inert_supervision_changes_nothing(
    case: Case,
) -> None:
    """Grants that are not active, and protection of extensions nobody asks about: today's."""
    doc, grants, _, requests, _ = case
    policy = compile_policy(parse_document(doc))
    supervision = supervised(doc, protected=["not-asked"], grants=grants)
    long_after = NOW + 10 * HOUR
    for action, ext, target in requests:
        if target == "not-asked":
            continue
        today = decide(policy, action, ext, target)
        got = decide(policy, action, ext, target, now=long_after, supervision=supervision)
        if got.excluded:  # allow_all's "*" for a listen names the protection it does not cover
            assert (got.targets, got.excluded) == (("*",), ("not-asked",))
            got = replace(got, excluded=())
        assert got == today


@settings(max_examples=200, deadline=None)
@given(cases)
def test_protection_always_wins_and_grants_only_add(
    case: Case,
) -> None:
    doc, grants, protected, requests, now = case
    policy = compile_policy(parse_document(doc))
    supervision = supervised(doc, protected=protected, grants=grants)
    for action, ext, target in requests:
        today = decide(policy, action, ext, target)
        got = decide(policy, action, ext, target, now=now, supervision=supervision)
        listen = action in ("eavesdrop", "whisper")
        if today.reason in (Reason.INVALID_REQUEST, Reason.SELF_TARGET):
            assert got == today
        elif listen and target and target in protected:
            assert got.reason is Reason.PROTECTED
            assert not got.allowed
        elif listen and not target:
            assert not set(got.targets) & set(protected)
            if got.targets == ("*",):
                assert set(got.excluded) == set(protected) - {ext}
            else:
                assert set(today.targets) - set(protected) <= set(got.targets)
        elif today.allowed:
            assert got == today  # the document's reason wins, no grant id
        elif got.allowed:
            assert got.reason is Reason.TEMPORARY_GRANT
            assert action != "replace"
            (chosen,) = [g for g in grants if g.id == got.grant_id]
            assert chosen.ext == ext
            assert chosen.from_ <= now < chosen.until
            assert chosen.action == action or (chosen.action, action) == ("whisper", "eavesdrop")
            members = set(chosen.extensions).union(*(doc["groups"][name] for name in chosen.groups))
            assert target in members
        else:
            assert got == today


def plain_group_form(
    doc: dict[str, Any],
    grants: list[Grant],
    protected: list[str],
    action: str,
    ext: str,
    now: datetime,
) -> tuple[bool, str | None, tuple[str, ...], tuple[str, ...]]:
    """The group form of a listen or whisper as policy.md words it, with nothing precomputed:
    (allowed, reason when only grants or protection decide it, targets, grant ids)."""
    today = decide(compile_policy(parse_document(doc)), action, ext, None)
    kept = {t for t in today.targets if t not in protected}
    lost = len(kept) != len(today.targets)
    added: set[str] = set()
    ids = []
    for g in grants:
        holds = g.action == action or (g.action, action) == ("whisper", "eavesdrop")
        if g.ext != ext or not holds or not g.from_ <= now < g.until:
            continue
        reach = set(g.extensions).union(*(doc["groups"].get(name, []) for name in g.groups))
        reach.discard(ext)
        lost = lost or bool(reach & set(protected))
        new = reach - set(protected) - kept
        if new:
            ids.append(g.id)
            added |= new
    if not kept and not added:
        return False, ("protected" if lost else str(today.reason)), (), ()
    reason = None if kept else "temporary_grant"
    return True, reason, tuple(sorted(kept | added)), tuple(sorted(ids))


@settings(max_examples=200, deadline=None)
@given(cases)
def test_group_forms_are_the_plain_reading_of_the_rules(case: Case) -> None:
    doc, grants, protected, requests, now = case
    if doc.get("allow_all"):
        return  # "*": test_allow_all_group_forms_keep_star_and_name_the_protected
    policy = compile_policy(parse_document(doc))
    supervision = supervised(doc, protected=protected, grants=grants)
    for action, ext, _ in requests:
        if action not in ("eavesdrop", "whisper") or decide(policy, action, ext, "").reason in (
            Reason.INVALID_REQUEST,
        ):
            continue
        got = decide(policy, action, ext, None, now=now, supervision=supervision)
        allowed, reason, targets, ids = plain_group_form(doc, grants, protected, action, ext, now)
        assert (got.allowed, got.targets, got.grant_ids) == (allowed, targets, ids)
        if reason is not None:
            assert str(got.reason) == reason


@pytest.mark.parametrize("groups", [2, 12])  # 12 groups of 200 exceed GrantIndex.REACH
def test_a_grant_index_too_wide_to_copy_still_decides(groups: int) -> None:
    """``GrantIndex.reach`` (the quick "no grant reaches it") is left out when it would copy
    more than ``REACH`` extensions; the decisions are the same either way."""
    names = [f"floor-{g}" for g in range(groups)]
    doc = {
        "groups": {
            name: [str(2000 + g * 200 + n) for n in range(200)] for g, name in enumerate(names)
        }
    }
    mine = [
        grant("g-wide", "100", "eavesdrop", groups=names),
        grant("g-one", "100", "eavesdrop", extensions=["150"], end=NOW + 2 * HOUR),
    ]
    supervision = supervised(doc, grants=mine)
    assert supervision is not None
    index = supervision.grants["eavesdrop"]["100"]
    assert (index.reach is None) == (groups * 200 > index.REACH)
    policy = compile_policy(parse_document(doc))
    last = str(2000 + groups * 200 - 1)
    for target, ids in (
        ("2000", ("g-wide",)),
        (last, ("g-wide",)),
        ("150", ("g-one",)),
        ("9999", ()),
    ):
        got = decide(policy, "eavesdrop", "100", target, now=NOW, supervision=supervision)
        assert got.grant_ids == ids
        assert got.allowed == bool(ids)
