"""A fake Asterisk that calls a FastAGI server over loopback, as Asterisk 22 does.

Two ways to use it:

- ``replay(port, transcript)``: send a recorded session (``tests/transcripts/agi/*.txt``) byte for
  byte — the environment line by line, then for each recorded command, read the server's line and
  answer the recorded reply bytes. The lines the server sent are returned for comparison.
- ``call(port, environment, channel)``: act like Asterisk: the environment, then strictly one
  reply per command from a model of the channel (``FakeChannel``: variables, AstDB, dead mode,
  DTMF, when the caller hangs up). It tokenizes like ``parse_args()``, runs ``MSet``/``Set`` the way
  ``pbx_builtin_setvar_multiple()`` splits its arguments, answers ``520-`` usage blocks, ``510``,
  ``511`` on a dead channel, sends the asynchronous ``HANGUP`` line, ends on a ``failure`` line
  with FAILURE, and writes a final ``HANGUP`` before closing, as ``run_agi()`` does.

Every line ends with LF only; Asterisk reads at most 8191 bytes of a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

TRANSCRIPTS: Final = Path(__file__).parent / "transcripts" / "agi"

MAX_COMMAND_LINE: Final = 8191
DEAD: Final = b"511 Command Not Permitted on a dead channel or intercept routine\n"
UNKNOWN: Final = b"510 Invalid or unknown command\n"
HANGUP_LINE: Final = b"HANGUP\n"

# res_agi.c commands[]: (words, dead-OK)
_COMMANDS: Final = (
    (("ANSWER",), False),
    (("CHANNEL", "STATUS"), False),
    (("DATABASE", "DEL"), True),
    (("DATABASE", "GET"), True),
    (("DATABASE", "PUT"), True),
    (("EXEC",), True),
    (("GET", "DATA"), False),
    (("GET", "FULL", "VARIABLE"), True),
    (("GET", "VARIABLE"), True),
    (("HANGUP",), False),
    (("NOOP",), True),
    (("SET", "VARIABLE"), True),
    (("VERBOSE",), True),
)
_BY_LENGTH: Final = sorted(_COMMANDS, key=lambda entry: -len(entry[0]))  # longest match first
_USAGE: Final[dict[tuple[str, ...], str]] = {
    ("SET", "VARIABLE"): "Sets a variable to the current channel.",
}


# --------------------------------------------------------------------------- recorded sessions


@dataclass(frozen=True)
class Transcript:
    name: str
    environment: tuple[bytes, ...]
    """The environment lines as sent, the final empty line included."""
    exchanges: tuple[tuple[bytes, bytes], ...]
    """(the command line the server sent, every byte Asterisk answered before the next one)."""

    @property
    def environment_bytes(self) -> bytes:
        return b"".join(self.environment)


def load_transcript(name: str) -> Transcript:
    raw = (TRANSCRIPTS / name).read_bytes()
    environment: list[bytes] = []
    exchanges: list[tuple[bytes, bytearray]] = []
    for line in raw.splitlines(keepends=True):
        direction, payload = line[:2], line[2:]
        if direction == b"< ":
            if exchanges:
                exchanges[-1][1].extend(payload)
            else:
                environment.append(payload)
        elif direction == b"> ":
            exchanges.append((payload, bytearray()))
        else:
            raise ValueError(f"{name}: unexpected line {line!r}")
    return Transcript(
        name, tuple(environment), tuple((cmd, bytes(reply)) for cmd, reply in exchanges)
    )


def environment_with(transcript: Transcript, **changes: str | None) -> bytes:
    """The transcript's environment with some ``agi_*`` values replaced (``None`` removes).

    ``args=("acme", "100", "101")`` replaces every ``agi_arg_N`` line.
    """
    args = changes.pop("args", None)
    lines: list[bytes] = []
    for line in transcript.environment[:-1]:
        key = line.partition(b": ")[0].decode()
        if args is not None and key.startswith("agi_arg_"):
            continue
        if key in changes:
            value = changes[key]
            if value is not None:
                lines.append(f"{key}: {value}\n".encode())
        else:
            lines.append(line)
    if args is not None:
        lines += [f"agi_arg_{i}: {value}\n".encode() for i, value in enumerate(args, 1)]
    return b"".join(lines) + b"\n"


def request_environment(action: str, *args: str, name: str = "commands-and-replies.txt") -> bytes:
    """A recorded environment asking ``agi://127.0.0.1:4573/<action>`` with ``args``."""
    transcript = load_transcript(name)
    return environment_with(
        transcript,
        agi_network_script=action,
        agi_request=f"agi://127.0.0.1:4573/{action}",
        args=args,  # type: ignore[arg-type]
    )


async def replay(port: int, transcript: Transcript, *, read_within: float = 5.0) -> list[bytes]:
    """Play a recorded session; return the command lines the server sent (LF included)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: list[bytes] = []
    try:
        for line in transcript.environment:  # one write per line, as setup_env() does
            writer.write(line)
            await writer.drain()
        for _command, reply in transcript.exchanges:
            line = await asyncio.wait_for(reader.readline(), read_within)
            if not line:
                break
            sent.append(line)
            writer.write(reply)
            await writer.drain()
        # run_agi(): the server closes, Asterisk writes a last HANGUP and closes too.
        rest = await asyncio.wait_for(reader.read(), read_within)
        if rest:
            sent.append(rest)
        with contextlib.suppress(ConnectionError):
            writer.write(HANGUP_LINE)
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return sent


# --------------------------------------------------------------------------- acting like Asterisk


def parse_args(line: bytes) -> list[bytes]:
    """res_agi.c ``parse_args()``: space/TAB separate, ``"`` toggles quoting, ``\\`` escapes."""
    args: list[bytes] = []
    current = bytearray()
    quoted = escaped = started = False
    for byte in line:
        char = bytes((byte,))
        if escaped:
            current += char
            escaped = False
        elif char == b"\\":
            escaped = started = True
        elif char == b'"':
            quoted = not quoted
            started = True
        elif char in (b" ", b"\t") and not quoted:
            if started:
                args.append(bytes(current))
                current, started = bytearray(), False
        else:
            current += char
            started = True
    if started:
        args.append(bytes(current))
    return args


def separate_app_args(data: str, delim: str = ",", *, remove_chars: bool = True) -> list[str]:
    """main/app.c ``__ast_app_separate_args()``: split on ``delim`` outside () [] and quotes."""
    args: list[str] = []
    current: list[str] = []
    paren = bracket = 0
    quote = escaped = False
    ended_on_delim = False
    for char in data:
        ended_on_delim = False
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "(":
            paren += 1
        elif char == ")":
            paren = max(paren - 1, 0)
        elif char == "[":
            bracket += 1
        elif char == "]":
            bracket = max(bracket - 1, 0)
        elif char == '"' and delim != '"':
            quote = not quote
            if remove_chars:
                continue
        elif char == "\\":
            if remove_chars:
                escaped = True
                continue
            current.append(char)
            escaped = True
            continue
        elif char == delim and not paren and not quote and not bracket:
            args.append("".join(current))
            current = []
            ended_on_delim = True
            continue
        current.append(char)
    if current or ended_on_delim:
        args.append("".join(current))
    return args


@dataclass
class FakeChannel:
    """The channel a fake AGI() runs on, and what happens to it."""

    variables: dict[str, str] = field(default_factory=dict)
    astdb: dict[tuple[str, str], str] = field(default_factory=dict)
    dead: bool = False
    """Dead from the start, like an AGI run from the ``h`` extension (no HANGUP line then)."""
    hangup_after: int | None = None
    """The caller hangs up after this many commands: Asterisk sends ``HANGUP`` at once."""
    dtmf: list[str] = field(default_factory=list)
    """What the caller types at each GET DATA (``""``: nothing, a timeout)."""
    sounds: frozenset[str] | None = None
    """The prompts Asterisk can play (``None``: all). GET DATA with any other prompt answers
    ``200 result=-1`` at once, before reading a digit, and the channel stays up (a real
    Asterisk 22.10.1 without core sounds, ``agent-pass``); an empty prompt plays nothing."""
    reply_delay: float = 0.0
    """Seconds before each reply (a busy Asterisk)."""
    silent_after: int | None = None
    """Stop answering after this many commands (a wedged Asterisk)."""
    commands: list[bytes] = field(default_factory=list)
    """Every command line received, LF stripped."""
    agistatus: str = ""
    answered: bool = False


class _Ended(Exception):
    pass


async def call(
    port: int,
    environment: bytes,
    channel: FakeChannel | None = None,
    *,
    read_within: float = 5.0,
) -> FakeChannel:
    """Run one AGI() against the server at ``port``; return the channel afterwards."""
    channel = channel or FakeChannel()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2 * MAX_COMMAND_LINE)
    status = "SUCCESS"
    try:
        for line in environment.splitlines(keepends=True):
            writer.write(line)
        await writer.drain()
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), read_within)
            except (ConnectionError, ValueError):
                break
            if not line:
                break
            command = line.removesuffix(b"\n")
            if command[:7].lower() == b"failure":
                status = "FAILURE"
                break
            channel.commands.append(command)
            if channel.silent_after is not None and len(channel.commands) > channel.silent_after:
                await asyncio.wait_for(reader.read(), read_within)
                break
            if channel.reply_delay:
                await asyncio.sleep(channel.reply_delay)
            writer.write(_execute(channel, command))
            if (
                channel.hangup_after is not None
                and len(channel.commands) == channel.hangup_after
                and not channel.dead
            ):
                channel.dead = True
                writer.write(HANGUP_LINE)
            await writer.drain()
        if channel.dead and status == "SUCCESS" and channel.hangup_after is not None:
            status = "HANGUP"
        with contextlib.suppress(ConnectionError):
            writer.write(HANGUP_LINE)  # run_agi() on every session end
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    channel.agistatus = status
    return channel


def _execute(channel: FakeChannel, line: bytes) -> bytes:
    argv = parse_args(line)
    words = [arg.decode("utf-8", "surrogateescape") for arg in argv]
    upper = [word.upper() for word in words]
    found = next((entry for entry in _BY_LENGTH if tuple(upper[: len(entry[0])]) == entry[0]), None)
    if found is None:
        return UNKNOWN
    names, dead_ok = found
    if channel.dead and not dead_ok:
        return DEAD
    args = words[len(names) :]
    reply = _run(channel, names, args)
    if reply is None:
        usage = _USAGE.get(names, f"Usage: {' '.join(names)}")
        return (
            f"520-Invalid command syntax.  Proper usage follows:\n{usage}\n"
            "520 End of proper usage.\n"
        ).encode()
    return reply.encode("utf-8", "surrogateescape") + b"\n"


def _run(channel: FakeChannel, names: tuple[str, ...], args: list[str]) -> str | None:
    """The reply line for one command, or ``None`` for a usage error (520)."""
    match names:
        case ("SET", "VARIABLE"):
            if len(args) != 2:
                return None
            channel.variables[args[0]] = args[1]
            return "200 result=1"
        case ("GET", "VARIABLE"):
            if len(args) != 1:
                return None
            value = channel.variables.get(args[0])
            return "200 result=0" if value is None else f"200 result=1 ({value})"
        case ("GET", "FULL", "VARIABLE"):
            if len(args) not in (1, 2):
                return None
            expression = args[0]
            if expression.startswith("${") and expression.endswith("}"):
                expression = channel.variables.get(expression[2:-1], "")
            return f"200 result=1 ({expression})"
        case ("EXEC",):
            if not args:
                return None
            return f"200 result={_exec(channel, args[0], args[1] if len(args) > 1 else '')}"
        case ("DATABASE", "PUT"):
            if len(args) != 3:
                return None
            channel.astdb[(args[0], args[1])] = args[2]
            return "200 result=1"
        case ("DATABASE", "GET"):
            if len(args) != 2:
                return None
            value = channel.astdb.get((args[0], args[1]))
            return "200 result=0" if value is None else f"200 result=1 ({value})"
        case ("DATABASE", "DEL"):
            if len(args) != 2:
                return None
            return "200 result=1" if channel.astdb.pop((args[0], args[1]), None) else "200 result=0"
        case ("ANSWER",):
            channel.answered = True
            return "200 result=0"
        case ("GET", "DATA"):
            if not args:
                return None
            if args[0] and channel.sounds is not None and args[0] not in channel.sounds:
                return "200 result=-1"
            return f"200 result={channel.dtmf.pop(0) if channel.dtmf else ''}"
        case ("HANGUP",):
            channel.dead = True
            return "200 result=1"
        case ("CHANNEL", "STATUS"):
            return "200 result=6" if channel.answered else "200 result=4"
        case ("VERBOSE",):
            return "200 result=1" if args else None
        case ("NOOP",):
            return "200 result=0"
    return "510 Invalid or unknown command"


def _exec(channel: FakeChannel, application: str, data: str) -> int:
    match application.lower():
        case "mset":
            for pair in separate_app_args(data):
                parts = separate_app_args(pair, "=", remove_chars=False)
                if len(parts) == 2:
                    channel.variables[parts[0]] = parts[1]
            return 0
        case "set":
            name, sep, value = data.partition("=")
            if sep:
                channel.variables[name] = value
            return 0
        case "verbose" | "noop" | "wait":
            return 0
    return -2
