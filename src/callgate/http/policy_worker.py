"""Turning a PUT body into a validated document: the CPU-heavy half of a policy write.

For the largest document policy.md allows (about 2 MiB of JSON) decoding, validating and encoding
take tens of milliseconds of CPU in C and Rust code that holds the GIL throughout, so neither the
event loop nor a thread may run it without stalling every other client's FastAGI sessions
(``bench/put_offload_bench.py`` measures this; ``docs/performance.md``). ``prepare`` therefore runs
in a worker process for large bodies and returns what is cheap to rebuild on the loop's side: the
canonical JSON text (a string, unpickled as one copy) and the document's validated fields in pickled
chunks that ``rebuild`` turns back into a ``PolicyDocument`` without validating again, yielding to
the loop between chunks.

Everything here is importable without aiohttp's application or the store being set up, since a
worker process imports this module on its own; errors cross the process boundary as ``Rejected``
values, because ``ApiError`` does not pickle.
"""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass
from typing import Any

from callgate.domain import canonical_json
from callgate.http.body import parse_json
from callgate.http.errors import ApiError, JsonDetail, unprocessable
from callgate.policy import PolicyDocument, PolicyValidationError, parse_document

WRAPPER_KEY = "call_control_groups"

CHUNK = 2000
"""Grant keys per pickled chunk: each unpickles in well under a millisecond."""


def _not_object(loc: list[str | int], value: object) -> ApiError:
    kind = type(value).__name__ if value is not None else "null"
    return unprocessable(
        "not_an_object",
        "The policy document must be a JSON object.",
        [{"loc": loc, "message": f"expected a JSON object, got {kind}"}],
    )


def document_from_body(data: object) -> PolicyDocument:
    """Accept the document itself, ``{"call_control_groups": <doc>}`` or its string form."""
    if not isinstance(data, dict):
        raise _not_object([], data)
    if data.keys() == {WRAPPER_KEY}:
        inner = data[WRAPPER_KEY]
        if isinstance(inner, str):
            inner = parse_json(inner, f"{WRAPPER_KEY} string", at=(WRAPPER_KEY,))
        if not isinstance(inner, dict):
            raise _not_object([WRAPPER_KEY], inner)
        data = inner
    try:
        return parse_document(data)
    except PolicyValidationError as exc:
        details: list[JsonDetail] = [dict(issue.to_json()) for issue in exc.errors]
        raise unprocessable(
            "invalid_policy",
            f"The policy document breaks {len(details)} rule(s) of policy.md; nothing was stored.",
            details,
        ) from None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A valid document, as its canonical JSON and as pickled chunks of its fields."""

    canonical: str
    head: bytes
    """pickled (allow_all, pickup_all, groups, pickup_share_groups, phone_replace_groups,
    fields_set)"""
    grants: tuple[bytes, ...]
    """pickled lists of (eavesdrop_/whisper_ key, groups), in document order"""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The ``ApiError`` a body earned, in a form that crosses a process boundary."""

    status: int
    code: str
    message: str
    details: tuple[JsonDetail, ...]

    def error(self) -> ApiError:
        return ApiError(self.status, self.code, self.message, self.details)


def prepare(raw: bytes) -> Prepared | Rejected:
    """Decode, validate and encode a PUT body (runs in a worker process, or inline if small)."""
    try:
        document = document_from_body(parse_json(raw, "request body"))
    except ApiError as exc:
        return Rejected(exc.status, exc.code, exc.message, exc.details)
    return split(document)


def split(document: PolicyDocument) -> Prepared:
    head = (
        document.allow_all,
        document.pickup_all,
        dict(document.groups),
        document.pickup_share_groups,
        document.phone_replace_groups,
        frozenset(document.model_fields_set),
    )
    grants = list((document.model_extra or {}).items())
    return Prepared(
        canonical=canonical_json(document),
        head=pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL),
        grants=tuple(
            pickle.dumps(grants[at : at + CHUNK], protocol=pickle.HIGHEST_PROTOCOL)
            for at in range(0, len(grants), CHUNK)
        ),
    )


async def rebuild(prepared: Prepared) -> PolicyDocument:
    """The ``PolicyDocument`` that ``prepare`` validated, without validating it again.

    Only ever fed by this process's own workers: ``model_construct`` trusts its input.
    """
    allow_all, pickup_all, groups, share, replace, fields_set = pickle.loads(prepared.head)  # noqa: S301 (our own worker's output)
    extra: dict[str, Any] = {}
    for chunk in prepared.grants:
        await asyncio.sleep(0)  # let the loop serve others between chunks
        extra.update(pickle.loads(chunk))  # noqa: S301 (our own worker's output)
    await asyncio.sleep(0)
    return PolicyDocument.model_construct(
        _fields_set=set(fields_set),
        allow_all=allow_all,
        pickup_all=pickup_all,
        groups=groups,
        pickup_share_groups=share,
        phone_replace_groups=replace,
        **extra,
    )
