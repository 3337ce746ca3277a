"""The limits on a document's lists and grant keys, derived from 100 groups of 200 extensions.

Each bad document is judged the same way as a Python dict, as JSON text and as JSON bytes, and
each error is located like the other document errors.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from callgate.policy import PolicyValidationError, parse_document
from callgate.policy.syntax import MAX_GRANT_KEYS, MAX_GROUP_LIST, MAX_GROUP_SIZE, MAX_GROUPS

from .policy_examples import GROUPS, LIST_FIELDS, grants


def forms(document: dict[str, Any]) -> list[object]:
    return [document, json.dumps(document), json.dumps(document).encode()]


def issues_of(data: object) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(PolicyValidationError) as caught:
        parse_document(data)
    return [(issue.loc, issue.message) for issue in caught.value.errors]


def test_the_limits_follow_from_the_group_rules() -> None:
    assert MAX_GROUP_LIST == MAX_GROUPS == 100
    assert MAX_GRANT_KEYS == MAX_GROUPS * MAX_GROUP_SIZE == 20_000


@pytest.mark.parametrize("field", LIST_FIELDS)
@pytest.mark.parametrize("form", range(3))
def test_a_group_list_over_the_limit_is_an_error_located_at_the_list(field: str, form: int) -> None:
    document = {**GROUPS, field: ["support"] * (MAX_GROUP_LIST + 1)}
    issues = issues_of(forms(document)[form])
    assert issues == [
        (
            (field,),
            f"{field} has 101 group names; at most 100 are allowed"
            " (there are at most 100 groups to name).",
        )
    ]


@pytest.mark.parametrize("field", LIST_FIELDS)
@pytest.mark.parametrize("form", range(3))
def test_a_group_list_at_the_limit_is_accepted_repeats_included(field: str, form: int) -> None:
    # policy.md does not forbid naming a group twice: repeats stay allowed within the limit.
    document = {**GROUPS, field: ["support"] * MAX_GROUP_LIST}
    parsed = parse_document(forms(document)[form])
    assert parsed.to_json()[field] == ["support"] * MAX_GROUP_LIST


@pytest.mark.parametrize("prefix", ["eavesdrop_", "whisper_"])
@pytest.mark.parametrize("form", range(3))
def test_grant_keys_over_the_limit_are_an_error_at_the_first_key_past_it(
    prefix: str, form: int
) -> None:
    document = {**GROUPS, **grants(prefix, MAX_GRANT_KEYS + 5)}
    issues = issues_of(forms(document)[form])
    assert [loc for loc, _ in issues] == [(f"{prefix}{MAX_GRANT_KEYS}",)]
    assert f"Too many {prefix}<extension> keys: at most 20000" in issues[0][1]


@pytest.mark.parametrize("form", range(3))
def test_each_kind_of_grant_key_has_its_own_limit(form: int) -> None:
    document = {
        **GROUPS,
        **grants("eavesdrop_", MAX_GRANT_KEYS),
        **grants("whisper_", MAX_GRANT_KEYS),
    }
    parsed = parse_document(forms(document)[form])
    assert len(parsed.eavesdrop) == len(parsed.whisper) == MAX_GRANT_KEYS


@pytest.mark.parametrize("form", range(3))
def test_the_key_count_is_reported_beside_other_errors(form: int) -> None:
    # A field error keeps pydantic from running the cross-field checks; they still run.
    document = {**GROUPS, "allow_all": "yes", **grants("whisper_", MAX_GRANT_KEYS + 1)}
    locs = [loc for loc, _ in issues_of(forms(document)[form])]
    assert locs == [("allow_all",), (f"whisper_{MAX_GRANT_KEYS}",)]


def test_a_list_over_the_limit_and_a_missing_group_are_both_reported() -> None:
    document = {**GROUPS, "pickup_share_groups": ["support"] * 101, "whisper_100": ["nope"]}
    locs = [loc for loc, _ in issues_of(document)]
    assert ("pickup_share_groups",) in locs
    assert ("whisper_100", 0) in locs
