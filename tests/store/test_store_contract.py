"""The contracts of ``callgate.ports``, run against every store backend (``conftest.BACKENDS``).

Only the ports are used here, on a real database: a next backend must pass this file unchanged.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callgate.audit import AuditEvent
from callgate.domain import (
    DEFAULT_PBX,
    Attempt,
    AuditRetention,
    ChangeKind,
    GrantRecord,
    PendingDeletion,
    PolicyChange,
    Replacement,
    Retention,
    StoredSupervision,
    SupervisionEdit,
    TokenExistsError,
    VersionConflictError,
)
from callgate.policy import PolicyDocument, parse_document
from callgate.policy.grants import parse_grant_request
from callgate.policy.settings import CallControlSettings, parse_settings
from callgate.ports import ChangeHandler, Storage
from callgate.replace.lockout import LockoutRules, LockState, reserve_guess
from support import wait_until

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CONCURRENT = 20


def doc(n: int) -> PolicyDocument:
    return parse_document({"groups": {f"g{n}": [str(100 + n)]}})


# ---------------------------------------------------------------------------------- policies


async def test_a_version_conflict_fails_the_save_and_changes_nothing(storage: Storage) -> None:
    first = await storage.policies.save("acme", doc(1), "admin", if_version=[0])
    with pytest.raises(VersionConflictError) as raised:
        await storage.policies.save("acme", doc(2), "admin", if_version=[0])
    assert raised.value.current == 1
    assert await storage.policies.current("acme") == first
    assert [p.version for p in await storage.policies.history("acme")] == [1]


async def test_if_match_accepts_any_listed_version_and_zero_means_none(storage: Storage) -> None:
    with pytest.raises(VersionConflictError):
        await storage.policies.save("acme", doc(1), "admin", if_version=[1])
    assert (await storage.policies.save("acme", doc(1), "a", if_version=[0])).version == 1
    assert (await storage.policies.save("acme", doc(2), "a", if_version=[5, 1])).version == 2
    assert (await storage.policies.save("acme", doc(3), "a")).version == 3  # no If-Match


async def test_versions_are_strictly_increasing_per_client(storage: Storage) -> None:
    for n in range(3):
        await storage.policies.save("acme", doc(n), "admin")
    await storage.policies.save("globex", doc(9), "admin")
    assert [p.version for p in await storage.policies.history("acme")] == [3, 2, 1]
    current = {p.client_id: p.version for p in await storage.policies.all_current()}
    assert current == {"acme": 3, "globex": 1}


async def test_of_concurrent_saves_expecting_one_version_exactly_one_wins(
    storage: Storage,
) -> None:
    await storage.policies.save("acme", doc(0), "admin")
    results = await asyncio.gather(
        *(
            storage.policies.save("acme", doc(n), f"op{n}", if_version=[1])
            for n in range(CONCURRENT)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, VersionConflictError)]
    assert len(won) == 1
    assert len(lost) == CONCURRENT - 1
    assert won[0].version == 2
    assert {c.current for c in lost} == {2}
    assert [p.version for p in await storage.policies.history("acme")] == [2, 1]


async def test_concurrent_saves_without_if_match_get_unique_versions(storage: Storage) -> None:
    saved = await asyncio.gather(
        *(storage.policies.save("acme", doc(n), "admin") for n in range(CONCURRENT))
    )
    assert sorted(s.version for s in saved) == list(range(1, CONCURRENT + 1))
    history = await storage.policies.history("acme")
    assert [p.version for p in history] == list(range(CONCURRENT, 0, -1))
    by_version = {s.version: s.document for s in saved}
    assert all(p.document == by_version[p.version] for p in history)


async def test_history_pages_and_retention(storage: Storage) -> None:
    storage.policies.retention = Retention(keep=4)
    for n in range(7):
        await storage.policies.save("acme", doc(n), "admin")
    page = await storage.policies.history_page("acme", limit=3, max_bytes=1 << 20)
    assert [v.version for v in page.versions] == [7, 6, 5]
    assert page.next_before == 5
    rest = await storage.policies.history_page("acme", limit=3, before=5, max_bytes=1 << 20)
    assert [v.version for v in rest.versions] == [4]
    assert rest.next_before is None
    tiny = await storage.policies.history_page("acme", limit=3, max_bytes=1)
    assert [v.version for v in tiny.versions] == [7]  # one version always, whatever its size
    current = await storage.policies.current_json("acme")
    assert current is not None
    assert current.version == 7


# ---------------------------------------------------------------------------------- tokens


async def test_tokens_create_find_duplicate_delete(storage: Storage) -> None:
    info, token = await storage.tokens.create("ops", "acme")
    assert await storage.tokens.find(token) == info
    assert await storage.tokens.find(token + "x") is None
    with pytest.raises(TokenExistsError):
        await storage.tokens.create("ops", "globex")
    with pytest.raises(ValueError, match="not a valid token name"):
        await storage.tokens.create("Admin", "acme")
    assert [t.name for t in await storage.tokens.list()] == ["ops"]
    assert await storage.tokens.delete("ops")
    assert not await storage.tokens.delete("ops")
    assert await storage.tokens.find(token) is None


# --------------------------------------------------------------------------------- replace


async def test_pins_set_replace_delete(storage: Storage) -> None:
    await storage.replace.set_pin("acme", "101", "h1", T0)
    await storage.replace.set_pin("acme", "101", "h2", T0)
    assert await storage.replace.pin_hash("acme", "101") == "h2"
    assert await storage.replace.pin_hash("globex", "101") is None
    assert await storage.replace.delete_pin("acme", "101")
    assert not await storage.replace.delete_pin("acme", "101")


@pytest.mark.parametrize("shared", ["target", "phone"])
async def test_concurrent_pin_guesses_are_linearizable(storage: Storage, shared: str) -> None:
    """20 guesses at once sharing a target (or a phone): exactly max_failures go ahead."""
    rules = LockoutRules(max_failures=5)

    def guess(n: int) -> tuple[str, str]:
        return ("101", f"2{n:02}") if shared == "target" else (f"3{n:02}", "100")

    results = await asyncio.gather(
        *(reserve_guess(storage.replace, rules, "acme", *guess(n), T0) for n in range(CONCURRENT))
    )
    assert sum(isinstance(r, Attempt) for r in results) == rules.max_failures
    assert all(isinstance(r, LockState) for r in results if not isinstance(r, Attempt))
    times = await storage.replace.failure_times("acme", *guess(0), T0 - rules.horizon)
    assert len(getattr(times, shared)) == rules.max_failures  # the refused ones were taken back


async def test_each_reservation_sees_exactly_the_attempts_before_it(storage: Storage) -> None:
    since = T0 - timedelta(hours=1)
    reservations = await asyncio.gather(
        *(
            storage.replace.reserve_attempt("acme", "101", f"2{n:02}", T0, since)
            for n in range(CONCURRENT)
        )
    )
    assert sorted(len(r.before.target) for r in reservations) == list(range(CONCURRENT))
    assert all(len(r.before.phone) == 0 for r in reservations)
    await storage.replace.forget_attempt(reservations[0].attempt)
    await storage.replace.forget_attempt(reservations[0].attempt)  # idempotent
    times = await storage.replace.failure_times("acme", "101", "x", since)
    assert len(times.target) == CONCURRENT - 1


async def test_replacements_start_displace_end(storage: Storage) -> None:
    first = Replacement("acme", "100", "100", "101", T0)
    assert (await storage.replace.start_replacement(first)).previous is None
    other = Replacement("acme", "102", "102", "101", T0 + timedelta(seconds=1), "b")
    takeover = await storage.replace.start_replacement(other)
    assert takeover.displaced == (first,)
    assert await storage.replace.replacement("acme", "100") is None
    assert await storage.replace.replacements("acme") == [other]
    assert await storage.replace.end_replacement("acme", "102", only=first) is None
    assert await storage.replace.end_replacement("acme", "102", only=other) == other
    assert await storage.replace.end_replacement("acme", "102") is None


async def test_pending_astdb_deletions_are_kept_per_pbx(storage: Storage) -> None:
    key = ("callgate/acme/acting", "100")
    await storage.replace.add_pending("acme", [key])
    await storage.replace.add_pending("acme", [key])  # a set: once
    await storage.replace.add_pending("acme", [key], pbx="b")
    await storage.replace.add_pending("globex", [("callgate/globex/acting", "100")])
    assert [p.pbx for p in await storage.replace.pending("acme")] == ["b", DEFAULT_PBX]
    assert await storage.replace.pending(pbx="b") == [PendingDeletion("b", "acme", key)]
    await storage.replace.forget_pending("acme", key, pbx="b")
    assert await storage.replace.pending(pbx="b") == []
    # writing the key on the default PBX settles only that PBX's pending deletion
    await storage.replace.add_pending("acme", [key], pbx="b")
    await storage.replace.start_replacement(Replacement("acme", "100", "100", "101", T0), [key])
    assert [(p.pbx, p.client_id) for p in await storage.replace.pending()] == [
        ("b", "acme"),
        (DEFAULT_PBX, "globex"),
    ]


# ----------------------------------------------------------------------------------- audit


def event(n: int, **fields: Any) -> AuditEvent:
    base = AuditEvent(
        T0 + timedelta(seconds=n), "acme", "eavesdrop", "100", "101", "allow", "r", 1, f"u{n}"
    )
    return base._replace(**fields)


async def test_audit_batches_are_written_queried_and_pruned(storage: Storage) -> None:
    log = storage.audit_log
    await log.write_batch([event(n) for n in range(10)])
    await log.write_batch([event(3, started=T0, decision="allow")])  # completes row u3
    listed = await log.list("acme")
    assert [e.uniqueid for e in listed] == [f"u{n}" for n in range(9, -1, -1)]
    assert next(e for e in listed if e.uniqueid == "u3").started == T0
    assert [e.uniqueid for e in await log.list("acme", limit=2)] == ["u9", "u8"]
    assert await log.list("acme", since=T0 + timedelta(seconds=8)) == listed[:2]
    assert await log.list("globex") == ()
    refused = await log.write_each([event(20), event(21, policy_version=2**63)])
    assert [e.uniqueid for e, _ in refused] == ["u21"]
    assert len(await log.list("acme")) == 11
    assert await log.prune(AuditRetention(max_rows=4)) == 7
    assert [e.uniqueid for e in await log.list("acme")] == ["u20", "u9", "u8", "u7"]
    old = AuditRetention(max_age=timedelta(seconds=1))
    assert await log.prune(old, now=T0 + timedelta(seconds=9, milliseconds=500)) == 2


async def test_a_failed_batch_writes_nothing(storage: Storage) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the backend's own refusal
        await storage.audit_log.write_batch([event(1), event(2, policy_version=2**63)])
    assert await storage.audit_log.list("acme") == ()


# ----------------------------------------------------------------------------- change feed


async def test_the_change_feed_delivers_each_commit_after_it_in_order(storage: Storage) -> None:
    seen: dict[str, list[tuple[str, int, int]]] = {"a": [], "b": []}

    def subscriber(name: str) -> ChangeHandler:
        async def handle(change: PolicyChange) -> None:
            current = await storage.policies.current(change.client_id)
            assert current is not None  # delivered after the commit: the change is readable
            seen[name].append((change.client_id, change.version, current.version))

        return handle

    storage.changes.subscribe(subscriber("a"))
    storage.changes.subscribe(subscriber("b"))
    for n in range(3):
        await storage.policies.save("acme", doc(n), "admin")
    await storage.policies.save("globex", doc(9), "admin")
    with pytest.raises(VersionConflictError):
        await storage.policies.save("acme", doc(9), "admin", if_version=[0])  # not published
    await storage.changes.idle()
    for name in ("a", "b"):
        assert [(c, v) for c, v, _ in seen[name]] == [
            ("acme", 1),
            ("acme", 2),
            ("acme", 3),
            ("globex", 1),
        ]
        assert all(read >= version for _, version, read in seen[name])


async def test_a_failing_or_slow_subscriber_holds_up_no_other(storage: Storage) -> None:
    release = asyncio.Event()
    fast: list[int] = []

    async def slow(change: PolicyChange) -> None:
        await release.wait()

    async def failing(change: PolicyChange) -> None:
        raise RuntimeError("subscriber bug")

    async def quick(change: PolicyChange) -> None:
        fast.append(change.version)

    storage.changes.subscribe(slow)
    storage.changes.subscribe(failing)
    stop_quick = storage.changes.subscribe(quick)
    await storage.policies.save("acme", doc(1), "admin")  # returns while ``slow`` waits
    await storage.policies.save("acme", doc(2), "admin")
    await asyncio.wait_for(wait_for_len(fast, 2), timeout=5)
    stop_quick()
    await storage.policies.save("acme", doc(3), "admin")
    release.set()
    await storage.changes.idle()
    assert fast == [1, 2]


async def wait_for_len(items: list[int], n: int) -> None:
    for _ in range(500):
        if len(items) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{items} never reached {n}")


# ----------------------------------------------------------------------------- supervision


def grant_record(grant_id: str, *, ext: str = "200", ended: bool = False) -> GrantRecord:
    request = parse_grant_request(
        {
            "ext": ext,
            "action": "eavesdrop",
            "groups": ["support"],
            "extensions": ["105"],
            "from": "2026-11-26T08:00:00Z",
            "until": "2026-11-26T17:00:00+02:00",
            "note": "coaching, ticket HR-123",
        }
    )
    return GrantRecord(
        request.to_grant(grant_id=grant_id, created_by="ops"),
        created_at=T0,
        ended_at=T0 + timedelta(minutes=5) if ended else None,
        ended_by="boss" if ended else None,
    )


PROTECTED = parse_settings({"protected_extensions": ["911"], "notice": {"mode": "tone"}})


async def save_supervision(
    storage: Storage,
    if_version: int,
    settings: CallControlSettings = PROTECTED,
    grants: tuple[GrantRecord, ...] = (),
    *,
    change: SupervisionEdit = SupervisionEdit.SETTINGS,
    grant_id: str | None = None,
    by: str = "ops",
) -> StoredSupervision:
    return await storage.supervision.save(
        "acme",
        settings=settings,
        grants=grants,
        changed_by=by,
        change=change,
        grant_id=grant_id,
        if_version=if_version,
    )


async def test_supervision_versions_are_a_compare_and_set(storage: Storage) -> None:
    supervision = storage.supervision
    assert await supervision.current("acme") is None
    first = await save_supervision(storage, 0)
    assert (first.version, first.settings_version) == (1, 1)
    with pytest.raises(VersionConflictError) as stale:
        await save_supervision(storage, 0, CallControlSettings())
    assert stale.value.current == 1
    assert await supervision.current("acme") == first


async def test_a_grant_change_keeps_the_settings_version_and_reads_back_whole(
    storage: Storage,
) -> None:
    supervision = storage.supervision
    await save_supervision(storage, 0)
    records = (grant_record("g1"), grant_record("g2", ext="201", ended=True))
    saved = await save_supervision(
        storage, 1, PROTECTED, records, change=SupervisionEdit.GRANT_ENDED, grant_id="g2", by="boss"
    )
    assert (saved.version, saved.settings_version) == (2, 1)
    current = await supervision.current("acme")
    assert current is not None
    assert current.grants == records
    assert current.live_grants() == (records[0].grant,)
    assert (current.settings, current.changed_by, current.change, current.grant_id) == (
        PROTECTED,
        "boss",
        SupervisionEdit.GRANT_ENDED,
        "g2",
    )
    assert [s.client_id for s in await supervision.all_current()] == ["acme"]


async def test_of_concurrent_supervision_saves_on_one_version_exactly_one_wins(
    storage: Storage,
) -> None:
    results = await asyncio.gather(
        *(
            save_supervision(
                storage,
                0,
                CallControlSettings(),
                (grant_record(f"g{n}"),),
                change=SupervisionEdit.GRANT_ADDED,
                grant_id=f"g{n}",
            )
            for n in range(CONCURRENT)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1
    assert all(isinstance(r, VersionConflictError) for r in results if r not in won)
    current = await storage.supervision.current("acme")
    assert current is not None
    assert (current.version, current.grant_id) == (1, won[0].grant_id)


async def test_supervision_history_pages_and_retention(storage: Storage) -> None:
    storage.supervision.retention = Retention(keep=3)
    for n in range(5):
        await save_supervision(storage, n, CallControlSettings())
    page = await storage.supervision.history_page("acme", limit=2)
    assert [v.version for v in page.versions] == [5, 4]
    assert page.next_before == 4
    rest = await storage.supervision.history_page("acme", limit=2, before=4)
    assert ([v.version for v in rest.versions], rest.next_before) == ([3], None)


async def test_the_change_feed_carries_supervision_changes_apart(storage: Storage) -> None:
    seen: list[tuple[str, int, ChangeKind]] = []

    async def handle(change: PolicyChange) -> None:
        seen.append((change.client_id, change.version, change.kind))

    storage.changes.subscribe(handle)
    await storage.policies.save("acme", doc(1), "ops")
    await save_supervision(storage, 0)
    await storage.policies.save("acme", doc(2), "ops")
    await wait_until(lambda: len(seen) == 3)
    await storage.changes.idle()
    assert seen == [
        ("acme", 1, ChangeKind.POLICY),
        ("acme", 1, ChangeKind.SUPERVISION),
        ("acme", 2, ChangeKind.POLICY),
    ]
