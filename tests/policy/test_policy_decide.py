"""Decision tables: the worked example of policy.md and its variants, rule by rule."""

from __future__ import annotations

import pytest

from callgate.policy import (
    ALL_TARGETS,
    CompiledPolicy,
    PolicyDocument,
    compile_policy,
    decide,
    parse_document,
)

from .policy_examples import REFERENCE


def compiled(**changes: object) -> CompiledPolicy:
    return compile_policy(parse_document({**REFERENCE, **changes}))


def verdict(
    policy: CompiledPolicy, action: str, ext: str, target: str | None
) -> tuple[object, ...]:
    decision = decide(policy, action, ext, target)
    return decision.verdict, decision.reason, decision.targets


# The worked example of policy.md, row by row (replace: the policy half; the PIN decides later).
WORKED_EXAMPLE = [
    ("pickup", "100", "103", "allow", "pickup_all", ()),
    ("pickup", "100", None, "allow", "pickup_share_group", ("101",)),
    ("pickup", "101", None, "allow", "pickup_share_group", ("100", "102")),
    ("pickup", "103", None, "deny", "no_pickup_group", ()),
    ("eavesdrop", "100", "101", "allow", "eavesdrop_group", ()),
    ("eavesdrop", "100", "102", "deny", "eavesdrop_not_permitted", ()),
    ("whisper", "100", "101", "deny", "whisper_not_permitted", ()),
    ("whisper", "101", "103", "allow", "whisper_group", ()),
    ("eavesdrop", "101", "103", "allow", "whisper_group", ()),
    ("eavesdrop", "101", "101", "deny", "self_target", ()),
    ("replace", "100", "101", "allow", "phone_replace_group", ()),
    ("replace", "100", "102", "deny", "replace_not_permitted", ()),
]


# The same document with pickup_all: false: directed pickup only within share(A).
PICKUP_ALL_FALSE = [
    ("pickup", "100", "103", "deny", "pickup_not_permitted", ()),
    ("pickup", "100", "101", "allow", "pickup_share_group", ()),
    ("pickup", "101", "102", "allow", "pickup_share_group", ()),
    ("pickup", "102", "100", "deny", "pickup_not_permitted", ()),
    ("pickup", "103", "100", "deny", "pickup_not_permitted", ()),
    ("pickup", "999", "100", "deny", "pickup_not_permitted", ()),
    *WORKED_EXAMPLE[1:],
]


# The groups that granted a request, for logs and audit: the first one in document order.
@pytest.mark.parametrize(
    ("action", "ext", "target", "group"),
    [
        ("pickup", "100", None, "support"),
        ("pickup", "102", None, "sales"),
        ("pickup", "100", "103", None),
        ("eavesdrop", "100", "101", "support"),
        ("eavesdrop", "101", "102", "sales"),
        ("eavesdrop", "101", "103", "hr"),
        ("whisper", "101", None, "sales"),
        ("eavesdrop", "101", None, "sales"),
        ("eavesdrop", "100", None, "support"),
        ("replace", "101", "100", "support"),
        ("replace", "100", "102", None),
    ],
)
def test_decision_names_the_granting_group(
    action: str, ext: str, target: str | None, group: str | None
) -> None:
    assert decide(compiled(), action, ext, target).group == group


# No document stored: directed pickup anywhere, every other action denied.
DEFAULT_DOCUMENT = [
    ("pickup", "100", "200", "allow", "pickup_all", ()),
    ("pickup", "anything", "else", "allow", "pickup_all", ()),
    ("pickup", "100", None, "deny", "no_pickup_group", ()),
    ("eavesdrop", "100", "200", "deny", "eavesdrop_not_permitted", ()),
    ("eavesdrop", "100", None, "deny", "eavesdrop_not_permitted", ()),
    ("whisper", "100", "200", "deny", "whisper_not_permitted", ()),
    ("whisper", "100", None, "deny", "whisper_not_permitted", ()),
    ("replace", "100", "200", "deny", "replace_not_permitted", ()),
    ("restore", "100", None, "allow", "restored", ()),
    ("pickup", "100", "100", "deny", "self_target", ()),
]


# allow_all: everything between any two extensions; group forms answer everyone as "*".
ALLOW_ALL = [
    ("pickup", "103", "102", "allow", "allow_all", ()),
    ("pickup", "103", None, "allow", "allow_all", (ALL_TARGETS,)),
    ("pickup", "900", "901", "allow", "allow_all", ()),
    ("eavesdrop", "100", "102", "allow", "allow_all", ()),
    ("eavesdrop", "900", None, "allow", "allow_all", (ALL_TARGETS,)),
    ("whisper", "100", "101", "allow", "allow_all", ()),
    ("whisper", "103", "", "allow", "allow_all", (ALL_TARGETS,)),
    ("replace", "100", "102", "allow", "allow_all", ()),
    ("replace", "900", "901", "allow", "allow_all", ()),
    ("restore", "100", None, "allow", "restored", ()),
    ("eavesdrop", "100", "100", "deny", "self_target", ()),
    ("replace", "100", "100", "deny", "self_target", ()),
    ("replace", "100", None, "deny", "invalid_request", ()),
    ("pickup", "1 00", "101", "deny", "invalid_request", ()),
]


TABLES = {
    "worked example": ({}, WORKED_EXAMPLE),
    "pickup_all false": ({"pickup_all": False}, PICKUP_ALL_FALSE),
    "allow_all": ({"allow_all": True}, ALLOW_ALL),
    "default document": (None, DEFAULT_DOCUMENT),
}


@pytest.mark.parametrize(
    ("changes", "action", "ext", "target", "decision", "reason", "targets"),
    [
        pytest.param(changes, *row, id=f"{name}: {row[0]} {row[1]} {row[2]}")
        for name, (changes, rows) in TABLES.items()
        for row in rows
    ],
)
def test_decision_tables(
    changes: dict[str, object] | None,
    action: str,
    ext: str,
    target: str | None,
    decision: str,
    reason: str,
    targets: tuple[str, ...],
) -> None:
    """``changes`` to the reference example; None: no document stored (the default one)."""
    policy = compile_policy(PolicyDocument()) if changes is None else compiled(**changes)
    assert verdict(policy, action, ext, target) == (decision, reason, targets)


@pytest.mark.parametrize("action", ["pickup", "eavesdrop", "whisper", "replace", "restore"])
@pytest.mark.parametrize("ext", ["100", "999", "a.b+c-d_e"])
def test_self_target_comes_before_every_rule(action: str, ext: str) -> None:
    for policy in (compiled(), compiled(allow_all=True), compile_policy(PolicyDocument())):
        assert verdict(policy, action, ext, ext) == ("deny", "self_target", ())


BAD_EXTENSIONS = ["1 00", "x" * 33, "100\n", "10/0", "ext#", "\u0661\u0660\u0660", "100;", "*8"]


@pytest.mark.parametrize(
    ("action", "ext", "target"),
    [
        *(("pickup", bad, "101") for bad in ["", *BAD_EXTENSIONS]),
        *(("eavesdrop", "100", bad) for bad in BAD_EXTENSIONS),
        ("fly", "100", "101"),
        ("fly", "100", None),
        ("PICKUP", "100", "101"),
        ("", "100", "101"),
        ("replace", "100", None),
        ("replace", "100", ""),
        ("restore", "100 ", None),
    ],
)
def test_invalid_request(action: str, ext: str, target: str | None) -> None:
    for policy in (compiled(), compiled(allow_all=True)):
        assert verdict(policy, action, ext, target) == ("deny", "invalid_request", ())


def test_longest_valid_extension_is_accepted() -> None:
    ext = "A-z_0.9+" * 4
    assert verdict(compiled(), "pickup", ext, "101") == ("allow", "pickup_all", ())


def test_empty_target_is_the_group_form() -> None:
    policy = compiled()
    assert decide(policy, "pickup", "101", "") == decide(policy, "pickup", "101", None)


def test_share_groups_are_combined_and_duplicates_collapse() -> None:
    document = parse_document(
        {
            "groups": {"a": ["1", "2", "2", "1"], "b": ["1", "3"], "c": ["4", "5"]},
            "pickup_share_groups": ["a", "b", "a", "c"],
            "whisper_1": ["c", "a", "c"],
        }
    )
    policy = compile_policy(document)
    assert verdict(policy, "pickup", "1", None) == ("allow", "pickup_share_group", ("2", "3"))
    assert verdict(policy, "pickup", "2", None) == ("allow", "pickup_share_group", ("1",))
    assert verdict(policy, "whisper", "1", None) == ("allow", "whisper_group", ("2", "4", "5"))
    assert decide(policy, "whisper", "1", None).group == "c"


def test_an_extension_alone_in_its_group_has_no_one_to_pick_up() -> None:
    document = parse_document({"groups": {"solo": ["7"]}, "pickup_share_groups": ["solo"]})
    assert verdict(compile_policy(document), "pickup", "7", None) == ("deny", "no_pickup_group", ())


def test_targets_are_sorted_as_strings() -> None:
    document = parse_document({"groups": {"g": ["30", "100", "2", "b", "A"]}, "eavesdrop_1": ["g"]})
    decision = decide(compile_policy(document), "eavesdrop", "1", None)
    assert decision.targets == ("100", "2", "30", "A", "b")


def test_the_decision_json_form() -> None:
    decision = decide(compiled(), "pickup", "101", None)
    assert decision.to_json() == {
        "decision": "allow",
        "reason": "pickup_share_group",
        "targets": ["100", "102"],
    }


def test_the_granting_group_is_the_first_listed_that_contains_the_target() -> None:
    document = parse_document(
        {
            "groups": {"a": ["1", "2"], "b": ["2", "3", "1"]},
            "phone_replace_groups": ["b", "a"],
            "eavesdrop_1": ["b", "a"],
            "whisper_1": ["a", "b"],
        }
    )
    policy = compile_policy(document)
    assert decide(policy, "eavesdrop", "1", "2").group == "b"
    assert decide(policy, "whisper", "1", "2").group == "a"
    assert decide(policy, "replace", "1", "2").group == "b"
    assert decide(policy, "replace", "2", "1").group == "b"


def test_every_action_has_its_rules() -> None:
    from callgate.policy import Action
    from callgate.policy.decide import _ALLOW_ALL_RULES, _RULES

    assert set(_RULES) == set(_ALLOW_ALL_RULES) == {action.value for action in Action}


@pytest.mark.parametrize("odd", [None, 100, b"100", ["100"]])
def test_values_that_are_not_strings_are_invalid_requests(odd: object) -> None:
    policy = compiled()
    assert verdict(policy, "pickup", odd, "101") == ("deny", "invalid_request", ())  # type: ignore[arg-type]
    assert verdict(policy, "pickup", "101", odd) == (  # type: ignore[arg-type]
        ("allow", "pickup_share_group", ("100", "102"))
        if odd is None
        else ("deny", "invalid_request", ())
    )
    assert verdict(policy, odd, "100", "101") == ("deny", "invalid_request", ())  # type: ignore[arg-type]


def test_requests_for_unknown_extensions_leave_no_trace() -> None:
    """The tables built on first use are bounded by the document, not by what callers ask."""
    policy = compiled()
    for action in ("pickup", "eavesdrop", "whisper", "replace"):
        for target in (None, "101"):
            decide(policy, action, "100", target)
            decide(policy, action, "101", target)
    grants, reaches = len(policy._granted), len(policy.reaches._by_list)
    for n in range(500):
        for action in ("pickup", "eavesdrop", "whisper", "replace"):
            decide(policy, action, f"x{n}", "101")
            decide(policy, action, f"x{n}", None)
            decide(policy, action, "100", f"y{n}")
    assert (len(policy._granted), len(policy.reaches._by_list)) == (grants, reaches)
