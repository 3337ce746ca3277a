"""Protection and grants that expire, ending a listen live on a real Asterisk (issue 15).

- An extension made protected during a listen: the listener is hung up at once, the call goes on,
  and a new listen to it is refused ``protected``.
- A grant the listen depends on (the document denies it): allowed ``temporary_grant`` with the
  grant's id in the audit; at its ``until`` the listener is hung up, the call goes on, and a new
  listen is refused. The same when the grant is ended early by ``DELETE``.

What each test looks at: the Manager events of the tester's own connection (``Hangup`` of the
listener's channel, ``CALLGATE_DECISION``/``CALLGATE_REASON`` on the dialing phone's channel) and
callgate's audit (``GET /client/acme/audit``). The time from ``until`` to the listener's ``Hangup``
is printed (``-s``); ``bench/grant_expiry_bench.py`` measures its distribution with these helpers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support import wait_until

from .harness import Ami, Api, event, skip_without_asterisk
from .test_asterisk_e2e import POLICY, answer_of, channels, dial, ended, ring

skip_without_asterisk()

pytestmark = pytest.mark.asterisk

DENIED = {k: v for k, v in POLICY.items() if k != "eavesdrop_100"}
"""The reference policy without 100's listen right: the document denies 100 -> 101."""
GRANT_SECONDS = 4.0
"""How long a grant lasts from its POST: long enough for a loaded machine to start the listen
under it (dialing, FastAGI, ChanSpy: well under a second when idle)."""
HANGUP_WITHIN = 3.0
"""The bound on until -> Hangup the tests assert: it catches "not at all" or "at the next
periodic sweep", never timing noise. The goal (1 s) is measured, not asserted."""


@dataclass(frozen=True, slots=True)
class Listen:
    """A listen of 100 to 101's call that started (its ChanSpyStart seen)."""

    listener: str
    """The spier's channel (``PJSIP/acme_100-...``)."""
    uniqueid: str
    """The spier's uniqueid: the FastAGI request's, so its audit row's."""
    dialed: int
    """The event mark just before 100 dialed."""


async def listen_to_101(ami: Ami) -> Listen:
    mark = await dial(ami, "acme_100", "*51101")
    start = await ami.wait_event(
        event("ChanSpyStart", SpyerChannel="PJSIP/acme_100-*"), mark, within=15
    )
    return Listen(start["SpyerChannel"], start["SpyerUniqueid"], mark)


async def grant_100_over_101(api: Api, seconds: float) -> tuple[dict[str, Any], float]:
    """A listen grant for 100 over 101, from a second ago to ``seconds`` from now; the grant and
    its ``until`` on ``time.monotonic()``'s scale (what ``Ami.received_at`` answers in)."""
    now, monotonic = datetime.now(UTC), time.monotonic()
    grant = await api.post_grant(
        "acme",
        {
            "ext": "100",
            "action": "eavesdrop",
            "extensions": ["101"],
            "from": (now - timedelta(seconds=1)).isoformat(),
            "until": (now + timedelta(seconds=seconds)).isoformat(),
            "note": "real-Asterisk suite: a listen that outlives its grant",
        },
    )
    return grant, monotonic + seconds


async def until_to_hangup(
    ami: Ami, listen: Listen, until: float, late: float = HANGUP_WITHIN
) -> float:
    """Seconds from the grant's ``until`` to the listener's Hangup event (waited for, at most
    ``late`` seconds past ``until``)."""
    within = max(0.0, until - time.monotonic()) + late
    hangup = await ami.wait_event(event("Hangup", Channel=listen.listener), listen.dialed, within)
    return ami.received_at(hangup) - until


async def audited(api: Api, listen: Listen, **expected: object) -> dict[str, Any]:
    """The listen's audit row once it has every ``expected`` field (sessions end in the audit
    after the Hangup is confirmed)."""
    found: list[dict[str, Any]] = []

    async def has_them() -> bool:
        rows = await api.audit("acme", action="eavesdrop", ext="100")
        found[:] = [r for r in rows if r.get("uniqueid") == listen.uniqueid]
        return bool(found) and all(found[0].get(k) == v for k, v in expected.items())

    try:
        # callgate's state, seen over its HTTP API: no event to wait on.
        await wait_until(has_them, within=5, interval=0.1)
    except TimeoutError:
        raise AssertionError(f"audit row {found} lacks {expected}") from None
    return found[0]


async def refused(ami: Ami, reason: str) -> None:
    """A new listen of 100 to 101 is denied ``reason`` and spies on nothing."""
    mark = await dial(ami, "acme_100", "*51101")
    assert await answer_of(ami, "acme_100", mark) == ("DENY", reason)
    await ended(ami, "acme_100", mark)
    assert ami.events_since(mark, event("ChanSpyStart")) == []


@pytest.fixture
async def settings(api: Api) -> AsyncIterator[Api]:
    """``api``, with acme's settings back to the default afterwards (the reset keeps them)."""
    try:
        yield api
    finally:
        await api.put_settings("acme", {})


async def test_protecting_the_extension_listened_to_ends_the_listen(
    ami: Ami, settings: Api
) -> None:
    await settings.put_policy("acme", POLICY)  # 100 may listen to 101 (support)
    call = await ring(ami, "acme", "101", answer=True)
    listen = await listen_to_101(ami)
    assert await answer_of(ami, "acme_100", listen.dialed) == ("ALLOW", "eavesdrop_group")

    changed = ami.mark()
    await settings.put_settings("acme", {"protected_extensions": ["101"]})
    acknowledged = time.monotonic()
    hangup = await ami.wait_event(event("Hangup", Channel=listen.listener), changed, within=5)
    took = ami.received_at(hangup) - acknowledged
    print(f"\nprotection: listener hung up {took * 1000:.0f} ms after the PUT was acknowledged")

    assert call in await channels(ami), "the protected call goes on, unheard"
    await audited(settings, listen, end_reason="revoked", revoked_reason="protected")
    await refused(ami, "protected")


async def test_a_listen_allowed_by_a_grant_ends_at_its_until(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", DENIED)
    call = await ring(ami, "acme", "101", answer=True)
    await refused(ami, "eavesdrop_not_permitted")

    grant, until = await grant_100_over_101(api, GRANT_SECONDS)
    listen = await listen_to_101(ami)
    assert await answer_of(ami, "acme_100", listen.dialed) == ("ALLOW", "temporary_grant")
    await audited(api, listen, reason="temporary_grant", grant_id=grant["id"])

    delay = await until_to_hangup(ami, listen, until)
    print(f"\ngrant expiry: listener hung up {delay * 1000:.0f} ms after the grant's until")
    assert 0 < delay < HANGUP_WITHIN, "hung up at the grant's until, not before, not much later"

    assert call in await channels(ami), "the call goes on"
    await audited(
        api,
        listen,
        end_reason="revoked",
        revoked_reason="eavesdrop_not_permitted",
        revoked_cause="grant_expired",
        revoked_grant_id=grant["id"],
    )
    await refused(ami, "eavesdrop_not_permitted")


async def test_a_grant_ended_early_by_delete_ends_its_listen(ami: Ami, api: Api) -> None:
    await api.put_policy("acme", DENIED)
    call = await ring(ami, "acme", "101", answer=True)
    grant, _ = await grant_100_over_101(api, 600)
    listen = await listen_to_101(ami)
    assert await answer_of(ami, "acme_100", listen.dialed) == ("ALLOW", "temporary_grant")

    changed = ami.mark()
    await api.delete_grant("acme", grant["id"])
    await ami.wait_event(event("Hangup", Channel=listen.listener), changed, within=5)

    assert call in await channels(ami), "the call goes on"
    await audited(
        api,
        listen,
        grant_id=grant["id"],
        end_reason="revoked",
        revoked_reason="eavesdrop_not_permitted",
        revoked_cause="grant_ended",
        revoked_grant_id=grant["id"],
    )
    await refused(ami, "eavesdrop_not_permitted")
