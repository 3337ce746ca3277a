"""A fake Asterisk channel for the replace tests: it speaks FastAGI over loopback as the
transcripts ``get-data-pin.txt`` and ``hangup-mid-session.txt`` show Asterisk 22 doing.

It sends the environment, then answers one command at a time from a small model of the
channel: its variables (``CALLGATE_EXT`` as the PJSIP endpoint's ``set_var`` would set it),
Asterisk's database (shared between calls, like the real AstDB), and a keypad script saying what
the caller does at each ``GET DATA``: digits, nothing (``200 result=``, or ``200 result=
(timeout)``), or hang up (``200 result=-1`` then the asynchronous ``HANGUP`` line; after that,
media commands get ``511``). Every command line received is kept, to check what went over the
wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Final

TIMEOUT: Final = "<timeout>"
"""No digits: ``200 result=`` exactly as in get-data-pin.txt."""
TIMEOUT_MARKED: Final = "<timeout-marked>"
"""No digits, the other form Asterisk uses: ``200 result= (timeout)``."""
HANGUP: Final = "<hangup>"
"""The caller hangs up while the prompt plays."""

_DEAD: Final = b"511 Command Not Permitted on a dead channel or intercept routine\n"
_DEAD_OK: Final = ("DATABASE", "EXEC", "GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "NOOP")


def parse_args(line: str) -> list[str]:
    """Asterisk's ``parse_args()``: spaces separate, ``"`` toggles quoting, ``\\`` escapes."""
    args: list[str] = []
    current: list[str] = []
    quoted = escaped = started = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = started = True
        elif ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                args.append("".join(current))
                current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        args.append("".join(current))
    return args


@dataclass
class Asterisk:
    """What outlives one call: the database, and every command line any call received."""

    astdb: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


@dataclass
class Call:
    """One AGI() call from a phone; ``variables`` ends up holding what callgate set."""

    action: str
    args: tuple[str, ...]
    variables: dict[str, str]
    keypad: list[str] = field(default_factory=list)
    dead: bool = False
    commands: list[str] = field(default_factory=list)
    uniqueid: str = "1795723250.23"

    @property
    def decision(self) -> tuple[str | None, str | None]:
        return self.variables.get("CALLGATE_DECISION"), self.variables.get("CALLGATE_REASON")


def environment(call: Call, port: int) -> bytes:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {call.action}",
        f"agi_request: agi://127.0.0.1:{port}/{call.action}",
        "agi_channel: PJSIP/acme_100-0000000b",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: {call.uniqueid}",
        "agi_version: 22.10.1",
        "agi_callerid: 999",  # forged caller ID: callgate must not care
        "agi_calleridname: unknown",
        "agi_callingpres: 67",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: unknown",
        "agi_rdnis: unknown",
        "agi_context: callgate-features",
        "agi_extension: *99",
        "agi_priority: 2",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140420366776000",
        *(f"agi_arg_{n}: {value}" for n, value in enumerate(call.args, 1)),
        "",
    ]
    return "".join(f"{line}\n" for line in lines).encode()


def _answer(asterisk: Asterisk, call: Call, line: str) -> bytes:
    words = parse_args(line)
    command = " ".join(words[:3]).upper()
    if call.dead and not command.startswith(_DEAD_OK):
        return _DEAD
    match [w.upper() for w in words[:2]], words[2:]:
        case ["ANSWER"], []:
            return b"200 result=0\n"
        case ["GET", "DATA"], [_file, _timeout, _max]:
            entry = call.keypad.pop(0) if call.keypad else TIMEOUT
            if entry == HANGUP:
                call.dead = True
                return b"200 result=-1\nHANGUP\n"
            if entry == TIMEOUT:
                return b"200 result=\n"
            if entry == TIMEOUT_MARKED:
                return b"200 result= (timeout)\n"
            return f"200 result={entry}\n".encode()
        case ["GET", "VARIABLE"], [name]:
            value = call.variables.get(name)
            return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()
        case ["SET", "VARIABLE"], [name, value]:
            call.variables[name] = value
            return b"200 result=1\n"
        case ["EXEC", "MSET"], [pairs]:
            for pair in pairs.split(","):
                name, _, value = pair.partition("=")
                call.variables[name] = value
            return b"200 result=0\n"
        case ["DATABASE", "PUT"], [family, key, value]:
            asterisk.astdb[f"{family}/{key}"] = value
            return b"200 result=1\n"
        case ["DATABASE", "DEL"], [family, key]:
            found = asterisk.astdb.pop(f"{family}/{key}", None) is not None
            return b"200 result=1\n" if found else b"200 result=0\n"
        case ["DATABASE", "GET"], [family, key]:
            value = asterisk.astdb.get(f"{family}/{key}")
            return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()
    return b"510 Invalid or unknown command\n"


async def place(asterisk: Asterisk, port: int, call: Call) -> Call:
    """Run one AGI session against the server on ``port``; return when the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(environment(call, port))
        await writer.drain()
        while line := await asyncio.wait_for(reader.readline(), 30):
            text = line.decode().rstrip("\n")
            call.commands.append(text)
            asterisk.lines.append(text)
            writer.write(_answer(asterisk, call, text))
            await writer.drain()
        # Asterisk writes one last HANGUP at every session end, then closes.
        with contextlib.suppress(ConnectionError):
            writer.write(b"HANGUP\n")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return call
