"""Revocation and HTTP restore reach Asterisk through the real Manager client (DBDel), against
the shared fake Manager taught the two AstDB actions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from callgate.ami.client import ManagerClient, ManagerConfig, ManagerState
from callgate.registry import ClientPolicy, PolicyRegistry
from callgate.replace.manager_astdb import ManagerAstDb, manager_astdb
from callgate.replace.service import AstDbError
from callgate.store.replace import Replacement, ReplaceRepository
from fake_ami import FakeAmi, ReceivedAction, render

from .conftest import (
    CLIENT,
    REFERENCE_DOCUMENT,
    Clock,
    FakeAstDb,
    FakeAudit,
    make_service,
)
from .conftest import client_policy as make_policy


class AstDbAmi(FakeAmi):
    """The fake Manager, plus DBPut/DBDel on an in-memory AstDB (answers as manager.c does)."""

    def __init__(self) -> None:
        super().__init__()
        self.astdb: dict[str, str] = {}

    async def _answer(self, action: ReceivedAction, writer: asyncio.StreamWriter) -> bool:
        aid = action.get("ActionID")
        key = f"{action.get('Family')}/{action.get('Key')}"
        match action.name.lower():
            case "dbput":
                self.astdb[key] = action.get("Val")
                reply = [("Response", "Success"), ("Message", "Updated database successfully")]
            case "dbdel" if self.astdb.pop(key, None) is not None:
                reply = [("Response", "Success"), ("Message", "Key deleted successfully")]
            case "dbdel":
                reply = [("Response", "Error"), ("Message", "Database entry not found")]
            case _:
                return await super()._answer(action, writer)
        writer.write(render([*reply, ("ActionID", aid)]))
        await writer.drain()
        return True


@pytest.fixture
async def ami() -> AsyncIterator[AstDbAmi]:
    fake = AstDbAmi()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def manager(ami: AstDbAmi) -> AsyncIterator[ManagerClient]:
    config = ManagerConfig("127.0.0.1", ami.port, ami.username, ami.secret, ping_interval=60)
    client = ManagerClient(config, on_event=lambda _: None)
    client.start()
    for _ in range(200):
        if client.state is ManagerState.CONNECTED:
            break
        await asyncio.sleep(0.01)
    yield client
    with contextlib.suppress(Exception):
        await client.stop()


async def test_put_and_delete(ami: AstDbAmi, manager: ManagerClient) -> None:
    astdb = ManagerAstDb(manager)
    await astdb.put("callgate/acme/acting", "100", "101")
    assert ami.astdb == {"callgate/acme/acting/100": "101"}
    await astdb.delete("callgate/acme/acting", "100")
    await astdb.delete("callgate/acme/acting", "100")  # not there any more: still fine
    assert ami.astdb == {}
    (dbput,) = ami.received("DBPut")
    assert (dbput.get("Family"), dbput.get("Key"), dbput.get("Val")) == (
        "callgate/acme/acting",
        "100",
        "101",
    )


async def test_revocation_deletes_both_keys_over_the_manager(
    ami: AstDbAmi, manager: ManagerClient, repo: ReplaceRepository, clock: Clock
) -> None:
    registry = PolicyRegistry()
    registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    audit = FakeAudit()
    service = make_service(repo, registry, audit, manager_astdb(manager), clock)
    ami.astdb.update({"callgate/acme/acting/100": "101", "callgate/acme/device/101": "100"})
    await repo.start_replacement(Replacement(CLIENT, "100", "100", "101", clock()))

    await registry.publish(make_policy({**REFERENCE_DOCUMENT, "phone_replace_groups": []}, 2))
    await service.idle()

    assert ami.astdb == {}
    assert [a.name for a in ami.actions if a.name.startswith("DB")] == ["DBDel", "DBDel"]
    assert list(await repo.replacements(CLIENT)) == []
    assert dict(audit.events[-1].extra)["end_reason"] == "revoked"


async def test_without_a_manager_connection(repo: ReplaceRepository, clock: Clock) -> None:
    assert manager_astdb(None)() is None
    config = ManagerConfig("127.0.0.1", 9, "u", "s")
    disconnected = ManagerClient(config, on_event=lambda _: None)  # never started
    assert manager_astdb(disconnected)() is None
    with pytest.raises(AstDbError):
        await ManagerAstDb(disconnected).put("f", "k", "v")


class StalledManager(FakeAstDb):
    """A Manager connection whose answers wait until the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def delete(self, family: str, key: str) -> None:
        await self.release.wait()
        await super().delete(family, key)


async def test_revocation_does_not_hold_up_the_other_listeners(
    repo: ReplaceRepository, clock: Clock
) -> None:
    """The listen/whisper enforcer listens to the same registry and must hang up within 250 ms:
    publish() must not wait for Manager round trips of phone-replace revocations."""
    registry = PolicyRegistry()
    registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    stalled = StalledManager()
    service = make_service(repo, registry, FakeAudit(), lambda: stalled)
    later: list[int] = []

    async def next_listener(old: ClientPolicy, new: ClientPolicy) -> None:
        later.append(new.version)

    registry.subscribe(next_listener)
    await repo.start_replacement(Replacement(CLIENT, "100", "100", "101", clock()))

    await registry.publish(make_policy({**REFERENCE_DOCUMENT, "phone_replace_groups": []}, 2))
    assert later == [2]  # reached while the Manager has not answered yet
    assert list(await repo.replacements(CLIENT)) == []
    assert stalled.ops == []
    stalled.release.set()
    await service.idle()
    assert [op for op, _ in stalled.ops] == ["del", "del"]
