"""Use cases of a client's settings and grants beside its policy: read and write the settings,
add, list and end grants, page their history.

Every change is one new version of the client's supervision record (``ports.SupervisionStore``):
the service reads the current version, computes the next state from it (the grant limits are
judged on the state the write replaces), and saves it with a compare-and-set on the version it
read; when another write got in between, it reads again and computes again. Like a policy write,
a change returns once it is in force here (the registry holds that version), so the next FastAGI
request decides by it; the registry's follower installs it from the change feed, on every
instance alike, and the revocation listeners end what it no longer allows.

The settings' ``If-Match`` is judged against ``settings_version`` (the version that last wrote
the settings), so a grant added meanwhile does not fail it. A grant gets its id here (random,
unique in the client), its ``created_by`` from the caller, never from the body. Ending a grant
early keeps its record (with ``ended_at``/``ended_by``); ended grants leave the client's list
``keep_ended`` after they ended, and stay in the history as long as it keeps versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from callgate.domain import (
    GrantRecord,
    GrantState,
    StoredSupervision,
    StoreError,
    SupervisionEdit,
    SupervisionPage,
    VersionConflictError,
    live_grants,
)
from callgate.policy.grants import GrantRequest, check_grant
from callgate.policy.settings import CallControlSettings
from callgate.ports import SupervisionStore
from callgate.registry import DEFAULT_SETTINGS, PolicyRegistry
from callgate.services.policies import in_force

if TYPE_CHECKING:
    from callgate.config import Settings

__all__ = ["GrantLimits", "SupervisionService", "UnknownGrantError"]

log = logging.getLogger(__name__)

_ATTEMPTS: Final = 100
"""Changes that lose the compare-and-set to a concurrent one try again this often: each loss
means another change got through, so only a storm of writers to one client gets this far."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class UnknownGrantError(LookupError):
    """No grant by that id in the client's list (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class GrantLimits:
    """The per-client limits on grants (``grants_*`` settings)."""

    max_per_client: int = 100
    max_duration: timedelta = timedelta(hours=720)
    keep_ended: timedelta = timedelta(days=7)

    @classmethod
    def from_settings(cls, settings: Settings) -> GrantLimits:
        return cls(
            max_per_client=settings.grants_max_per_client,
            max_duration=timedelta(hours=settings.grants_max_duration_hours),
            keep_ended=timedelta(days=settings.grants_keep_ended_days),
        )


@dataclass(frozen=True, slots=True)
class _Next:
    """The state a change makes from the current one."""

    settings: CallControlSettings
    grants: tuple[GrantRecord, ...]
    change: SupervisionEdit
    grant_id: str | None = None


class SupervisionService:
    def __init__(
        self,
        store: SupervisionStore,
        registry: PolicyRegistry,
        *,
        limits: GrantLimits | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._registry = registry
        self.limits = limits or GrantLimits()
        self._clock = clock

    def now(self) -> datetime:
        """The service's clock (what grant states and the grant rules are judged at)."""
        return self._clock()

    # ------------------------------------------------------------------------------ reading

    async def settings(self, client_id: str) -> tuple[CallControlSettings, int]:
        """The client's settings and their ``ETag`` version (the default and 0 when none)."""
        stored = await self._store.current(client_id)
        if stored is None:
            return DEFAULT_SETTINGS, 0
        return stored.settings, stored.settings_version

    async def grants(self, client_id: str) -> tuple[tuple[GrantRecord, ...], datetime]:
        """The client's grants (active, to come, and ended within ``keep_ended``), by ``from``
        then id, and the instant their states are judged at."""
        now = self._clock()
        stored = await self._store.current(client_id)
        kept = self._kept(stored.grants if stored is not None else (), now)
        return tuple(sorted(kept, key=lambda r: (r.grant.from_, r.id))), now

    async def history_page(
        self, client_id: str, *, limit: int, before: int | None
    ) -> SupervisionPage:
        return await self._store.history_page(client_id, limit=limit, before=before)

    # ------------------------------------------------------------------------------ changes

    async def write_settings(
        self,
        client_id: str,
        settings: CallControlSettings,
        changed_by: str,
        *,
        if_version: Collection[int] | None = None,
    ) -> StoredSupervision:
        """Store ``settings`` as the client's next version; return once it is in force here.

        ``VersionConflictError`` (nothing written), carrying the current ``settings_version``,
        when that is not in ``if_version``."""

        def next_state(current: StoredSupervision | None, now: datetime) -> _Next:
            settings_version = current.settings_version if current is not None else 0
            if if_version is not None and settings_version not in if_version:
                raise VersionConflictError(client_id, settings_version)
            grants = self._kept(current.grants if current is not None else (), now)
            return _Next(settings, grants, SupervisionEdit.SETTINGS)

        return await self._change(client_id, changed_by, next_state)

    async def add_grant(
        self, client_id: str, request: GrantRequest, created_by: str
    ) -> GrantRecord:
        """Store a new grant; return it (with its id) once it is in force here.

        ``PolicyValidationError`` when it breaks ``check_grant`` against the client's document
        in force, its other grants and the limits; nothing is written then."""
        document = self._registry.get(client_id).document

        def next_state(current: StoredSupervision | None, now: datetime) -> _Next:
            records = self._kept(current.grants if current is not None else (), now)
            check_grant(
                request,
                document=document,
                existing=live_grants(records),
                now=now,
                max_grants=self.limits.max_per_client,
                max_duration=self.limits.max_duration,
            )
            taken = {record.id for record in records}
            grant_id = secrets.token_hex(8)
            while grant_id in taken:  # 2**64 ids: a repeat is all but impossible, never reused
                grant_id = secrets.token_hex(8)
            grant = request.to_grant(grant_id=grant_id, created_by=created_by)
            return _Next(
                current.settings if current is not None else DEFAULT_SETTINGS,
                (*records, GrantRecord(grant, created_at=now)),
                SupervisionEdit.GRANT_ADDED,
                grant_id,
            )

        saved = await self._change(client_id, created_by, next_state)
        added = saved.grant(saved.grant_id or "")
        assert added is not None
        return added

    async def end_grant(self, client_id: str, grant_id: str, ended_by: str) -> GrantRecord:
        """End a grant now (what it alone allowed ends live); the record as it is then.

        ``UnknownGrantError`` when the client has no such grant. A grant already ended (by
        ``until`` or earlier) is answered as it is, without a new version."""
        ended: list[GrantRecord] = []

        def next_state(current: StoredSupervision | None, now: datetime) -> _Next:
            records = self._kept(current.grants if current is not None else (), now)
            found = next((r for r in records if r.id == grant_id), None)
            if current is None or found is None:
                raise UnknownGrantError(grant_id)
            if found.state(now) is GrantState.ENDED:
                ended.append(found)
                raise _NothingToDo
            record = dataclasses.replace(found, ended_at=now, ended_by=ended_by)
            ended.append(record)
            grants = tuple(record if r.id == grant_id else r for r in records)
            return _Next(current.settings, grants, SupervisionEdit.GRANT_ENDED, grant_id)

        with contextlib.suppress(_NothingToDo):
            await self._change(client_id, ended_by, next_state)
        return ended[-1]

    async def _change(
        self,
        client_id: str,
        changed_by: str,
        next_state: Callable[[StoredSupervision | None, datetime], _Next],
    ) -> StoredSupervision:
        for _ in range(_ATTEMPTS):
            current = await self._store.current(client_id)
            wanted = next_state(current, self._clock())
            try:
                saved = await self._store.save(
                    client_id,
                    settings=wanted.settings,
                    grants=wanted.grants,
                    changed_by=changed_by,
                    change=wanted.change,
                    grant_id=wanted.grant_id,
                    if_version=current.version if current is not None else 0,
                )
            except VersionConflictError:
                continue  # another change got in: compute again from what it made
            log.info(
                "client %s: settings and grants version %d by %s (%s%s)",
                client_id,
                saved.version,
                changed_by,
                saved.change,
                f" {saved.grant_id}" if saved.grant_id else "",
            )
            await in_force(
                self._registry.applied_supervision(client_id, saved.version),
                f"client {client_id!r} settings and grants version {saved.version}",
            )
            return saved
        raise StoreError(f"client {client_id!r}: too many concurrent changes, none of this won")

    def _kept(self, records: tuple[GrantRecord, ...], now: datetime) -> tuple[GrantRecord, ...]:
        """``records`` without those that ended more than ``keep_ended`` before ``now``."""
        horizon = now - self.limits.keep_ended
        return tuple(record for record in records if record.ends_at > horizon)


class _NothingToDo(Exception):  # noqa: N818 - a signal within this module, not an error
    """The change would change nothing (a grant already ended): no version is written."""
