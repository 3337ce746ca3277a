"""One FastAGI session as a handler sees it: the environment and typed, awaitable commands.

Each command is written in one write, never pipelined, and awaits exactly one reply (``HANGUP``
lines are skipped and recorded by the protocol state). Errors are ``AgiSessionError``s:
``AgiChannelDead`` (511, or a media command after the caller hung up), ``AgiCommandFailed``
(510/520: a bug on our side), ``AgiTimeout`` and ``AgiConnectionLost``.

An error's message is safe to log: the reply to a secret-bearing command (``GET DATA``, which
collects a PIN) is marked by the protocol and shown by its length only (``Reply.shown``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from callgate.agi.protocol import (
    DEAD_OK_COMMANDS,
    AgiEnvironment,
    AgiProtocolError,
    Reply,
    encode_command,
    format_mset,
)


class AgiSessionError(Exception):
    """A command could not be carried out in this session."""


# Named after the condition, like ConnectionResetError's peers ConnectionAborted...: the except
# clauses read as sentences (`except AgiChannelDead:`).
class AgiTimeout(AgiSessionError):  # noqa: N818
    pass


class AgiConnectionLost(AgiSessionError):  # noqa: N818
    pass


class AgiChannelDead(AgiSessionError):  # noqa: N818
    """The channel hung up: Asterisk answered 511, or we did not send a media command at all."""


class AgiCommandFailed(AgiSessionError):  # noqa: N818
    def __init__(self, command: str, reply: Reply) -> None:
        super().__init__(f"{command}: {reply.shown}")
        self.reply = reply


class CommandLink(Protocol):
    """What a session needs from its connection (the server's per-connection protocol)."""

    @property
    def dead(self) -> bool: ...

    @property
    def hangup_seen(self) -> bool: ...

    @property
    def reply_timeout(self) -> float: ...

    async def roundtrip(self, line: bytes, reply_within: float) -> Reply: ...


def variable_commands(pairs: tuple[tuple[str, str], ...]) -> tuple[bytes, ...]:
    """The commands setting ``pairs`` in order: one ``EXEC MSet`` when the line fits, several
    ``EXEC MSet`` (in order, each as long as fits) when it does not, one ``SET VARIABLE`` per
    pair when a value needs escaping that ``MSet()`` cannot carry.

    The last pair is the one a dialplan acts on (``CALLGATE_DECISION``): when it takes more than
    one command, the first one also empties the last pair's variable, so a session cut between
    two commands leaves it empty, never the value a previous AGI set. Raises
    ``AgiProtocolError`` when a pair cannot be sent in one command at all.
    """
    if not pairs:
        return ()
    try:
        format_mset(pairs)
    except AgiProtocolError:
        return tuple(encode_command("SET VARIABLE", name, value) for name, value in pairs)
    try:
        return (encode_command("EXEC", "MSet", format_mset(pairs)),)
    except AgiProtocolError:
        if len(pairs) == 1:
            raise
    last = pairs[-1][0]
    commands: list[bytes] = []
    group: list[tuple[str, str]] = [(last, "")]
    line = _mset_line(group)
    for pair in pairs:
        longer = _mset_line([*group, pair])
        if longer is None:
            if line is None:
                raise AgiProtocolError(f"{pair[0]}: too long for one command")
            commands.append(line)
            group = [pair]
            longer = _mset_line(group)
            if longer is None:
                raise AgiProtocolError(f"{pair[0]}: too long for one command")
        else:
            group.append(pair)
        line = longer
    assert line is not None
    commands.append(line)
    return tuple(commands)


def _mset_line(pairs: list[tuple[str, str]]) -> bytes | None:
    try:
        return encode_command("EXEC", "MSet", format_mset(pairs))
    except AgiProtocolError:
        return None


class AgiSession:
    __slots__ = ("_link", "environment")

    def __init__(self, link: CommandLink, environment: AgiEnvironment) -> None:
        self._link = link
        self.environment = environment

    @property
    def dead(self) -> bool:
        """The caller hung up (a ``HANGUP`` line or a 511 was seen)."""
        return self._link.dead

    @property
    def hangup_seen(self) -> bool:
        return self._link.hangup_seen

    async def command(self, line: bytes, *, reply_within: float | None = None) -> Reply:
        """Send one pre-encoded command line (``encode_command``) and return its reply as is.

        ``reply_within``: seconds allowed for the reply (default: the server's reply timeout).
        """
        return await self._link.roundtrip(line, reply_within or self._link.reply_timeout)

    async def run(self, command: str, *args: str, reply_within: float | None = None) -> Reply:
        """Send ``command`` with ``args`` quoted; a reply other than 200 raises."""
        if self._link.dead and command not in DEAD_OK_COMMANDS:
            raise AgiChannelDead(f"{command}: the channel has hung up")
        line = encode_command(command, *args)
        return await self._exchange(command, line, reply_within)

    async def _exchange(self, command: str, line: bytes, reply_within: float | None) -> Reply:
        reply = await self.command(line, reply_within=reply_within)
        if reply.code == 200:
            return reply
        if reply.code == 511:
            raise AgiChannelDead(f"{command}: {reply.shown}")
        raise AgiCommandFailed(command, reply)

    async def set_variable(self, name: str, value: str) -> None:
        await self.run("SET VARIABLE", name, value)

    async def set_variables(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Set every pair, in order: one ``EXEC MSet`` round trip when the values allow it.

        ``MSet`` sets all the pairs inside one command, so a session that dies half-way leaves
        none of them set; when a value needs escaping it falls back to ``SET VARIABLE`` each
        (``variable_commands``).
        """
        await self.send_variables(variable_commands(tuple(pairs)))

    async def send_variables(self, commands: Iterable[bytes]) -> None:
        """Send ``variable_commands``' lines, each after the reply to the one before."""
        for line in commands:
            # Sent on a dead channel too: EXEC and SET VARIABLE work there.
            if line.startswith(b"EXEC "):
                reply = await self._exchange("EXEC", line, None)
                if reply.result == "-2":  # the application is missing: nothing was set
                    raise AgiCommandFailed("EXEC MSet", reply)
            else:
                await self._exchange("SET VARIABLE", line, None)

    async def get_variable(self, name: str) -> str | None:
        """The value, or ``None`` when the variable is not set."""
        reply = await self.run("GET VARIABLE", name)
        return reply.data if reply.result == "1" else None

    async def get_full_variable(self, expression: str, channel: str | None = None) -> str | None:
        """``expression`` (``${...}``) evaluated by Asterisk; ``None`` if the channel is missing."""
        args = (expression,) if channel is None else (expression, channel)
        reply = await self.run("GET FULL VARIABLE", *args)
        return reply.data if reply.result == "1" else None

    async def get_data(self, file: str, timeout_ms: int, max_digits: int) -> str:
        """Play ``file`` and collect up to ``max_digits`` DTMF digits; ``""`` when none came."""
        # Asterisk waits up to timeout_ms for each digit after playing the file.
        deadline = timeout_ms / 1000 * (max_digits + 1) + self._link.reply_timeout
        reply = await self.run(
            "GET DATA", file, str(timeout_ms), str(max_digits), reply_within=deadline
        )
        digits = reply.result or ""
        if digits == "-1":
            raise AgiChannelDead("GET DATA: the caller hung up")
        return digits

    async def answer(self) -> bool:
        return (await self.run("ANSWER")).result == "0"

    async def database_put(self, family: str, key: str, value: str) -> bool:
        return (await self.run("DATABASE PUT", family, key, value)).result == "1"

    async def database_get(self, family: str, key: str) -> str | None:
        reply = await self.run("DATABASE GET", family, key)
        return reply.data if reply.result == "1" else None

    async def database_del(self, family: str, key: str) -> bool:
        return (await self.run("DATABASE DEL", family, key)).result == "1"

    async def exec(self, application: str, arguments: str = "") -> Reply:
        """``EXEC``: ``result`` is the application's return (``-2``: no such application)."""
        args = (application, arguments) if arguments else (application,)
        return await self.run("EXEC", *args)

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.run("VERBOSE", message, str(level))
