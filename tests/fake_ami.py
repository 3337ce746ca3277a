"""A fake Asterisk Manager over loopback, speaking like the recorded streams in transcripts/ami/.

It sends the banner, answers Login (checking the credentials; a refusal closes the connection, as
Asterisk does), Ping, CoreShowChannels (a list built from ``channels``) and Hangup (``Response:
Success``, ``Message: Channel Hungup``, then ChanSpyStop, SoftHangupRequest and Hangup events
spliced from the recorded blocks: the order a real Asterisk 22.10.1 sends them in when a spier is
hung up), and records every action it receives with the time it arrived. ``media = False`` models a
call on which no audio flows: Asterisk accepts the Hangup of a spier at once, but ChanSpy only
finishes when a frame crosses the spied-on channel, so the spier's events come when that call ends.
Tests push events (recorded blocks with a few values replaced, or raw bytes in chunks), drop every
connection, or make it go silent while the TCP connection stays open.

It parses actions on its own (CRLF, empty line) so that it does not share code with the client
under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

TRANSCRIPTS = Path(__file__).parent / "transcripts" / "ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"

Headers = list[tuple[str, str]]


def transcript_blocks(name: str) -> list[bytes]:
    """The messages of a recorded stream, as sent (CRLF inside, without the ending empty line)."""
    data = (TRANSCRIPTS / name).read_bytes()
    first, _, rest = data.partition(b"\r\n")
    assert first.startswith(b"BANNER "), "a recorded stream starts with its BANNER line"
    return [block for block in rest.split(b"\r\n\r\n") if block.strip()]


def parse_block(block: bytes) -> Headers:
    headers = []
    for line in block.split(b"\r\n"):
        name, _, value = line.decode().partition(": ")
        headers.append((name, value))
    return headers


def recorded(
    event: str, index: int = 0, name: str = "chanspy-listen-whisper-and-hangup.txt"
) -> Headers:
    """The ``index``-th recorded block of ``event``."""
    return list(_recorded_blocks(name, event)[index])


@functools.cache
def _recorded_blocks(name: str, event: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    blocks = (parse_block(b) for b in transcript_blocks(name))
    return tuple(tuple(b) for b in blocks if ("Event", event) in b)


def splice(headers: Headers, **values: str) -> Headers:
    """``headers`` with some values replaced (names as in the block, e.g. SpyerUniqueid=...)."""
    unknown = set(values) - {name for name, _ in headers}
    assert not unknown, f"not in the recorded block: {unknown}"
    return [(name, values.get(name, value)) for name, value in headers]


def render(headers: Headers) -> bytes:
    return b"".join(f"{n}: {v}\r\n".encode() for n, v in headers) + b"\r\n"


@dataclass(frozen=True)
class ReceivedAction:
    name: str
    headers: dict[str, str]
    at: float
    """``time.perf_counter()`` when the action was read whole."""

    def get(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class FakeChannel:
    channel: str
    uniqueid: str
    application: str = "Wait"
    application_data: str = ""
    duration: str = "00:00:07"
    spying_on: str | None = None
    """For a spier: the spied-on channel's uniqueid."""
    context: str | None = None
    """Context and exten of its CoreShowChannel row (``None``: the recorded block's)."""
    exten: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    """What ``Getvar`` answers (an unset variable: an empty ``Value``, as Asterisk does)."""


class ChannelFields(TypedDict, total=False):
    """The fields of a :class:`FakeChannel` that ``add_channel`` takes as keywords."""

    application: str
    application_data: str
    duration: str
    spying_on: str | None
    context: str | None
    exten: str | None
    variables: dict[str, str]


@dataclass
class FakeAmi:
    username: str = "callgate"
    secret: str = "s3cret"
    auth_delay: float = 0.0
    """Asterisk sleeps 1 s before refusing a login; tests keep it short."""
    channels: dict[str, FakeChannel] = field(default_factory=dict)
    actions: list[ReceivedAction] = field(default_factory=list)
    silent: bool = False
    """Read and record actions but answer nothing (a half-dead connection)."""
    on_action: Callable[[ReceivedAction], None] | None = None
    media: bool = True
    """Audio flows on the spied-on calls (real phones send RTP every 20 ms). ``False``: a spier
    hung up by the Hangup action stays in ChanSpy until the call it spies on ends."""
    _held: set[str] = field(default_factory=set)
    """Spiers whose Hangup was accepted while ``media`` was off."""
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _logged_in: set[asyncio.StreamWriter] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    # ------------------------------------------------------------ lifecycle

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return self.port

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        await self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def drop(self) -> None:
        """Close every client connection (the server keeps listening)."""
        writers, self._writers = self._writers, []
        self._logged_in.clear()
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @property
    def sessions(self) -> int:
        return len(self._logged_in)

    # ------------------------------------------------------------ what tests push

    def add_channel(
        self, channel: str, uniqueid: str, **fields: Unpack[ChannelFields]
    ) -> FakeChannel:
        fake = FakeChannel(channel, uniqueid, **fields)
        self.channels[uniqueid] = fake
        return fake

    async def send(self, data: bytes, *, chunks: list[int] | None = None) -> None:
        """Write ``data`` to every logged-in client; ``chunks`` splits it at those offsets."""
        cuts = [0, *(chunks or []), len(data)]
        for writer in list(self._logged_in):
            for start, end in itertools.pairwise(cuts):
                writer.write(data[start:end])
                await writer.drain()
                if end != len(data):
                    await asyncio.sleep(0.05)  # the client reads each part on its own

    async def event(self, headers: Headers) -> None:
        await self.send(render(headers))

    async def start_spy(
        self,
        spyer_channel: str,
        spyer_uniqueid: str,
        spyee_channel: str,
        spyee_uniqueid: str,
        options: str = "qEou",
        *,
        announce: bool = True,
        context: str | None = None,
        exten: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> None:
        """A ChanSpy runs on ``spyer_channel``; ChanSpyStart is sent unless ``announce`` is off.
        ``context``/``exten``: where the spier runs (``None``: the recorded block's);
        ``variables``: what ``Getvar`` answers for it."""
        self.channels.setdefault(spyee_uniqueid, FakeChannel(spyee_channel, spyee_uniqueid, "Dial"))
        self.add_channel(
            spyer_channel,
            spyer_uniqueid,
            application="ChanSpy",
            application_data=f"{spyee_channel},{options}",
            spying_on=spyee_uniqueid,
            context=context,
            exten=exten,
            variables=dict(variables or {}),
        )
        if announce:
            await self.event(self._spy_event("ChanSpyStart", spyer_uniqueid))

    async def hang_up(self, uniqueid: str, *, requested: bool = False) -> None:
        """A channel hangs up by itself (its user put the phone down), or, ``requested``, as
        the Hangup action makes it: a SoftHangupRequest before its Hangup."""
        channel = self.channels.pop(uniqueid)
        self._held.discard(uniqueid)
        spyers = [c for c in self.channels.values() if c.spying_on == uniqueid]
        if channel.spying_on is not None:
            await self.event(self._spy_event("ChanSpyStop", uniqueid, channel))
        if requested:
            await self.event(
                splice(recorded("SoftHangupRequest"), Channel=channel.channel, Uniqueid=uniqueid)
            )
        await self.event(splice(recorded("Hangup"), Channel=channel.channel, Uniqueid=uniqueid))
        for spyer in spyers:
            if spyer.uniqueid in self._held:  # its Hangup was accepted: ChanSpy can finish now
                await self.hang_up(spyer.uniqueid, requested=True)
                continue
            # ChanSpy's `E`: the spier leaves when its target hangs up
            await self.event(self._spy_event("ChanSpyStop", spyer.uniqueid))
            spyer.spying_on = None
            spyer.application = "Hangup"

    def _spy_event(
        self, event: str, spyer_uniqueid: str, spyer: FakeChannel | None = None
    ) -> Headers:
        spyer = spyer or self.channels[spyer_uniqueid]
        assert spyer.spying_on is not None
        spyee = self.channels.get(spyer.spying_on) or FakeChannel("gone", spyer.spying_on)
        place = {"SpyerContext": spyer.context, "SpyerExten": spyer.exten}
        return splice(
            recorded(event),
            SpyerChannel=spyer.channel,
            SpyerUniqueid=spyer.uniqueid,
            SpyeeChannel=spyee.channel,
            SpyeeUniqueid=spyee.uniqueid,
            **{name: value for name, value in place.items() if value is not None},
        )

    async def wait_for(
        self, predicate: Callable[[ReceivedAction], bool], within: float = 5.0
    ) -> ReceivedAction:
        async with asyncio.timeout(within), self._changed:
            while True:
                for action in self.actions:
                    if predicate(action):
                        return action
                await self._changed.wait()

    def received(self, name: str) -> list[ReceivedAction]:
        return [a for a in self.actions if a.name.lower() == name.lower()]

    # ------------------------------------------------------------ the protocol

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(BANNER)
        buffer = b""
        try:
            while data := await reader.read(65536):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    block, buffer = buffer.split(b"\r\n\r\n", 1)
                    headers: dict[str, str] = {}
                    for line in block.decode().split("\r\n"):
                        name, _, value = line.partition(":")
                        headers.setdefault(name.strip().lower(), value.strip())
                    action = ReceivedAction(headers.get("action", ""), headers, time.perf_counter())
                    self.actions.append(action)
                    async with self._changed:
                        self._changed.notify_all()
                    if self.on_action is not None:
                        self.on_action(action)
                    if not self.silent and not await self._answer(action, writer):
                        return
        except ConnectionError:
            pass
        finally:
            self._logged_in.discard(writer)
            if writer in self._writers:
                self._writers.remove(writer)
            writer.close()

    async def _answer(self, action: ReceivedAction, writer: asyncio.StreamWriter) -> bool:
        """Answer one action; False when the connection must close."""
        aid = action.get("ActionID")
        match action.name.lower():
            case "login":
                if action.get("Username") != self.username or action.get("Secret") != self.secret:
                    await asyncio.sleep(self.auth_delay)
                    writer.write(
                        render(
                            [
                                ("Response", "Error"),
                                ("ActionID", aid),
                                ("Message", "Authentication failed"),
                            ]
                        )
                    )
                    await writer.drain()
                    return False
                writer.write(
                    render(
                        [
                            ("Response", "Success"),
                            ("ActionID", aid),
                            ("Message", "Authentication accepted"),
                        ]
                    )
                )
                self._logged_in.add(writer)
            case _ if writer not in self._logged_in:
                writer.write(
                    render(
                        [("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")]
                    )
                )
            case "ping":
                writer.write(
                    render(
                        [
                            ("Response", "Success"),
                            ("ActionID", aid),
                            ("Ping", "Pong"),
                            ("Timestamp", "1795723300.000000"),
                        ]
                    )
                )
            case "coreshowchannels":
                self._show_channels(aid, writer)
            case "hangup":
                await self._hangup(action.get("Channel"), aid, writer)
            case "getvar":
                self._getvar(action.get("Channel"), action.get("Variable"), aid, writer)
            case _:
                writer.write(
                    render(
                        [
                            ("Response", "Error"),
                            ("ActionID", aid),
                            ("Message", "Invalid/unknown command"),
                        ]
                    )
                )
        await writer.drain()
        return True

    def _show_channels(self, aid: str, writer: asyncio.StreamWriter) -> None:
        writer.write(
            render(
                [
                    ("Response", "Success"),
                    ("ActionID", aid),
                    ("EventList", "start"),
                    ("Message", "Channels will follow"),
                ]
            )
        )
        template = recorded("Newchannel")
        for channel in self.channels.values():
            place = {"Context": channel.context, "Exten": channel.exten}
            fields = splice(
                template,
                Channel=channel.channel,
                Uniqueid=channel.uniqueid,
                **{name: value for name, value in place.items() if value is not None},
            )
            writer.write(
                render(
                    [
                        ("Event", "CoreShowChannel"),
                        ("ActionID", aid),
                        *[(n, v) for n, v in fields if n not in ("Event", "Privilege")],
                        ("Application", channel.application),
                        ("ApplicationData", channel.application_data),
                        ("Duration", channel.duration),
                        ("BridgeId", ""),
                    ]
                )
            )
        writer.write(
            render(
                [
                    ("Event", "CoreShowChannelsComplete"),
                    ("ActionID", aid),
                    ("EventList", "Complete"),
                    ("ListItems", str(len(self.channels))),
                ]
            )
        )

    def _getvar(self, name: str, variable: str, aid: str, writer: asyncio.StreamWriter) -> None:
        """As manager.c's action_getvar(): Success with Variable and Value, or No such channel."""
        found = [c for c in self.channels.values() if c.channel == name]
        if not found:
            writer.write(
                render([("Response", "Error"), ("ActionID", aid), ("Message", "No such channel")])
            )
            return
        value = found[0].variables.get(variable, "")
        writer.write(
            render(
                [
                    ("Response", "Success"),
                    ("ActionID", aid),
                    ("Variable", variable),
                    ("Value", value),
                ]
            )
        )

    async def _hangup(self, name: str, aid: str, writer: asyncio.StreamWriter) -> None:
        found = [c for c in self.channels.values() if name in (c.channel, c.uniqueid)]
        if not found:
            writer.write(
                render([("Response", "Error"), ("ActionID", aid), ("Message", "No such channel")])
            )
            return
        writer.write(
            render([("Response", "Success"), ("ActionID", aid), ("Message", "Channel Hungup")])
        )
        await writer.drain()
        channel = found[0]
        if not self.media and channel.spying_on in self.channels:
            self._held.add(channel.uniqueid)  # still listed, still in ChanSpy
            return
        await self.hang_up(channel.uniqueid, requested=True)
