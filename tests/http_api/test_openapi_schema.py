"""The published schemas say what the models check, and each pattern is written once.

The policy document schema that ``/openapi.json`` serves is held to the documents of the policy
tests (``tests/policy/policy_examples.py``): it accepts every valid one and refuses every invalid
one, except the rules a JSON Schema cannot state, which are listed below as model-only, each with
its reason (and the test checks that the schema really lets those through, so the list stays
honest).

The validator is ``jsonschema_rs`` (schemathesis's own): its regular expressions follow
ECMA-262 as JSON Schema asks, where ``$`` is the end of the text. Python's ``re.search``, which
the ``jsonschema`` package uses, would let ``"100\\n"`` through ``^...$``; pydantic's engine would
not, and neither does a browser's.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from callgate.policy import PolicyValidationError, parse_document, syntax
from callgate.policy.syntax import MAX_GRANT_KEYS, MAX_GROUP_LIST
from policy.policy_examples import (
    BAD_DYNAMIC_KEYS,
    BAD_EXTENSIONS,
    BAD_GROUP_NAMES,
    BAD_MEMBERS,
    BOOLEAN_FIELDS,
    EVERY_ERROR_AT_ONCE,
    GROUPS,
    LIST_FIELDS,
    MISSING_REFERENCES,
    NOT_BOOLEANS,
    NOT_OBJECTS,
    ONLY_THE_KEY_IS_WRONG,
    REFERENCE,
    UNKNOWN_KEYS,
    VALID_GROUP_NAMES,
    WRONG_SHAPES,
    grants,
    with_groups,
)
from reference_policy import REFERENCE_DOCUMENT

from .http_support import Harness

SRC = Path(__file__).resolve().parents[2] / "src" / "callgate"

# -- the documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    document: Any
    model_only: str | None = None
    """Why a JSON Schema cannot refuse this document (None: the schema must refuse it)."""


CROSS_FIELD = "a group named must be defined in groups: a rule across fields, not a shape"
PER_PREFIX = (
    "at most MAX_GRANT_KEYS keys of each prefix: JSON Schema counts all properties"
    " (maxProperties bounds the total), not those matching one pattern"
)


def valid_documents() -> Iterator[tuple[str, Any]]:
    yield "reference (tests/reference_policy.py)", REFERENCE_DOCUMENT
    yield "reference (policy_examples)", REFERENCE
    yield "default (empty)", {}
    yield "repeated extension", with_groups(sales=["102", "101", "102"])
    yield (
        "100 groups of 200",
        {"groups": {f"g{i}": [f"{i}-{n}" for n in range(200)] for i in range(100)}},
    )
    for name in VALID_GROUP_NAMES:
        yield f"group name {name!r}", {"groups": {name: ["100"]}, "eavesdrop_1": [name]}
    for field in LIST_FIELDS:
        yield f"{field} at the limit", {**GROUPS, field: ["support"] * MAX_GROUP_LIST}
    yield (
        "each grant kind at its limit",
        {
            **GROUPS,
            **grants("eavesdrop_", MAX_GRANT_KEYS),
            **grants("whisper_", MAX_GRANT_KEYS),
        },
    )


def invalid_documents() -> Iterator[Case]:
    for key in UNKNOWN_KEYS:
        yield Case(f"unknown key {key!r}", {**REFERENCE, key: ["support"]})
    for key in BAD_DYNAMIC_KEYS:
        yield Case(f"bad grant key {key!r}", {**REFERENCE, key: ["support"]})
    yield Case("only the key is wrong", {**REFERENCE, **ONLY_THE_KEY_IS_WRONG})
    yield Case(
        "JSON input with bad keys",
        json.loads(
            '{"groups": {"g": ["1"]}, "eavesdrop_1": ["g"], "eavesdrp_1": ["g"], "whisper_": []}'
        ),
    )
    for field in BOOLEAN_FIELDS:
        for value in NOT_BOOLEANS:
            yield Case(f"{field}={value!r}", {**REFERENCE, field: value})
    for changes, _, _ in WRONG_SHAPES:
        yield Case(f"wrong shape {changes!r}", {**REFERENCE, **changes})
    for members, _ in BAD_MEMBERS:
        yield Case(f"members {members!r}", with_groups(sales=members))
    for bad in BAD_EXTENSIONS:
        yield Case(f"extension {bad!r}", with_groups(sales=["102", "101", "103", bad]))
    for bad in BAD_GROUP_NAMES:
        yield Case(f"group name {bad!r}", {"groups": {bad: ["100"]}})
    yield Case("101 groups", {"groups": {f"g{i}": ["100"] for i in range(101)}})
    yield Case("201 extensions", with_groups(sales=[str(n) for n in range(1000, 1201)]))
    for field, value, _ in MISSING_REFERENCES:
        yield Case(f"{field} names 'night'", {**REFERENCE, field: value}, model_only=CROSS_FIELD)
    yield Case(
        "no groups, two names",
        {"groups": {}, "pickup_share_groups": ["a", "b"]},
        model_only=CROSS_FIELD,
    )
    for value in NOT_OBJECTS:
        decoded = json.loads(value) if isinstance(value, str) else value
        yield Case(f"not an object: {value!r}", decoded)
    yield Case("every error at once", EVERY_ERROR_AT_ONCE)
    yield Case("two booleans wrong", {"allow_all": 1, "pickup_all": 0})
    for field in LIST_FIELDS:
        yield Case(f"{field} over the limit", {**GROUPS, field: ["support"] * (MAX_GROUP_LIST + 1)})
    for prefix in ("eavesdrop_", "whisper_"):
        yield Case(
            f"{prefix} keys over the limit",
            {**GROUPS, **grants(prefix, MAX_GRANT_KEYS + 5)},
            model_only=PER_PREFIX,
        )
    yield Case(
        "key count beside a field error",
        {**GROUPS, "allow_all": "yes", **grants("whisper_", MAX_GRANT_KEYS + 1)},
    )
    yield Case(
        "list over the limit and a missing group",
        {**GROUPS, "pickup_share_groups": ["support"] * 101, "whisper_100": ["nope"]},
    )
    # Not in this table: the malformed JSON texts of test_malformed_json_is_flagged. A JSON
    # Schema judges a decoded value; text that is not JSON never reaches one (400, not 422).


VALID = list(valid_documents())
INVALID = list(invalid_documents())


def ids(cases: list[Any]) -> list[str]:
    return [case.name if isinstance(case, Case) else case[0] for case in cases]


# -- the served schema --------------------------------------------------------------------------


@pytest.fixture
async def spec(api: Harness) -> dict[str, Any]:
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


def validator(spec: dict[str, Any], component: str) -> Any:
    """A JSON Schema 2020-12 validator of one component, its ``$ref``s resolved in ``spec``."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{component}",
        "components": spec["components"],
    }
    return jsonschema_rs.Draft202012Validator(schema)


def accepted_by_model(document: Any) -> bool:
    try:
        parse_document(document)
    except PolicyValidationError:
        return False
    return True


async def test_openapi_is_3_1_whose_schemas_are_json_schema_2020_12(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    for name, schema in spec["components"]["schemas"].items():
        dialect = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        jsonschema_rs.meta.validate(dialect)  # against the 2020-12 meta-schema
        validator(spec, name)  # and every $ref it holds resolves
        assert "$defs" not in schema, name  # every model is a component of its own


@pytest.mark.parametrize(("name", "document"), VALID, ids=ids(VALID))
async def test_the_schema_accepts_every_valid_document(
    spec: dict[str, Any], name: str, document: Any
) -> None:
    assert accepted_by_model(document)
    assert validator(spec, "PolicyDocument").is_valid(document)
    # and every form a PUT may send it in, and the stored document that every GET answers
    body = validator(spec, "PolicyBody")
    for form in (document, {"call_control_groups": document}, {"call_control_groups": "{}"}):
        assert body.is_valid(form)
    assert validator(spec, "StoredDocument").is_valid(parse_document(document).to_json())


@pytest.mark.parametrize("case", INVALID, ids=ids(INVALID))
async def test_the_schema_refuses_every_invalid_document(spec: dict[str, Any], case: Case) -> None:
    assert not accepted_by_model(case.document)
    schema = validator(spec, "PolicyDocument")
    if case.model_only is not None:
        # Documented as the model's alone: the schema must let it through (else move it).
        assert schema.is_valid(case.document), case.model_only
        return
    assert not schema.is_valid(case.document)
    body = validator(spec, "PolicyBody")
    assert not body.is_valid(case.document)
    if not isinstance(case.document, str):  # a string under the key is the text form
        assert not body.is_valid({"call_control_groups": case.document})


async def test_the_model_only_rules_are_few_and_named(spec: dict[str, Any]) -> None:
    model_only = [case for case in INVALID if case.model_only is not None]
    assert {case.model_only for case in model_only} == {CROSS_FIELD, PER_PREFIX}
    assert len(model_only) < len(INVALID) // 5
    assert str(MAX_GRANT_KEYS) in spec["components"]["schemas"]["PolicyDocument"]["description"]


async def test_the_wrapper_takes_only_the_document_or_its_text(spec: dict[str, Any]) -> None:
    body = validator(spec, "PolicyBody")
    assert not body.is_valid({"call_control_groups": REFERENCE, "allow_all": True})
    assert not body.is_valid({"call_control_groups": 5})
    assert not body.is_valid({"call_control_groups": {**REFERENCE, "eavesdrp_1": []}})
    assert body.is_valid({"call_control_groups": json.dumps(REFERENCE)})


async def test_an_answer_has_every_field_and_a_request_need_not(spec: dict[str, Any]) -> None:
    # validation mode for what comes in, serialization mode for what goes out
    schemas = spec["components"]["schemas"]
    assert "required" not in schemas["PolicyDocument"]
    assert set(schemas["StoredDocument"]["required"]) == {
        "allow_all",
        "pickup_all",
        "groups",
        "pickup_share_groups",
        "phone_replace_groups",
    }
    assert not validator(spec, "StoredDocument").is_valid({})


async def test_the_published_example_is_a_valid_document(spec: dict[str, Any]) -> None:
    [example] = spec["components"]["schemas"]["PolicyDocument"]["examples"]
    assert accepted_by_model(example)
    assert validator(spec, "PolicyDocument").is_valid(example)
    assert list(example) == list(parse_document(example).to_json())  # shown in document order


async def test_every_body_schema_is_generated_with_the_shared_patterns(
    spec: dict[str, Any],
) -> None:
    schemas = spec["components"]["schemas"]
    document = schemas["PolicyDocument"]
    assert list(document["patternProperties"]) == [syntax.DYNAMIC_KEY_PATTERN]
    assert list(document["properties"]["groups"]["patternProperties"]) == [
        syntax.GROUP_NAME_PATTERN
    ]
    token = schemas["TokenRequest"]["properties"]
    assert token["name"]["pattern"] == syntax.TOKEN_NAME_PATTERN
    assert token["client_id"]["pattern"] == syntax.CLIENT_ID_PATTERN
    assert schemas["ReplacePin"]["properties"]["pin"]["pattern"] == syntax.PIN_PATTERN
    for schema in (document, schemas["TokenRequest"], schemas["ReplacePin"]):
        assert schema["additionalProperties"] is False


# -- written once -------------------------------------------------------------------------------


def string_literals(path: Path) -> Iterator[tuple[int, str]]:
    """Every string constant in a module, the literal parts of f-strings included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


REGEX_LIKE = re.compile(r"\[[^\]]+\](?:\{\d+(?:,\d*)?\}|[+*])|^\^.*\$$")
"""A character class with a quantifier (``[0-9]{4,12}``), or a text anchored at both ends."""


def test_no_pattern_literal_appears_twice_in_src() -> None:
    seen: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for line, text in string_literals(path):
            if "\n" not in text and REGEX_LIKE.search(text):  # a docstring is prose
                seen.setdefault(text, []).append(f"{path.relative_to(SRC)}:{line}")
    assert seen, "the scan found no pattern at all"
    repeated = {text: where for text, where in seen.items() if len(where) > 1}
    assert repeated == {}


def test_the_validation_patterns_and_sentences_live_in_syntax_only() -> None:
    """No other module types a rule of syntax.py again, not even inside a longer literal."""
    rules = {
        name: value
        for name, value in vars(syntax).items()
        if name.endswith(("_PATTERN", "_RULE")) and isinstance(value, str)
    }
    assert {"EXTENSION_PATTERN", "CLIENT_ID_RULE", "PIN_PATTERN", "TOKEN_NAME_RULE"} <= set(rules)
    # a pattern is recognised by its body, without the anchors
    needles = {name: value.strip("^$") for name, value in rules.items()}
    found = [
        (name, f"{path.relative_to(SRC)}:{line}")
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "syntax.py"
        for line, text in string_literals(path)
        for name, needle in needles.items()
        if needle in text
    ]
    assert found == []
