"""Reading a JSON request body: never a 500, and nothing ambiguous gets through.

- A body that does not say it is JSON (``Content-Type`` ``application/json`` or
  ``application/<anything>+json``, UTF-8 if a charset is given) is a 415, before it is read:
  a missing ``Content-Type`` is refused too (``curl -d`` without ``-H`` sends a form type), and
  a browser cannot send such a body across origins without a CORS preflight.
- Malformed JSON is a 400.
- A key given twice in one object is a 422 ``duplicate_key`` locating each: readers disagree on
  which one counts (Python's ``json`` keeps the last), and a security policy must mean one thing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from aiohttp import web
from aiohttp.helpers import parse_mimetype

from callgate.http.errors import ApiError, JsonDetail, bad_request, unprocessable
from callgate.policy.errors import Location, format_location

JSON_MEDIA_TYPES = "application/json or application/<type>+json"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _RepeatedKeys(dict[str, object]):
    """A decoded object that had some keys more than once; ``repeated`` names them in order."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        repeated: dict[str, None] = {}
        for key, _ in pairs:
            if key in seen:
                repeated[key] = None
            seen.add(key)
        self.repeated = tuple(repeated)


def _loads(raw: bytes | str) -> tuple[object, bool]:
    """The decoded value, and whether some object in it had a repeated key."""
    found = False

    def build(pairs: list[tuple[str, object]]) -> dict[str, object]:
        nonlocal found
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj  # the usual case: one C call and a length check, nothing more
        found = True
        return _RepeatedKeys(pairs)

    value = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=build)
    return value, found


def _repeated_keys(value: object, at: Location) -> Iterator[Location]:
    """Where each repeated key is, in document order (iterative: nesting is only bounded by the
    decoder's recursion limit)."""
    stack: list[tuple[Location, object]] = [(at, value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _RepeatedKeys):
            yield from ((*path, key) for key in node.repeated)
        if isinstance(node, dict):
            children: Sequence[tuple[str | int, object]] = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            continue
        stack.extend(((*path, k), v) for k, v in reversed(children))


def _duplicate_key_error(locations: list[Location], what: str) -> ApiError:
    details: list[JsonDetail] = [
        {"loc": list(loc), "message": f"Key {loc[-1]!r} is given more than once in {_where(loc)}."}
        for loc in locations
        if loc
    ]
    keys = ", ".join(repr(loc[-1]) for loc in locations[:3] if loc) or "a key"
    return unprocessable(
        "duplicate_key",
        f"The {what} repeats {keys}: which one counts would be a guess, so nothing was done;"
        " give each key once.",
        details or [{"loc": [], "message": "A key is given more than once."}],
    )


def _where(loc: Location) -> str:
    return format_location(loc[:-1]) if len(loc) > 1 else "the top-level object"


def parse_json(raw: bytes | str, what: str, *, at: Location = ()) -> object:
    """Decode JSON: ApiError 400 naming ``what`` when malformed, 422 ``duplicate_key`` when an
    object repeats a key. ``at`` is where ``raw`` sits in the request (a JSON string inside the
    body), so that the duplicates' locations are those of the whole request."""
    try:
        value, repeated = _loads(raw)
    except RecursionError:
        raise bad_request(f"The {what} is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The {what} is not valid JSON: {exc}") from None
    if repeated:
        raise _duplicate_key_error(list(_repeated_keys(value, at)), what)
    return value


def is_json_media_type(header: str | None) -> bool:
    """True for ``application/json`` or ``application/<type>+json``, with parameters, whose
    charset (if any) is UTF-8: JSON exchanged between systems is UTF-8 (RFC 8259)."""
    if header is None:
        return False
    mime = parse_mimetype(header)
    if mime.type != "application":
        return False
    if not (
        (mime.subtype == "json" and not mime.suffix) or (mime.subtype and mime.suffix == "json")
    ):
        return False
    charset = mime.parameters.get("charset")
    return charset is None or charset.lower() in ("utf-8", "utf8")


def unsupported_media_type(header: str | None) -> ApiError:
    sent = "no Content-Type" if header is None else f"Content-Type {header[:100]!r}"
    return ApiError(
        415,
        "unsupported_media_type",
        f"The request body must be JSON, sent with Content-Type: application/json; it came with"
        f" {sent}.",
        [{"loc": ["header", "Content-Type"], "message": f"expected {JSON_MEDIA_TYPES}"}],
    )


async def read_json(request: web.Request) -> object:
    """The request body as JSON; 415 unless it says it is JSON (checked before reading), and
    aiohttp answers 413 past the 2 MiB limit."""
    header = request.headers.get("Content-Type")
    if not is_json_media_type(header):
        raise unsupported_media_type(header)
    return parse_json(await request.read(), "request body")
