"""Validation of the policy document: every rule of policy.md, each error located and explained."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from callgate.policy import (
    PolicyDocument,
    PolicyIssue,
    PolicyValidationError,
    is_valid_client_id,
    is_valid_extension,
    parse_document,
)

from .policy_examples import (
    BAD_DYNAMIC_KEYS,
    BAD_EXTENSIONS,
    BAD_GROUP_NAMES,
    BAD_MEMBERS,
    BOOLEAN_FIELDS,
    EVERY_ERROR_AT_ONCE,
    MISSING_REFERENCES,
    NOT_BOOLEANS,
    NOT_OBJECTS,
    ONLY_THE_KEY_IS_WRONG,
    REFERENCE,
    UNKNOWN_KEYS,
    VALID_GROUP_NAMES,
    WRONG_SHAPES,
    with_groups,
)


def errors_of(data: object) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(PolicyValidationError) as caught:
        parse_document(data)
    assert not caught.value.malformed_json
    return [(issue.loc, issue.message) for issue in caught.value.errors]


def both_forms(changes: dict[str, Any]) -> list[object]:
    """The same document as a Python dict and as JSON text: both must be judged alike."""
    document = {**REFERENCE, **changes}
    return [document, json.dumps(document), json.dumps(document).encode()]


# -- accepted documents -----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dict", "str", "bytes"])
def test_the_reference_document_is_valid_and_round_trips(form: str) -> None:
    data = {
        "dict": REFERENCE,
        "str": json.dumps(REFERENCE),
        "bytes": json.dumps(REFERENCE).encode(),
    }
    document = parse_document(data[form])
    assert document.to_json() == REFERENCE
    assert list(document.to_json()) == list(REFERENCE)
    assert document.eavesdrop == {"100": ("support",)}
    assert document.whisper == {"101": ("sales", "hr")}
    assert parse_document(document.to_json()) == document


def test_the_default_document_has_every_field_explicit() -> None:
    assert PolicyDocument().to_json() == {
        "allow_all": False,
        "pickup_all": True,
        "groups": {},
        "pickup_share_groups": [],
        "phone_replace_groups": [],
    }
    assert parse_document({}) == PolicyDocument()
    assert parse_document("{}") == PolicyDocument()


def test_documents_are_immutable() -> None:
    document = parse_document(REFERENCE)
    with pytest.raises(ValidationError):
        document.allow_all = True  # type: ignore[misc]


def test_duplicate_extensions_in_a_group_are_accepted() -> None:
    document = parse_document(with_groups(sales=["102", "101", "102"]))
    assert document.groups["sales"] == ("102", "101", "102")


def test_the_limits_themselves_are_accepted() -> None:
    groups = {f"g{i}": [f"{i}-{n}" for n in range(200)] for i in range(100)}
    document = parse_document(json.dumps({"groups": groups}))
    assert len(document.groups) == 100
    assert all(len(members) == 200 for members in document.groups.values())


@pytest.mark.parametrize("name", VALID_GROUP_NAMES)
def test_valid_group_names(name: str) -> None:
    assert parse_document({"groups": {name: ["100"]}, "eavesdrop_1": [name]}).groups == {
        name: ("100",)
    }


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", UNKNOWN_KEYS)
@pytest.mark.parametrize("form", [0, 1, 2], ids=["dict", "json-str", "json-bytes"])
def test_an_unknown_key_is_an_error_naming_it(key: str, form: int) -> None:
    data = both_forms({key: ["support"]})[form]
    [(loc, message)] = errors_of(data)
    assert loc == (key,)
    assert message.startswith(f"Unknown key '{key}'")


@pytest.mark.parametrize("key", BAD_DYNAMIC_KEYS)
@pytest.mark.parametrize("form", [0, 1], ids=["dict", "json"])
def test_a_dynamic_key_needs_a_valid_extension(key: str, form: int) -> None:
    data = both_forms({key: ["support"]})[form]
    [(loc, message)] = errors_of(data)
    assert loc == (key,)
    assert "valid extension" in message
    assert key in message


@pytest.mark.parametrize("form", [0, 1], ids=["dict", "json"])
def test_only_the_key_is_reported_when_the_key_is_wrong(form: int) -> None:
    """What was under a mistyped key cannot be judged: its value and references are not."""
    data = both_forms(ONLY_THE_KEY_IS_WRONG)[form]
    assert [loc for loc, _ in errors_of(data)] == [
        ("eavesdrp_100",),
        ("whisper_",),
        ("eavesdrop_1 0",),
    ]


def test_the_dynamic_key_check_holds_on_json_input() -> None:
    """pydantic < 2.14.2 skipped typed extra keys on JSON input; this is why we require it."""
    text = '{"groups": {"g": ["1"]}, "eavesdrop_1": ["g"], "eavesdrp_1": ["g"], "whisper_": []}'
    assert [loc for loc, _ in errors_of(text)] == [("eavesdrp_1",), ("whisper_",)]


# -- types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", BOOLEAN_FIELDS)
@pytest.mark.parametrize("value", NOT_BOOLEANS)
@pytest.mark.parametrize("form", [0, 1], ids=["dict", "json"])
def test_booleans_are_strict(field: str, value: object, form: int) -> None:
    [(loc, message)] = errors_of(both_forms({field: value})[form])
    assert loc == (field,)
    assert "true or false" in message


@pytest.mark.parametrize(("changes", "loc", "fragment"), WRONG_SHAPES)
@pytest.mark.parametrize("form", [0, 1], ids=["dict", "json"])
def test_arrays_of_strings_and_an_object_of_arrays(
    changes: dict[str, Any], loc: tuple[str | int, ...], fragment: str, form: int
) -> None:
    [(found, message)] = errors_of(both_forms(changes)[form])
    assert found == loc
    assert fragment in message


@pytest.mark.parametrize(("members", "loc"), BAD_MEMBERS)
def test_group_members_are_an_array_of_strings(members: object, loc: tuple[str | int, ...]) -> None:
    for data in both_forms(with_groups(sales=members)):
        assert [found for found, _ in errors_of(data)] == [loc]


# -- syntax -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_EXTENSIONS)
def test_extensions_in_groups_are_checked(bad: str) -> None:
    for data in both_forms(with_groups(sales=["102", "101", "103", bad])):
        [(loc, message)] = errors_of(data)
        assert loc == ("groups", "sales", 3)
        assert f"{bad!r} is not a valid extension" in message


@pytest.mark.parametrize("bad", BAD_GROUP_NAMES)
def test_group_names_are_checked(bad: str) -> None:
    document = {"groups": {bad: ["100"]}}
    for data in (document, json.dumps(document)):
        [(loc, message)] = errors_of(data)
        assert loc == ("groups", bad)
        assert "not a valid group name" in message


# -- limits ---------------------------------------------------------------------------------------


def test_at_most_100_groups() -> None:
    groups = {f"g{i}": ["100"] for i in range(101)}
    for data in ({"groups": groups}, json.dumps({"groups": groups})):
        [(loc, message)] = errors_of(data)
        assert loc == ("groups",)
        assert "at most 100" in message
        assert "101" in message


def test_at_most_200_extensions_in_a_group() -> None:
    members = [str(n) for n in range(1000, 1201)]
    for data in both_forms(with_groups(sales=members)):
        [(loc, message)] = errors_of(data)
        assert loc == ("groups", "sales")
        assert "201 extensions" in message
        assert "at most 200" in message


# -- references -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "loc"), MISSING_REFERENCES)
def test_every_referenced_group_exists(field: str, value: list[str], loc: tuple[str, int]) -> None:
    for data in both_forms({field: value}):
        [(found, message)] = errors_of(data)
        assert found == loc
        assert "'night'" in message
        assert field in message


def test_the_model_itself_checks_references() -> None:
    with pytest.raises(ValidationError) as caught:
        PolicyDocument.model_validate({"groups": {}, "pickup_share_groups": ["a", "b"]})
    assert [error["loc"] for error in caught.value.errors()] == [
        ("pickup_share_groups", 0),
        ("pickup_share_groups", 1),
    ]


# -- not an object, not JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [*NOT_OBJECTS, b"x"])
def test_a_value_that_is_not_an_object_is_an_error(data: object) -> None:
    if data == b"x":
        with pytest.raises(PolicyValidationError) as caught:
            parse_document(data)
        assert caught.value.malformed_json
        return
    [(loc, message)] = errors_of(data)
    assert loc == ()
    assert "must be a JSON object" in message


@pytest.mark.parametrize("text", ["{", '{"allow_all": tru}', "", "{'a': 1}", b"\xff\xfe{"])
def test_malformed_json_is_flagged(text: str | bytes) -> None:
    with pytest.raises(PolicyValidationError) as caught:
        parse_document(text)
    assert caught.value.malformed_json
    [issue] = caught.value.errors
    assert issue.loc == ()
    assert "not valid JSON" in issue.message


# -- all errors at once, and their form -----------------------------------------------------------


def test_every_error_is_reported_at_once() -> None:
    data = EVERY_ERROR_AT_ONCE
    for form in (data, json.dumps(data)):
        assert [loc for loc, _ in errors_of(form)] == [
            ("pickup_all",),
            ("groups", "sales", 1),
            ("eavesdrp_100",),
            ("phone_replace_groups", 0),
        ]


def test_issues_have_a_json_form_and_a_readable_line() -> None:
    issue = PolicyIssue(("groups", "sales", 3), "'1 00' is not a valid extension.")
    assert issue.to_json() == {"loc": ["groups", "sales", 3], "message": issue.message}
    assert str(issue) == "groups.sales[3]: '1 00' is not a valid extension."
    assert str(PolicyIssue((), "Not an object.")) == "(document): Not an object."
    # a sentence that starts with its own location is not prefixed twice
    assert str(PolicyIssue(("allow_all",), "allow_all must be true or false.")) == (
        "allow_all must be true or false."
    )


def test_the_exception_summarises_its_errors() -> None:
    with pytest.raises(
        PolicyValidationError, match=r"2 error\(s\): allow_all must .*; pickup_all must"
    ):
        parse_document({"allow_all": 1, "pickup_all": 0})


# -- lexical helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("100", True), ("A-z_0.9+", True), ("x" * 32, True), ("x" * 33, False), ("", False),
        ("1 00", False), ("100\n", False), ("é", False), (None, False), (100, False),
    ],
)  # fmt: skip
def test_is_valid_extension(value: object, valid: bool) -> None:
    assert is_valid_extension(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("acme", True), ("acme-2.eu_west", True), ("x" * 64, True), ("x" * 65, False),
        ("", False), ("acme+1", False), ("acme\n", False), ("acmé", False), (None, False),
    ],
)  # fmt: skip
def test_is_valid_client_id(value: object, valid: bool) -> None:
    assert is_valid_client_id(value) is valid
