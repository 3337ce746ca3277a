"""``parse_document``: JSON text or a Python value in; a valid ``PolicyDocument`` or all errors out.

pydantic's error records are turned into ``PolicyIssue``s with sentences written for the people who
edit policies (``"'1 00' is not a valid extension ..."``), not pydantic's generic wording.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from callgate.policy.document import (
    MISSING_GROUP,
    TOO_MANY_GRANTS,
    PolicyDocument,
    find_references,
    missing_group_message,
    missing_groups,
    too_many_grants,
)
from callgate.policy.errors import Location, PolicyIssue, PolicyValidationError, format_location
from callgate.policy.issues import json_kind, not_json
from callgate.policy.syntax import (
    DYNAMIC_KEY_PATTERN,
    EAVESDROP_PREFIX,
    EXTENSION_PATTERN,
    EXTENSION_RULE,
    GROUP_NAME_PATTERN,
    GROUP_NAME_RULE,
    MAX_GROUP_LIST,
    MAX_GROUP_SIZE,
    MAX_GROUPS,
    WHISPER_PREFIX,
    is_valid_extension,
)

_FIELDS = frozenset(PolicyDocument.model_fields)


def parse_document(data: object) -> PolicyDocument:
    """Validate ``data``: JSON text (``str``/``bytes``) or an already decoded value (a ``dict``).

    Raises ``PolicyValidationError`` listing every problem; ``malformed_json`` is set when text
    input is not JSON.
    """
    if isinstance(data, str | bytes | bytearray):
        try:
            return PolicyDocument.model_validate_json(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            malformed = not_json(errors, what="The document", subject="policy document")
            if malformed is not None:
                raise malformed from None
            raise _rejected(errors, _loads(data)) from None
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise _rejected(exc.errors(include_url=False), data) from None


def _loads(text: str | bytes | bytearray) -> object:
    try:
        return json.loads(text)
    except ValueError:  # pydantic's parser accepted it; the stdlib's need not (it only adds hints)
        return None


def _rejected(errors: list[ErrorDetails], raw: object) -> PolicyValidationError:
    # What is under a key that is itself wrong cannot be judged: only the key is reported.
    bad_keys = {error["loc"][0] for error in errors if _is_key_error(error)}
    issues = [
        _issue(error)
        for error in errors
        if not error["loc"] or error["loc"][0] not in bad_keys or _is_key_error(error)
    ]
    # The cross-field checks, where pydantic did not get as far as running them.
    kinds = {error["type"] for error in errors}
    if isinstance(raw, Mapping) and MISSING_GROUP not in kinds:
        issues.extend(i for i in _missing_groups(raw) if i.loc[0] not in bad_keys)
    if isinstance(raw, Mapping) and TOO_MANY_GRANTS not in kinds:
        issues.extend(PolicyIssue(e["loc"], _custom_message(e)) for e in too_many_grants(raw))
    return PolicyValidationError(tuple(issues))


def _custom_message(error: InitErrorDetails) -> str:
    kind = error["type"]
    return kind.message() if isinstance(kind, PydanticCustomError) else str(kind)


def _is_key_error(error: ErrorDetails) -> bool:
    """An ``eavesdrp_100``: a key that is neither a field nor ``eavesdrop_``/``whisper_<ext>``."""
    pattern = error.get("ctx", {}).get("pattern")
    return len(error["loc"]) == 1 and pattern == DYNAMIC_KEY_PATTERN


def _missing_groups(raw: Mapping[Any, object]) -> list[PolicyIssue]:
    """The cross-field check on a document whose field errors kept pydantic from running it."""
    groups = raw.get("groups", {})
    if not isinstance(groups, Mapping):
        return []  # which groups exist is unknown: calling references "missing" would mislead
    return [
        PolicyIssue(error["loc"], missing_group_message(error["loc"], error["input"]))
        for error in missing_groups(groups, find_references(raw.items()))
    ]


def _issue(error: ErrorDetails) -> PolicyIssue:
    loc: Location = tuple(part for part in error["loc"] if part != "[key]")
    return PolicyIssue(loc, _message(error, loc))


def _message(error: ErrorDetails, loc: Location) -> str:
    kind = error["type"]
    value = error.get("input")
    field = str(loc[0]) if loc else ""
    match kind:
        case "model_type" | "model_attributes_type" | "dict_type" if not loc:
            return f"The policy document must be a JSON object, not {json_kind(value)}."
        case "missing_group" | "too_many_grants":
            return str(error["msg"])
        case "bool_type":
            return f"{field} must be true or false (a JSON boolean), not {json_kind(value)}."
        case "dict_type":
            return f"groups must be an object of arrays of extensions, not {json_kind(value)}."
        case "list_type" | "tuple_type":
            what = "extensions" if field == "groups" else "group names"
            return f"{format_location(loc)} must be an array of {what}, not {json_kind(value)}."
        case "string_type":
            return f"{format_location(loc)} must be a string, not {json_kind(value)}."
        case "too_long" if loc == ("groups",):
            count = len(value) if isinstance(value, Mapping) else "more"
            return f"groups has {count} groups; at most {MAX_GROUPS} are allowed."
        case "too_long" if field == "groups":
            count = len(value) if isinstance(value, list | tuple) else "more"
            return f"Group '{loc[1]}' has {count} extensions; at most {MAX_GROUP_SIZE} are allowed."
        case "too_long":
            count = len(value) if isinstance(value, list | tuple) else "more"
            return (
                f"{field} has {count} group names; at most {MAX_GROUP_LIST} are allowed"
                f" (there are at most {MAX_GROUPS} groups to name)."
            )
        case "string_pattern_mismatch":
            return _pattern_message(error.get("ctx", {}).get("pattern"), value)
    return f"{format_location(loc)}: {error['msg']}."


def _pattern_message(pattern: object, value: object) -> str:
    if pattern == EXTENSION_PATTERN:
        return f"{value!r} is not a valid extension ({EXTENSION_RULE})."
    if pattern == GROUP_NAME_PATTERN:
        return f"{value!r} is not a valid group name ({GROUP_NAME_RULE})."
    if pattern == DYNAMIC_KEY_PATTERN and isinstance(value, str):
        return _key_message(value)
    return f"{value!r} does not match {pattern}."


def _key_message(key: str) -> str:
    for prefix in (EAVESDROP_PREFIX, WHISPER_PREFIX):
        if key.startswith(prefix) and not is_valid_extension(key[len(prefix) :]):
            return f"Key '{key}' must name a valid extension after '{prefix}' ({EXTENSION_RULE})."
    known = ", ".join(sorted(_FIELDS))
    return (
        f"Unknown key '{key}': a policy document has only {known},"
        f" eavesdrop_<extension> and whisper_<extension>."
    )
