"""The values the application core and the store ports exchange, and the store's errors.

Nothing here does I/O or knows a backend: the store implementations (``callgate.store``) import
these types, never the reverse, and so do the entry points (HTTP, FastAGI, Manager) that read what
the store returns. The contracts that produce and consume them are the Protocols of
``callgate.ports``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol

from callgate.policy import PolicyDocument
from callgate.policy.grants import Grant, parse_grant
from callgate.policy.settings import CallControlSettings, parse_settings

if TYPE_CHECKING:
    from callgate.config import Settings

DEFAULT_PBX: Final = "default"
"""The one Asterisk server callgate talks to today; every record that lives on a PBX says which."""

# ---------------------------------------------------------------------------------- errors


class StoreError(Exception):
    """The store could not do what was asked (unavailable, corrupt, closed, newer schema)."""


class StoreUnavailableError(StoreError):
    """The backend cannot be reached (PostgreSQL down, or no pool connection in time): nothing
    was written, and the same request may succeed later (HTTP 503)."""


class VersionConflictError(StoreError):
    """The write expected another current version (HTTP 412); nothing was written."""

    def __init__(self, client_id: str, current: int) -> None:
        super().__init__(f"client {client_id!r} is at version {current}")
        self.client_id = client_id
        self.current = current


class TokenExistsError(StoreError):
    """A token with that name already exists (HTTP 409)."""


# -------------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    client_id: str
    version: int
    document: PolicyDocument
    changed_at: datetime
    changed_by: str


@dataclass(frozen=True, slots=True)
class StoredJson:
    """A stored version with its document as the stored JSON text (not decoded)."""

    version: int
    changed_at: str
    """RFC 3339, as stored"""
    changed_by: str
    document_json: str


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: tuple[StoredJson, ...]
    """newest first"""
    next_before: int | None
    """the ``before`` of the next page; None when no older version remains"""


@dataclass(frozen=True, slots=True)
class Retention:
    """How many versions a client keeps: the newest ``keep``, none older than ``max_age``."""

    keep: int = 100
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError("retention must keep at least the current version")


class RetentionSettings(Protocol):
    @property
    def policy_history_keep(self) -> int: ...
    @property
    def policy_history_max_age_days(self) -> float: ...


def retention(settings: RetentionSettings) -> Retention:
    """The retention the settings ask for (``policy_history_keep``, ``..._max_age_days``)."""
    days = settings.policy_history_max_age_days
    return Retention(settings.policy_history_keep, timedelta(days=days) if days else None)


def canonical_json(document: PolicyDocument) -> str:
    """The stored (and answered) text of a document: compact, ASCII, ``to_json`` order."""
    return json.dumps(document.to_json(), separators=(",", ":"))


class ChangeKind(StrEnum):
    """What a change feed event is about; each kind has its own version numbers per client."""

    POLICY = "policy"
    """the client's policy document (``PolicyStore``)"""
    SUPERVISION = "supervision"
    """the client's settings and grants beside the document (``SupervisionStore``)"""


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A change feed event: client ``client_id``'s current policy (or, with ``kind``
    ``SUPERVISION``, its settings and grants) became ``version``.

    It names the change and carries no document: a subscriber re-reads the client's current
    state of that kind (which may be newer still), so the same event can come from another
    instance over a channel that carries a few bytes (PostgreSQL ``NOTIFY``). Versions increase
    per client and kind: a policy version and a supervision version are never compared."""

    client_id: str
    version: int
    kind: ChangeKind = ChangeKind.POLICY


# ----------------------------------------------------------------------------- supervision


class SupervisionEdit(StrEnum):
    """What one supervision version changed (the history's ``change``)."""

    SETTINGS = "settings"
    GRANT_ADDED = "grant_added"
    GRANT_ENDED = "grant_ended"


class GrantState(StrEnum):
    """Where a grant stands at some instant (``GrantRecord.state``)."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """A grant as the store keeps it: the grant, when it was made, and, when it was ended early
    (``DELETE``), when and by whom. A grant is never edited: ending it early keeps its ``until``
    as asked, so the record says both what was granted and what was taken back."""

    grant: Grant
    created_at: datetime
    ended_at: datetime | None = None
    ended_by: str | None = None

    @property
    def id(self) -> str:
        return self.grant.id

    @property
    def ends_at(self) -> datetime:
        """The first instant it no longer holds: ``until``, or the early end if sooner."""
        until = self.grant.until
        return until if self.ended_at is None or until <= self.ended_at else self.ended_at

    def in_force(self, now: datetime) -> bool:
        """Active or still to come at ``now`` (what the per-client limit counts)."""
        return self.ended_at is None and self.grant.until > now

    def state(self, now: datetime) -> GrantState:
        if self.ended_at is not None or self.grant.until <= now:
            return GrantState.ENDED
        return GrantState.ACTIVE if self.grant.from_ <= now else GrantState.SCHEDULED

    def to_json(self) -> dict[str, object]:
        return {
            **self.grant.to_json(),
            "created_at": self.created_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "ended_by": self.ended_by,
        }


@dataclass(frozen=True, slots=True)
class StoredSupervision:
    """One version of a client's settings and grants (``SupervisionStore``).

    ``version`` counts every change of either (1, 2, ...; 0 is never stored); ``settings_version``
    is the version that last wrote the settings (0 while they are the default), the ``ETag`` of
    ``call_control_settings``, so a grant added meanwhile does not fail a settings ``If-Match``.
    """

    client_id: str
    version: int
    settings: CallControlSettings
    settings_version: int
    grants: tuple[GrantRecord, ...]
    """every grant not yet pruned: in force, to come, and ended within the kept period"""
    changed_at: datetime
    changed_by: str
    change: SupervisionEdit
    grant_id: str | None = None
    """the grant added or ended by this version"""

    def live_grants(self) -> tuple[Grant, ...]:
        return live_grants(self.grants)

    def grant(self, grant_id: str) -> GrantRecord | None:
        return next((record for record in self.grants if record.id == grant_id), None)


def live_grants(records: tuple[GrantRecord, ...]) -> tuple[Grant, ...]:
    """The grants a decision may look at (those ended early never allow anything)."""
    return tuple(record.grant for record in records if record.ended_at is None)


@dataclass(frozen=True, slots=True)
class SupervisionPage:
    versions: tuple[StoredSupervision, ...]
    """newest first"""
    next_before: int | None


def settings_json(settings: CallControlSettings) -> str:
    """The stored text of the settings: compact, every field explicit."""
    return json.dumps(settings.to_json(), separators=(",", ":"))


def grants_json(grants: tuple[GrantRecord, ...]) -> str:
    """The stored text of a grant set: a JSON array of ``GrantRecord.to_json``."""
    return json.dumps([record.to_json() for record in grants], separators=(",", ":"))


def decode_settings(text: str) -> CallControlSettings:
    """Raises ``ValueError`` (``PolicyValidationError`` included) for text that is damaged."""
    return parse_settings(text)


def decode_grants(text: str) -> tuple[GrantRecord, ...]:
    """Raises ``ValueError`` for text that is damaged (only validated grants are written)."""
    records = []
    try:
        for item in json.loads(text):
            fields = dict(item)
            created_at = fields.pop("created_at")
            ended_at = fields.pop("ended_at", None)
            ended_by = fields.pop("ended_by", None)
            records.append(
                GrantRecord(
                    grant=parse_grant(fields),
                    created_at=datetime.fromisoformat(created_at),
                    ended_at=None if ended_at is None else datetime.fromisoformat(ended_at),
                    ended_by=None if ended_by is None else str(ended_by),
                )
            )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a stored grant is incomplete: {exc}") from exc
    return tuple(records)


# ---------------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    client_id: str
    created_at: datetime


# --------------------------------------------------------------------------------- replace

AstDbKey = tuple[str, str]
"""(family, key) of an AstDB entry."""


@dataclass(frozen=True, slots=True)
class Replacement:
    """Phone ``phone`` (its own extension) acts as ``to_ext``; ``from_ext`` asked for it.

    ``pbx``: the Asterisk server whose AstDB routes it (one phone has one replacement per client,
    whichever PBX it is registered on)."""

    client_id: str
    phone: str
    from_ext: str
    to_ext: str
    since: datetime
    pbx: str = DEFAULT_PBX


@dataclass(frozen=True, slots=True)
class Attempt:
    """A PIN attempt counted in advance; ``forget_attempt`` takes it back when the PIN was right
    (or when the attempt may not go ahead)."""

    id: int


@dataclass(frozen=True, slots=True)
class FailureTimes:
    """The counted PIN attempts within a horizon, for one target and for one phone."""

    target: tuple[datetime, ...]
    phone: tuple[datetime, ...]


@dataclass(frozen=True, slots=True)
class Reservation:
    """A counted attempt, and the attempts counted before it (not itself) for its target and its
    phone: what the lockout rule judges it by."""

    attempt: Attempt
    before: FailureTimes


@dataclass(frozen=True, slots=True)
class Takeover:
    """What ``start_replacement`` displaced: the phone's previous replacement, and the
    replacements of other phones that answered for the same extension until now."""

    previous: Replacement | None
    displaced: tuple[Replacement, ...]


@dataclass(frozen=True, slots=True)
class PendingDeletion:
    """An AstDB key of client ``client_id`` that must go from PBX ``pbx`` once it is reachable."""

    pbx: str
    client_id: str
    key: AstDbKey


# ----------------------------------------------------------------------------------- audit


@dataclass(frozen=True, slots=True)
class AuditRetention:
    """How much of the audit log is kept; ``None``: no bound of that kind."""

    max_age: timedelta | None = None
    max_rows: int | None = None
    interval: float = 60.0
    """Seconds between two prunings."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditRetention:
        """``audit_max_age_days``, ``audit_max_rows`` (0: no bound), ``audit_prune_interval``."""
        days, rows = settings.audit_max_age_days, settings.audit_max_rows
        return cls(
            max_age=timedelta(days=days) if days else None,
            max_rows=rows or None,
            interval=settings.audit_prune_interval,
        )
