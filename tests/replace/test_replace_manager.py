"""Revocation and HTTP restore reach Asterisk through the real Manager client (DBDel), against
the shared fake Manager taught the AstDB actions, answering with the blocks recorded from
Asterisk 22.10.1 in ``transcripts/ami/astdb-dbput-dbget-dbdel.txt``."""

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
from fake_ami import (
    FakeAmi,
    Headers,
    ReceivedAction,
    parse_block,
    render,
    splice,
    transcript_blocks,
)
from reference_policy import REFERENCE_DOCUMENT
from support import wait_until

from .conftest import (
    CLIENT,
    Clock,
    FakeAstDb,
    FakeAudit,
    make_service,
)
from .conftest import client_policy as make_policy


def _recorded_answers() -> dict[str, list[Headers]]:
    """The recorded stream's answers by the ActionID the recording used: 2 DBPut, 3 DBGet of a
    key, 4 DBDel of it, 5 DBDel again (the key is gone), 6 DBGet of the missing key."""
    answers: dict[str, list[Headers]] = {}
    for block in transcript_blocks("astdb-dbput-dbget-dbdel.txt"):
        headers = parse_block(block)
        answers.setdefault(dict(headers).get("ActionID", ""), []).append(headers)
    return answers


RECORDED = _recorded_answers()


class AstDbAmi(FakeAmi):
    """The fake Manager, plus DBPut/DBGet/DBDel on an in-memory AstDB, answering as the recorded
    Asterisk 22.10.1 did: ``DBDel`` of a missing key is ``Database entry could not be deleted``
    (not the ``not found`` of DBGet and DBDelTree)."""

    def __init__(self) -> None:
        super().__init__()
        self.astdb: dict[str, str] = {}
        self.undeletable: set[str] = set()
        """Keys whose DBDel fails although they exist (SQLite refused): same answer as missing."""

    async def _answer(self, action: ReceivedAction, writer: asyncio.StreamWriter) -> bool:
        aid = action.get("ActionID")
        family, key = action.get("Family"), action.get("Key")
        path = f"{family}/{key}"
        match action.name.lower():
            case "dbput":
                self.astdb[path] = action.get("Val")
                blocks = RECORDED["2"]
            case "dbget" if path in self.astdb:
                response, item, complete = RECORDED["3"]
                item = splice(item, Family=family, Key=key, Val=self.astdb[path])
                blocks = [response, item, complete]
            case "dbget":
                blocks = RECORDED["6"]
            case "dbdel" if path in self.astdb and path not in self.undeletable:
                del self.astdb[path]
                blocks = RECORDED["4"]
            case "dbdel":
                blocks = RECORDED["5"]
            case _:
                return await super()._answer(action, writer)
        for block in blocks:
            writer.write(render(splice(block, ActionID=aid)))
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
    await wait_until(lambda: client.state is ManagerState.CONNECTED, within=2)
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


async def test_a_key_that_cannot_be_deleted_is_an_error(
    ami: AstDbAmi, manager: ManagerClient
) -> None:
    ami.astdb["callgate/acme/acting/100"] = "101"
    ami.undeletable.add("callgate/acme/acting/100")
    with pytest.raises(AstDbError, match="could not be deleted"):
        await ManagerAstDb(manager).delete("callgate/acme/acting", "100")
    assert [a.name for a in ami.actions if a.name.startswith("DB")] == ["DBDel", "DBGet"]


async def test_revocation_of_keys_already_gone_leaves_nothing_pending(
    ami: AstDbAmi, manager: ManagerClient, repo: ReplaceRepository, clock: Clock
) -> None:
    # An operator (or a restore in a call) removed the device key first: DBDel of it is refused
    # by Asterisk 22 ("could not be deleted"), yet the goal is reached. Nothing may stay pending:
    # a pending key that can never be deleted would block every later deletion.
    registry = PolicyRegistry()
    registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    service = make_service(repo, registry, FakeAudit(), manager_astdb(manager), clock)
    ami.astdb.update({"callgate/acme/acting/100": "101"})
    await repo.start_replacement(Replacement(CLIENT, "100", "100", "101", clock()))

    await registry.publish(make_policy({**REFERENCE_DOCUMENT, "phone_replace_groups": []}, 2))
    await service.idle()

    assert ami.astdb == {}
    assert list(await repo.pending(None)) == []
    assert list(await repo.replacements(CLIENT)) == []


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
    service = make_service(repo, registry, FakeAudit(), lambda _pbx=None: stalled)
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
