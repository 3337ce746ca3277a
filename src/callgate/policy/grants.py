"""Grants that expire (``policy.md``, "Beside the document"): an extra right, for a while.

The body of ``POST /client/{client_id}/grants`` (``GrantRequest``)::

    {
      "ext": "200",
      "action": "eavesdrop",
      "groups": ["support"],
      "extensions": ["105"],
      "from": "2026-05-01T08:00:00Z",
      "until": "2026-05-01T17:00:00+02:00",
      "note": "coaching the new support staff, ticket HR-123"
    }

and each entry of ``GET /client/{client_id}/grants`` (``Grant``): the same fields, plus ``id``
(assigned by the store) and ``created_by`` (who asked for it: the token's name, set by the server,
never taken from the body).

- ``ext``: the extension that gets the right.
- ``action``: ``eavesdrop`` (listen), ``whisper`` (which includes listening, as in the document) or
  ``pickup`` (directed pickup only: group pickup is not a right over named extensions). Never
  ``replace``: taking over a phone's identity is the document's and the PIN's alone.
- the reach, at least one of: ``groups`` (names of groups in the client's document: their members
  when the decision is made, so a grant follows the document's changes; a group since removed
  reaches nobody) and ``extensions``; each listed once, ``ext`` itself not among ``extensions``.
- ``from``/``until``: RFC 3339 date-times with an offset; the grant is active for
  ``from <= now < until``, so ``until`` is the first instant it no longer holds; ``until > from``.
- ``note``: why (required: a temporary right nobody can explain is what an audit flags), 1 to
  ``MAX_NOTE`` characters, no control characters, not only blanks.

``parse_grant_request`` checks a body alone; ``check_grant`` what needs the client's state (its
document, its other grants, the time, the limits from the service's settings).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from callgate.policy.document import Extension, GroupName, PolicyDocument
from callgate.policy.errors import PolicyIssue, PolicyValidationError
from callgate.policy.issues import parse_model
from callgate.policy.settings import duplicates, located_error
from callgate.policy.syntax import (
    EXTENSION_PATTERN,
    EXTENSION_RULE,
    GROUP_NAME_PATTERN,
    GROUP_NAME_RULE,
    MAX_GROUP_LIST,
    MAX_GROUP_SIZE,
)

MAX_NOTE: Final = 500
NOTE_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
NOTE_RULE: Final = f"1 to {MAX_NOTE} characters, no control characters, not only blanks"
GRANT_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
GRANT_ID_RULE: Final = "1 to 64 characters of A-Z a-z 0-9 _ -"
CREATED_BY_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]{1,128}$"
CREATED_BY_RULE: Final = "1 to 128 characters, no control characters"
RFC3339: Final = "rfc3339"
"""The pydantic error type of a date-time that is not RFC 3339 with an offset."""
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class GrantAction(StrEnum):
    EAVESDROP = "eavesdrop"
    WHISPER = "whisper"
    PICKUP = "pickup"


def _rfc3339_text(value: object) -> object:
    """Only RFC 3339 text (or a ``datetime`` from Python): no Unix numbers, no bare dates."""
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise PydanticCustomError(RFC3339, "not an RFC 3339 date-time with an offset")


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
Note = Annotated[str, StringConstraints(strict=True, max_length=MAX_NOTE, pattern=NOTE_PATTERN)]
GrantId = Annotated[str, StringConstraints(strict=True, pattern=GRANT_ID_PATTERN)]
CreatedBy = Annotated[str, StringConstraints(strict=True, pattern=CREATED_BY_PATTERN)]


class GrantRequest(BaseModel):
    """A grant as asked for (the ``POST`` body): everything but its id and its author."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    ext: Extension
    action: GrantAction
    groups: Annotated[tuple[GroupName, ...], Field(max_length=MAX_GROUP_LIST)] = ()
    extensions: Annotated[tuple[Extension, ...], Field(max_length=MAX_GROUP_SIZE)] = ()
    from_: Rfc3339 = Field(alias="from")
    until: Rfc3339
    note: Note

    def active(self, now: datetime) -> bool:
        return self.from_ <= now < self.until

    @model_validator(mode="after")
    def _check_across_fields(self) -> Self:
        errors = duplicates(self.groups, ("groups",)) + duplicates(self.extensions, ("extensions",))
        if not self.groups and not self.extensions:
            message = "A grant reaches someone: give groups, extensions or both."
            errors.append(located_error("empty_reach", ("groups",), self.groups, message))
        if self.ext in self.extensions:
            at = self.extensions.index(self.ext)
            message = (
                f"extensions[{at}] is the grant's own ext {self.ext!r}: nobody is their own target."
            )
            errors.append(located_error("self_target", ("extensions", at), self.ext, message))
        if self.until <= self.from_:
            message = (
                f"until ({self.until.isoformat()}) must be later than from"
                f" ({self.from_.isoformat()})."
            )
            errors.append(located_error("until_not_after_from", ("until",), self.until, message))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def to_grant(self, *, grant_id: str, created_by: str) -> Grant:
        """The grant as stored: this request with the id the store gave it and who asked."""
        fields = self.model_dump(by_alias=True)
        return Grant.model_validate({**fields, "id": grant_id, "created_by": created_by})

    def to_json(self) -> dict[str, object]:
        return {
            "ext": self.ext,
            "action": str(self.action),
            "groups": list(self.groups),
            "extensions": list(self.extensions),
            "from": self.from_.isoformat(),
            "until": self.until.isoformat(),
            "note": self.note,
        }


class Grant(GrantRequest):
    """A stored grant (an entry of ``GET /client/{client_id}/grants``)."""

    id: GrantId
    created_by: CreatedBy

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, **super().to_json(), "created_by": self.created_by}


GRANT_RULES: Final = {
    EXTENSION_PATTERN: EXTENSION_RULE,
    GROUP_NAME_PATTERN: GROUP_NAME_RULE,
    NOTE_PATTERN: NOTE_RULE,
    GRANT_ID_PATTERN: GRANT_ID_RULE,
    CREATED_BY_PATTERN: CREATED_BY_RULE,
}


def parse_grant_request(data: object) -> GrantRequest:
    """Validate a ``POST`` body: JSON text or a decoded value.

    Raises ``PolicyValidationError`` listing every problem, each located (``["from"]``,
    ``["extensions", 2]``); ``malformed_json`` for text that is not JSON.
    """
    return parse_model(GrantRequest, data, subject="grant", rules=GRANT_RULES)


def parse_grant(data: object) -> Grant:
    """Validate a stored grant (with ``id`` and ``created_by``): for the store and ``check``."""
    return parse_model(Grant, data, subject="grant", rules=GRANT_RULES)


def check_grant(
    request: GrantRequest,
    *,
    document: PolicyDocument,
    existing: Iterable[GrantRequest],
    now: datetime,
    max_grants: int,
    max_duration: timedelta,
) -> None:
    """What a valid body must also meet to be stored, given the client's state at ``now``.

    - every group named exists in the client's ``document`` (``["groups", i]``);
    - ``until`` is later than ``now`` (``["until"]``): a grant already over would only clutter
      the list and the audit;
    - ``until - from`` at most ``max_duration`` (``["until"]``);
    - fewer than ``max_grants`` of the client's ``existing`` grants are active or to come
      (``until > now``): ended ones are history and do not count (``[]``).

    Raises ``PolicyValidationError`` listing every problem.
    """
    issues = [
        PolicyIssue(
            ("groups", at), f"Group {name!r} does not exist in the client's policy document."
        )
        for at, name in enumerate(request.groups)
        if name not in document.groups
    ]
    if request.until <= now:
        issues.append(
            PolicyIssue(("until",), f"until ({request.until.isoformat()}) is already past.")
        )
    if request.until - request.from_ > max_duration:
        issues.append(
            PolicyIssue(
                ("until",),
                f"The grant lasts {request.until - request.from_}; at most {max_duration} is"
                " allowed (from to until).",
            )
        )
    in_force = sum(1 for grant in existing if grant.until > now)
    if in_force >= max_grants:
        issues.append(
            PolicyIssue(
                (),
                f"The client has {in_force} grants active or to come; at most {max_grants} are"
                " allowed. End one first (DELETE), or wait for one to expire.",
            )
        )
    if issues:
        raise PolicyValidationError(tuple(issues), subject="grant")
