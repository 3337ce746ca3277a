"""Validating the models beside the document (settings, grants): every error located, in sentences.

``parse_document`` words its own errors for the document's fields; the smaller models beside it
share this one translation of pydantic's error records, which reads the rule a field breaks from
the patterns and bounds declared on the model (``rules``: pattern -> the rule in words).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from callgate.policy.errors import Location, PolicyIssue, PolicyValidationError, format_location

Model = TypeVar("Model", bound=BaseModel)


def parse_model(
    model: type[Model], data: object, *, subject: str, rules: Mapping[str, str]
) -> Model:
    """Validate ``data`` (JSON text, or an already decoded value) as ``model``.

    Raises ``PolicyValidationError`` (its text naming ``subject``) listing every problem, with
    ``malformed_json`` set when text input is not JSON.
    """
    try:
        if isinstance(data, str | bytes | bytearray):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        malformed = not_json(errors, what=f"The {subject}", subject=subject)
        if malformed is not None:
            raise malformed from None
        issues = tuple(_issue(error, subject, rules) for error in errors)
        raise PolicyValidationError(issues, subject=subject) from None


def not_json(
    errors: list[ErrorDetails], *, what: str, subject: str
) -> PolicyValidationError | None:
    """The error for text that is not JSON at all (the HTTP API's 400), if that is what failed."""
    if not errors or errors[0]["type"] != "json_invalid":
        return None
    detail = errors[0].get("ctx", {}).get("error", "")
    issue = PolicyIssue((), f"{what} is not valid JSON: {detail}.")
    return PolicyValidationError((issue,), malformed_json=True, subject=subject)


def _issue(error: ErrorDetails, subject: str, rules: Mapping[str, str]) -> PolicyIssue:
    loc: Location = tuple(error["loc"])
    return PolicyIssue(loc, _message(error, loc, subject, rules))


def _message(error: ErrorDetails, loc: Location, subject: str, rules: Mapping[str, str]) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx", {})
    where = format_location(loc)
    match kind:
        case "model_type" | "model_attributes_type" | "dict_type" if not loc:
            return f"The {subject} must be a JSON object, not {json_kind(value)}."
        case "model_type" | "model_attributes_type" | "dict_type":
            return f"{where} must be a JSON object, not {json_kind(value)}."
        case "missing":
            return f"{where} is required."
        case "extra_forbidden":
            return f"Unknown key '{loc[-1]}'."
        case "string_type":
            return f"{where} must be a string, not {json_kind(value)}."
        case "int_type" | "int_from_float" | "int_parsing":
            return f"{where} must be a whole number, not {json_kind(value)}."
        case "list_type" | "tuple_type":
            return f"{where} must be an array, not {json_kind(value)}."
        case "literal_error" | "enum":
            return f"{where} must be one of {ctx.get('expected')}, not {json_kind(value)}."
        case "greater_than_equal":
            return f"{where} must be at least {ctx.get('ge')}, not {json_kind(value)}."
        case "less_than_equal":
            return f"{where} must be at most {ctx.get('le')}, not {json_kind(value)}."
        case "too_long" if isinstance(value, list | tuple):
            limit = ctx.get("max_length")
            return f"{where} has {len(value)} items; at most {limit} are allowed."
        case "too_long":
            return f"{where} is longer than {ctx.get('max_length')} characters."
        case "too_short" | "string_too_short":
            return f"{where} must not be empty."
        case "string_too_long":
            return f"{where} is longer than {ctx.get('max_length')} characters."
        case (
            "rfc3339"
            | "timezone_aware"
            | "datetime_type"
            | "datetime_parsing"
            | "datetime_from_date_parsing"
        ):
            return (
                f"{where} must be an RFC 3339 date-time with its offset and at most 6 decimals"
                f" (such as 2026-05-01T08:00:00Z), not {json_kind(value)}."
            )
        case "string_pattern_mismatch":
            pattern = str(ctx.get("pattern"))
            rule = rules.get(pattern, f"it must match {pattern}")
            return f"{value!r} is not valid for {where} ({rule})."
    if isinstance(ctx.get("message"), str):  # our own checks write the whole sentence
        return str(ctx["message"])
    return f"{where}: {error['msg']}."


def json_kind(value: object) -> str:
    """How a JSON value is named in a sentence: ``the string '1 00'``, ``an array``, ``null``."""
    match value:
        case bool():
            return f"the boolean {str(value).lower()}"
        case str():
            return f"the string {value!r}"
        case int() | float():
            return f"the number {value}"
        case None:
            return "null"
        case Mapping():
            return "an object"
        case list() | tuple():
            return "an array"
    return f"a {type(value).__name__}"
