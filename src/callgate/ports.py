"""The ports of the application core: what it needs from a store and from a change feed.

Each Protocol states its contract; every backend meets it, and ``tests/store/`` runs one contract
suite against each backend (SQLite today). A contract never relies on a backend's global writer
lock: each one names the means it rests on, chosen so that PostgreSQL at its default isolation
(READ COMMITTED) can use the same one. The values exchanged are the frozen types of
``callgate.domain``; the errors are ``StoreError`` and its subclasses from there.

Common to every store port:

- A write is durable before it returns (the SQLite backend: one transaction, ``synchronous=FULL``
  in WAL mode), or it raises and has changed nothing.
- A read sees every write that returned before it started.
- Any failure of the backend is a ``StoreError`` (a subclass says more); no backend exception
  (``sqlite3.Error``, ...) escapes a port.
- Times are aware UTC ``datetime``s; a naive one is refused with ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol

from callgate.audit import AuditEvent
from callgate.domain import (
    AstDbKey,
    Attempt,
    AuditRetention,
    FailureTimes,
    GrantRecord,
    HistoryPage,
    PendingDeletion,
    PolicyChange,
    Replacement,
    Reservation,
    Retention,
    StoredJson,
    StoredPolicy,
    StoredSupervision,
    SupervisionEdit,
    SupervisionPage,
    Takeover,
    TokenInfo,
)
from callgate.policy import PolicyDocument
from callgate.policy.settings import CallControlSettings

__all__ = [
    "AuditStore",
    "ChangeFeed",
    "ChangeHandler",
    "PolicyStore",
    "ReplaceStore",
    "Storage",
    "SupervisionStore",
    "TokenStore",
    "Unsubscribe",
]


class PolicyStore(Protocol):
    """Every kept version of every client's policy document.

    Contract:

    - Versions per client start at 1 and are strictly increasing and unique: two saves never get
      the same version, whatever their concurrency (means: a unique key on ``(client_id,
      version)``; a save inserts the next version and a conflict on that key means another save
      took it — it is never ``MAX(version) + 1`` trusted under a lock).
    - ``save(..., if_version=V)`` succeeds only if the current version (0: none) is in ``V`` at
      the moment of the write; otherwise it raises ``VersionConflictError`` carrying the current
      version and changes nothing. Of N concurrent saves with the same ``if_version``, exactly
      one succeeds. ``if_version=None`` always succeeds (it retries past concurrent saves).
    - A successful save is published on the store's ``ChangeFeed`` after its commit, as
      ``PolicyChange(client_id, version)``.
    - Retention: each save applies ``retention`` to its client (the newest ``keep`` versions,
      none older than ``max_age``); the version just written and the current version are never
      pruned, so version numbers keep counting up after a prune.
    - Documents read back equal the documents saved; the JSON text of ``current_json`` and of
      history pages is ``canonical_json(document)``.
    """

    retention: Retention
    """Applied by every save; the composition root sets it from the settings."""

    async def current(self, client_id: str) -> StoredPolicy | None:
        """The newest version, or None when nothing was ever stored for ``client_id``."""
        ...

    async def all_current(self) -> list[StoredPolicy]:
        """The newest version of every client that has one, by client id."""
        ...

    async def current_json(self, client_id: str) -> StoredJson | None:
        """The newest version with its document as stored text (no decoding)."""
        ...

    async def all_current_json(self) -> list[tuple[str, StoredJson]]:
        """``(client_id, current_json(client_id))`` of every client that has one, by client id:
        start-up reads these, and decodes each document only when it is first used."""
        ...

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None = None, max_bytes: int
    ) -> HistoryPage:
        """Up to ``limit`` versions below ``before`` (all when None), newest first; the page
        stops before its documents pass ``max_bytes`` of JSON text but always holds one version
        when one remains. ``next_before`` is the oldest version of the page when an older one
        remains, else None."""
        ...

    async def history(self, client_id: str) -> list[StoredPolicy]:
        """Every kept version, newest first."""
        ...

    async def save(
        self,
        client_id: str,
        document: PolicyDocument,
        changed_by: str,
        *,
        if_version: Collection[int] | None = None,
        encoded: str | None = None,
    ) -> StoredPolicy:
        """Store ``document`` as the client's next version (see the class contract).

        ``encoded``: ``canonical_json(document)`` when the caller already made it."""
        ...


class SupervisionStore(Protocol):
    """Every kept version of every client's settings and grants beside its policy document.

    Design: one record per client, versioned like the policy but on its own: a version is the
    whole state (the settings and the client's grant set) after one change (``PUT`` of the
    settings, a grant added, a grant ended early), so the history shows every state the client
    was in, who made it and what changed. It is apart from the policy's versions, so the
    reference ``call_control_group`` API, its ``ETag`` and its history stay exactly as they
    were: a grant never moves the policy's version.

    Contract:

    - Versions per client start at 1, strictly increasing and unique (means: a unique key on
      ``(client_id, version)``, as for policies).
    - ``save(..., if_version=V)`` is a compare-and-set: it succeeds only if the client's current
      version (0: none) is exactly ``V`` at the moment of the write, and writes ``V + 1``;
      otherwise ``VersionConflictError`` carrying the current version, nothing written. Of N
      concurrent saves with the same ``V`` exactly one succeeds. Callers read, compute the next
      state, and save with the version they read (the grant limit is then judged on the state
      the write replaces). Means: the current version is read in the writing transaction and
      the insert of ``V + 1`` fails on the key if another save took it.
    - ``settings_version`` of a saved version is its own version when ``change`` is
      ``SETTINGS``, else the previous version's (0 for the first version).
    - A successful save is published on the store's ``ChangeFeed`` after its commit, as
      ``PolicyChange(client_id, version, ChangeKind.SUPERVISION)``.
    - Retention: each save applies ``retention`` to its client (the newest ``keep`` versions,
      none older than ``max_age``); the version just written is never pruned.
    - What is read back equals what was saved (settings, grant records, attribution).
    """

    retention: Retention
    """Applied by every save; the composition root sets it from the settings."""

    async def current(self, client_id: str) -> StoredSupervision | None:
        """The newest version, or None when nothing was ever stored for ``client_id``."""
        ...

    async def all_current(self) -> list[StoredSupervision]:
        """The newest version of every client that has one, by client id."""
        ...

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None = None
    ) -> SupervisionPage:
        """Up to ``limit`` versions below ``before`` (all when None), newest first;
        ``next_before`` is the oldest version of the page when an older one remains."""
        ...

    async def save(
        self,
        client_id: str,
        *,
        settings: CallControlSettings,
        grants: tuple[GrantRecord, ...],
        changed_by: str,
        change: SupervisionEdit,
        grant_id: str | None = None,
        if_version: int,
    ) -> StoredSupervision:
        """Store the client's next version (see the class contract)."""
        ...


class TokenStore(Protocol):
    """Client-scoped API tokens, kept as SHA-256 digests only.

    Contract: names are unique (means: a unique key on the name) — creating a name that exists
    raises ``TokenExistsError`` and changes nothing; a name ``is_valid_token_name`` refuses
    raises ``ValueError`` before anything is written; ``find`` answers only for the exact token
    value of a stored, undeleted token; after ``delete`` returns, ``find`` no longer finds it.
    """

    async def create(self, name: str, client_id: str) -> tuple[TokenInfo, str]:
        """A new random token for ``client_id``: its record and the token itself (shown once)."""
        ...

    async def find(self, token: str) -> TokenInfo | None: ...

    async def list(self) -> list[TokenInfo]:
        """Every token's record, by name."""
        ...

    async def delete(self, name: str) -> bool:
        """Revoke the token; False when there was none by that name."""
        ...


class ReplaceStore(Protocol):
    """Replace PINs (hashes), counted PIN attempts, replacements in force, and AstDB deletions
    owed to a PBX. The store only persists: the lockout rule (``replace.lockout``) judges the
    failure times it returns.

    Contract:

    - ``reserve_attempt`` is linearizable per ``(client_id, target)`` and per ``(client_id,
      phone)``: reservations for the same target or the same phone take effect one after the
      other, and each one's ``Reservation.before`` holds exactly the attempts counted (and not
      forgotten) before it. So when the rule allows K failures, of N concurrent reservations
      against K-1 earlier ones at most one sees fewer than K; of N against none, exactly K see
      fewer than K. Means: each reservation first writes a lock row for its target and then one
      for its phone (always in that order, so two reservations cannot deadlock) and reads the
      failures after taking both; in SQLite the writes serialise, in PostgreSQL the same row
      upserts are row locks held to the commit (``SELECT ... FOR UPDATE`` semantics), and at
      READ COMMITTED each later statement sees what the earlier holder committed.
    - An attempt stays counted until ``forget_attempt`` (a crash in between counts it as a
      failure); attempts older than the ``since`` of a reservation may be deleted by it.
    - One phone has at most one replacement per client, and one extension is answered by at most
      one phone (means: a unique key on ``(client_id, phone)`` and the displacement of any other
      holder of ``to_ext`` in the same transaction as the insert).
    - ``end_replacement(..., only=r)`` ends the replacement only if it is still exactly ``r``.
    - Pending AstDB deletions are a set per ``(pbx, client_id, family, key)``: adding one twice
      keeps one; ``start_replacement`` removes those of the keys it is about to write, on the
      replacement's PBX, in the same transaction.
    """

    async def set_pin(self, client_id: str, ext: str, pin_hash: str, now: datetime) -> None:
        """Set or replace ``ext``'s PIN hash."""
        ...

    async def delete_pin(self, client_id: str, ext: str) -> bool:
        """False when ``ext`` had no PIN."""
        ...

    async def pin_hash(self, client_id: str, ext: str) -> str | None: ...

    async def failure_times(
        self, client_id: str, target: str, phone: str, since: datetime
    ) -> FailureTimes:
        """The counted attempts after ``since`` for ``target`` and for ``phone`` (a read: what a
        check before prompting for a PIN judges by; ``reserve_attempt`` is the authority)."""
        ...

    async def reserve_attempt(
        self, client_id: str, target: str, phone: str, now: datetime, since: datetime
    ) -> Reservation:
        """Count one attempt at ``target``'s PIN from ``phone`` at ``now``, atomically with
        reading the attempts counted before it after ``since`` (see the class contract)."""
        ...

    async def forget_attempt(self, attempt: Attempt) -> None:
        """Uncount ``attempt`` (the PIN was right, or the attempt was refused); idempotent."""
        ...

    async def start_replacement(
        self, new: Replacement, writes: Sequence[AstDbKey] = ()
    ) -> Takeover:
        """Record that ``new.phone`` acts as ``new.to_ext`` from now on; end, in the same
        transaction, the phone's previous replacement and any other phone's for ``new.to_ext``,
        and return them. ``writes``: AstDB keys about to be written on ``new.pbx``, no longer
        pending deletion."""
        ...

    async def end_replacement(
        self, client_id: str, phone: str, only: Replacement | None = None
    ) -> Replacement | None:
        """Remove and return the phone's replacement (None: it had none, or not ``only``)."""
        ...

    async def replacement(self, client_id: str, phone: str) -> Replacement | None: ...

    async def replacements(self, client_id: str) -> Sequence[Replacement]:
        """The client's replacements in force, by phone."""
        ...

    async def add_pending(
        self, client_id: str, keys: Sequence[AstDbKey], *, pbx: str = ...
    ) -> None:
        """Remember that ``keys`` must go from ``pbx``'s AstDB (default: ``DEFAULT_PBX``)."""
        ...

    async def pending(
        self, client_id: str | None = None, *, pbx: str | None = None
    ) -> Sequence[PendingDeletion]:
        """The deletions still owed, of one client and/or one PBX (None: all), in
        ``(pbx, client_id, family, key)`` order."""
        ...

    async def forget_pending(self, client_id: str, key: AstDbKey, *, pbx: str = ...) -> None:
        """The deletion was done (default PBX: ``DEFAULT_PBX``); idempotent."""
        ...


class AuditStore(Protocol):
    """The audit log's rows. Writing only: the queue, the batching timer and the row-by-row retry
    are the caller's (``callgate.audit.AuditLog``).

    Contract:

    - ``write_batch`` writes every event in one transaction, or raises and writes none. A session
      start or end event (``started``/``ended`` set) completes the newest allowing row of the same
      client, action and uniqueid written before it (same batch or earlier), and is a row of its
      own only when there is none.
    - ``write_each`` writes each event on its own (one refused event does not stop the others) and
      returns the refused ones with their reason; it raises only when the store is unavailable.
    - ``list`` returns newest first (ties: the later written first); ``ext`` matches the acting
      extension or the target; at most ``limit`` events.
    - ``prune`` deletes the events older than ``max_age`` and those beyond the newest
      ``max_rows``, in short transactions (each a bounded number of rows, yielding between them),
      and returns how many it deleted.
    """

    async def write_batch(self, events: Sequence[AuditEvent]) -> None: ...

    async def write_each(self, events: Sequence[AuditEvent]) -> list[tuple[AuditEvent, str]]: ...

    async def list(
        self,
        client_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        ext: str | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> tuple[AuditEvent, ...]: ...

    async def prune(self, retention: AuditRetention, now: datetime | None = None) -> int: ...


ChangeHandler = Callable[[PolicyChange], Awaitable[None]]
"""Handles one change feed event: a policy's, or (``ChangeKind.SUPERVISION``) a client's
settings and grants'."""
Unsubscribe = Callable[[], None]


class ChangeFeed(Protocol):
    """ "Client X's policy (or its settings and grants) changed to version N", from the store to
    whoever must follow it.

    Contract:

    - ``publish`` is the store's: it is called once per committed change of a policy or of a
      client's supervision record, after the commit, and never blocks on a subscriber.
    - Every subscriber receives every change published after it subscribed, at least once, and
      per client and ``kind`` in increasing version order; it may receive a version it has
      already seen (a reconnection, another instance) and must then re-read and carry on. A
      subscriber's handler runs for one change at a time; a slow or failing handler (its
      exception is logged) delays or loses nothing for the others.
    - Subscribers re-read what changed (the event carries no document), so a feed that merges
      two pending events of a client into the newer one meets the contract too.
    - ``idle()`` returns once every change published before the call has been handled by every
      subscriber; ``close()`` stops delivering (after ``idle()`` when it should drain).

    Means: for SQLite, in process — the writer thread hands each committed change to the event
    loop in commit order, and each subscriber has its own queue and task. A PostgreSQL backend
    will ``NOTIFY`` in the writing transaction (delivered on commit, in commit order) and
    ``LISTEN`` on each instance.
    """

    def subscribe(self, handler: ChangeHandler) -> Unsubscribe:
        """Deliver every later change to ``handler``; the returned function stops that."""
        ...

    def publish(self, change: PolicyChange) -> None: ...

    async def idle(self) -> None: ...

    async def close(self) -> None: ...


class Storage(Protocol):
    """One store: its ports and the feed of its committed changes, and one way to close them."""

    @property
    def policies(self) -> PolicyStore: ...

    @property
    def supervision(self) -> SupervisionStore: ...

    @property
    def tokens(self) -> TokenStore: ...

    @property
    def replace(self) -> ReplaceStore: ...

    @property
    def audit_log(self) -> AuditStore: ...

    @property
    def changes(self) -> ChangeFeed: ...

    async def close(self) -> None:
        """Release the backend (after the audit log's writer has flushed)."""
        ...
