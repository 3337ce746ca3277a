"""Reading numbers and times from a query string, strictly: bad input is a 400, never a 500.

Every route that takes a number or a time from its query string reads it here, so that they all
accept the same spelling and answer the same error:

- a number is 1 to ``MAX_DIGITS`` ASCII digits (``str.isdigit`` and ``int`` also take ``²``,
  Arabic-Indic digits, ``_`` and spaces; ``int`` of 5,000 digits raises), within the route's
  bounds;
- a time is ``YYYY-MM-DD``, optionally ``THH:MM[:SS[.ffffff]]`` and ``Z`` or ``±HH:MM`` (no zone:
  UTC); ``datetime.fromisoformat`` alone also takes ``11111111`` or a trailing NUL;
- a parameter given twice (``?limit=1&limit=2``) is an error, not a silent pick of one.

The answer is 400 ``invalid_query`` with one detail per bad parameter:
``{"loc": ["query", "<name>"], "message": "..."}``.

One parameter::

    limit = query_int(request.query, "limit", default=100, minimum=1, maximum=1000)
    before = query_int(request.query, "before", default=None, minimum=1)

Several, all errors reported at once::

    query = QueryReader(request.query)
    limit = query.integer("limit", default=1000, minimum=1, maximum=10_000)
    since = query.time("since")
    query.raise_if_invalid("The audit filters are not valid.")
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final, overload

from multidict import MultiMapping

from callgate.http.errors import ApiError, JsonDetail

MAX_DIGITS: Final = 18
"""Any number of up to 18 digits fits a signed 64-bit integer (SQLite's and PostgreSQL's)."""
MAX_INTEGER: Final = 10**MAX_DIGITS - 1

TIME_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
TIME_RULE: Final = (
    "an ISO 8601 time: YYYY-MM-DD, optionally THH:MM[:SS[.ffffff]] and Z or +HH:MM"
    " (no zone: UTC; in a URL, write + as %2B)"
)
_TIME = re.compile(TIME_PATTERN[1:-1])
_ECHO = 40
"""At most this many characters of a bad value are quoted back."""


def invalid_query(message: str, details: list[JsonDetail]) -> ApiError:
    return ApiError(400, "invalid_query", message, details)


def _quoted(value: str) -> str:
    return repr(value) if len(value) <= _ECHO else f"{value[:_ECHO]!r}... ({len(value)} characters)"


def _detail(name: str, message: str) -> JsonDetail:
    return {"loc": ["query", name], "message": message}


class QueryReader:
    """Reads parameters from a query string, collecting an error for each bad one."""

    def __init__(self, query: MultiMapping[str]) -> None:
        self._query = query
        self.errors: list[JsonDetail] = []

    def add_error(self, name: str, message: str) -> None:
        """A route's own check on a parameter (an extension, an action), reported alike."""
        self.errors.append(_detail(name, message))

    def text(self, name: str) -> str | None:
        """The parameter's value, None when absent; an error when given more than once."""
        values = self._query.getall(name, [])
        if len(values) > 1:
            self.add_error(name, f"{name} is given {len(values)} times; give it once.")
            return None
        return values[0] if values else None

    @overload
    def integer(self, name: str, *, default: int, minimum: int = 0, maximum: int = ...) -> int: ...
    @overload
    def integer(
        self, name: str, *, default: None, minimum: int = 0, maximum: int = ...
    ) -> int | None: ...
    def integer(
        self, name: str, *, default: int | None, minimum: int = 0, maximum: int = MAX_INTEGER
    ) -> int | None:
        """A whole number from ``minimum`` to ``maximum`` written in ASCII digits; ``default``
        when absent (and when invalid, with the error recorded)."""
        value = self.text(name)
        if value is None:
            return default
        if 0 < len(value) <= MAX_DIGITS and value.isascii() and value.isdigit():
            number = int(value)
            if minimum <= number <= maximum:
                return number
        self.add_error(
            name,
            f"{name} must be a whole number from {minimum} to {maximum} in digits 0-9,"
            f" not {_quoted(value)}.",
        )
        return default

    def time(self, name: str) -> datetime | None:
        """A time in ``TIME_PATTERN``, UTC when it has no zone; None when absent or invalid."""
        value = self.text(name)
        if value is None:
            return None
        if _TIME.fullmatch(value) is not None:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError as exc:  # month 13, 24:00, an offset of 24 hours or more
                self.add_error(name, f"{name} {_quoted(value)} is not a real time: {exc}.")
                return None
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        self.add_error(name, f"{name} must be {TIME_RULE}, not {_quoted(value)}.")
        return None

    def raise_if_invalid(self, message: str = "The query parameters are not valid.") -> None:
        """ApiError 400 ``invalid_query`` listing every error found so far."""
        if self.errors:
            raise invalid_query(message, self.errors)


@overload
def query_int(
    query: MultiMapping[str], name: str, *, default: int, minimum: int = 0, maximum: int = ...
) -> int: ...
@overload
def query_int(
    query: MultiMapping[str], name: str, *, default: None, minimum: int = 0, maximum: int = ...
) -> int | None: ...
def query_int(
    query: MultiMapping[str],
    name: str,
    *,
    default: int | None,
    minimum: int = 0,
    maximum: int = MAX_INTEGER,
) -> int | None:
    """One integer parameter (see ``QueryReader.integer``); ApiError 400 ``invalid_query`` when
    it is not valid."""
    reader = QueryReader(query)
    number = reader.integer(name, default=default, minimum=minimum, maximum=maximum)
    reader.raise_if_invalid()
    return number


def integer_schema(
    minimum: int, maximum: int = MAX_INTEGER, default: int | None = None
) -> dict[str, object]:
    """The OpenAPI schema of an integer parameter read with these bounds."""
    schema: dict[str, object] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return schema


TIME_SCHEMA: Final[dict[str, object]] = {"type": "string", "pattern": TIME_PATTERN}
"""The OpenAPI schema of a time parameter read by ``QueryReader.time``."""
