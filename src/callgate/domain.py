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
from typing import TYPE_CHECKING, Final, Protocol

from callgate.policy import PolicyDocument

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


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A change feed event: client ``client_id``'s current policy became ``version``.

    It names the change and carries no document: a subscriber re-reads the client's current
    policy (which may be newer still), so the same event can come from another instance over a
    channel that carries a few bytes (PostgreSQL ``NOTIFY``)."""

    client_id: str
    version: int


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
