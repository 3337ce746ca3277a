"""FastAGI without I/O: bytes from Asterisk in, typed values out; commands in, bytes out.

The rules, as Asterisk 22's ``res/res_agi.c`` applies them (``protocol-notes.md`` sections 1, 6):

- Every line ends with LF. Asterisk never sends CR; a stray CR at the very end of a line we read is
  dropped, and we never send one (Asterisk would keep it as part of the last token).
- Asterisk first sends the environment: ``agi_<key>: <value>`` lines, ending at the first empty
  line. ``agi_network`` and ``agi_network_script`` come before ``agi_request``. Values are raw
  bytes (UTF-8 is not guaranteed, and an LF inside a value starts a new "line"), so they are
  decoded with surrogateescape, the first occurrence of a key wins, and repeated keys are kept
  aside so that a handler can refuse to decide on an injected environment.
- Then strict lock-step: the server sends ONE command line, Asterisk answers ONE reply and waits.
  A reply is one line (``200 result=...``, ``510 ...``, ``511 ...``) or a ``520-`` block that ends
  at the first line starting with ``520 ``.
- The only unsolicited line is ``HANGUP``, which may arrive before any reply. After it, or after a
  ``511``, the channel is dead: only the dead-OK commands still work.
- Every read is bounded: a line longer than ``max_line``, an environment or a usage block larger
  than ``max_env``, or anything that is not the protocol raises ``AgiProtocolError`` — the only
  exception this module raises on input.
- The reply to ``GET DATA`` carries what the caller typed (a PIN): from the moment such a command
  is sent until the next one, no reply text reaches an error message or a ``repr`` — well-formed,
  malformed, 5xx or a stray line after it, only its length and a known reply code are shown.

``AgiConnection`` is the state machine; the server feeds it bytes and acts on its events.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import Final, NamedTuple

MAX_COMMAND_BYTES: Final = 8190
"""Asterisk reads 8191 bytes including the LF (2047 before 22.6.0 / 20.16.0)."""
MAX_COMMAND_TOKENS: Final = 100
"""Asterisk overflows its stack past 127 quoted tokens (asterisk/asterisk#2069): stay far below."""
DEFAULT_MAX_LINE: Final = 8192
DEFAULT_MAX_ENV: Final = 65536


class AgiProtocolError(Exception):
    """The peer did not speak FastAGI as Asterisk does, or a command cannot be sent safely."""


# --------------------------------------------------------------------------- the environment

_LINE = re.compile(r"agi_[A-Za-z0-9_]+: [^\n]*")
_BLOCK = re.compile(r"(?:agi_[A-Za-z0-9_]+: [^\n]*\n)*agi_[A-Za-z0-9_]+: [^\n]*")


class AgiEnvironment(NamedTuple):
    """The ``agi_*`` block Asterisk sends first, decoded (surrogateescape) and typed.

    Immutable; a named tuple rather than a frozen dataclass because one is built per session
    (a frozen dataclass sets each field through ``object.__setattr__``)."""

    values: Mapping[str, str]
    """Every key as first received (read-only)."""
    args: tuple[str, ...]
    """``agi_arg_1`` .. ``agi_arg_N`` in order (the AGI() arguments after the URL)."""
    action: str
    """The URL path after the host, query and surrounding slashes stripped: ``pickup``."""
    duplicate_keys: tuple[str, ...] = ()
    """Keys received more than once: only an LF inside a value does that (an injection)."""

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    def arg(self, number: int) -> str:
        """``agi_arg_<number>`` (1-based), ``""`` when absent."""
        return self.args[number - 1] if 0 < number <= len(self.args) else ""

    @property
    def network_script(self) -> str:
        return self.values.get("agi_network_script", "")

    @property
    def request(self) -> str:
        return self.values.get("agi_request", "")

    @property
    def channel(self) -> str:
        return self.values.get("agi_channel", "")

    @property
    def uniqueid(self) -> str:
        return self.values.get("agi_uniqueid", "")

    @property
    def callerid(self) -> str:
        return self.values.get("agi_callerid", "")

    @property
    def calleridname(self) -> str:
        return self.values.get("agi_calleridname", "")

    @property
    def context(self) -> str:
        return self.values.get("agi_context", "")

    @property
    def extension(self) -> str:
        return self.values.get("agi_extension", "")


def action_of(script: str) -> str:
    """``"pickup?client=acme"`` -> ``"pickup"`` (Asterisk passes the query raw)."""
    return script.partition("?")[0].strip("/")


# Asterisk passes at most 127 AGI() arguments (MAX_AGI_ARGS); the names, made once.
_ARG_KEYS: Final = tuple(f"agi_arg_{number}" for number in range(1, 128))


def parse_environment(block: bytes) -> AgiEnvironment:
    """Parse the environment lines (the block without its final empty line)."""
    text = block.decode("utf-8", "surrogateescape")
    if "\r" in text:  # never sent by Asterisk; tolerated at the very end of a line only
        text = text.replace("\r\n", "\n").removesuffix("\r")
    if _BLOCK.fullmatch(text) is None:  # one pass in C, then no per-line checks
        bad = next(line for line in text.split("\n") if _LINE.fullmatch(line) is None)
        raise AgiProtocolError(f"not an environment line: {_excerpt(bad)}")
    lines = text.split("\n")
    values: dict[str, str] = {}
    for line in reversed(lines):  # reversed: the first occurrence of a key wins
        key, _, value = line.partition(": ")
        values[key] = value
    duplicates: tuple[str, ...] = ()
    if len(values) != len(lines):
        counts = Counter(line.partition(": ")[0] for line in lines)
        duplicates = tuple(key for key, count in counts.items() if count > 1)
    args: list[str] = []
    for key in _ARG_KEYS:
        if (arg := values.get(key)) is None:
            break
        args.append(arg)
    if "agi_network_script" in values:
        action = action_of(values["agi_network_script"])
    else:
        # Asterisk omits agi_network_script when the URL has nothing after the host.
        _, _, rest = values.get("agi_request", "").partition("://")
        action = action_of(rest.partition("/")[2])
    return AgiEnvironment(MappingProxyType(values), tuple(args), action, duplicates)


# --------------------------------------------------------------------------- replies


class Reply(NamedTuple):
    """One answer to one command (a named tuple: one is built for every command)."""

    code: int
    """200 done, 510 unknown command, 511 dead channel, 520 bad syntax (with ``usage``)."""
    result: str | None = None
    """``result=`` of a 200, as text: not always an integer (``GET DATA`` returns digits)."""
    data: str | None = None
    """The ``(...)`` part of a 200, matched greedily to the last ``)``."""
    endpos: int | None = None
    text: str = ""
    """The line after the code (for errors and logs, through ``shown``)."""
    usage: tuple[str, ...] = ()
    """The lines between ``520-`` and ``520 ``."""
    secret: bool = False
    """The reply to a secret-bearing command (``GET DATA``): ``shown`` and ``repr`` withhold it."""

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def shown(self) -> str:
        """The code and text as they may appear in an error message or a log line."""
        if not self.secret:
            return f"{self.code} {self.text}"
        code = str(self.code)
        return _withheld(len(self.text) + 4, code if code in _KNOWN_CODES else "none")

    def __repr__(self) -> str:
        # Written out: typing.NamedTuple methods cannot call super().
        if self.secret:
            return f"Reply(code={self.code}, secret=True, text={self.shown!r})"
        pairs = zip(self._fields, self, strict=True)
        fields = ", ".join(f"{name}={value!r}" for name, value in pairs)
        return f"Reply({fields})"

    @property
    def result_int(self) -> int | None:
        """``result=`` as an integer, ``None`` when it is not one."""
        text = self.result
        if text is None or _INTEGER.fullmatch(text) is None:
            return None
        return int(text)


_ENDPOS = re.compile(r"endpos=(-?[0-9]+)")
_INTEGER = re.compile(r"-?[0-9]+")


def parse_reply_line(line: str, *, secret: bool = False) -> Reply:
    """Parse one reply line (``200 result=1 (value) endpos=0``, ``510 ...``, ``520 ...``).

    ``secret``: the line answers a secret-bearing command; an error then shows its length only.
    """
    code_text = line[:3]
    if len(code_text) != 3 or not (code_text.isascii() and code_text.isdigit()):
        raise AgiProtocolError(f"not a reply: {_shown(line, secret)}")
    code = int(code_text)
    if line[3:4] not in ("", " ", "-"):
        raise AgiProtocolError(f"not a reply: {_shown(line, secret)}")
    rest = line[4:]
    if code != 200:
        return Reply(code, text=rest, secret=secret)
    if not rest.startswith("result="):
        raise AgiProtocolError(f"200 without result=: {_shown(line, secret)}")
    result, _, tail = rest[7:].partition(" ")
    data: str | None = None
    endpos: int | None = None
    if tail.startswith("("):
        close = tail.rfind(")")
        if close < 0:
            raise AgiProtocolError(f"unterminated (data): {_shown(line, secret)}")
        data = tail[1:close]
        tail = tail[close + 1 :]
    tail = tail.strip(" ")
    if (match := _ENDPOS.fullmatch(tail)) is not None:
        endpos = int(match.group(1))
    return Reply(code, result, data, endpos, rest, secret=secret)


# --------------------------------------------------------------------------- commands

# Tokens made only of these need no quotes (the transcripts' `GET VARIABLE CALLERID(num)`).
_PLAIN = re.compile(r"[A-Za-z0-9_\-./@&*+:=,()]+")
_COMMAND_WORDS = re.compile(r"[A-Z]+( [A-Z]+)*")


def quote(value: str) -> str:
    """One AGI token for ``value``: as is when plain, else ``"..."`` with ``\\`` and ``"`` escaped.

    Asterisk's ``parse_args()`` removes the quotes and the escaping backslashes. CR, LF and NUL
    cannot be carried at all (the line would end, or the token be cut) and are refused.
    """
    if _PLAIN.fullmatch(value) is not None:
        return value
    if "\n" in value or "\r" in value or "\0" in value:
        raise AgiProtocolError("a command argument cannot carry CR, LF or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_command(command: str, *args: str) -> bytes:
    """``encode_command("SET VARIABLE", "X", "a b")`` -> ``b'SET VARIABLE X "a b"\\n'``."""
    if _COMMAND_WORDS.fullmatch(command) is None:
        raise AgiProtocolError(f"not a command name: {command!r}")
    if command.count(" ") + 1 + len(args) > MAX_COMMAND_TOKENS:
        raise AgiProtocolError("too many command arguments")
    try:
        line = " ".join((command, *map(quote, args))).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:  # a surrogate that no byte decoded into
        raise AgiProtocolError("a command argument is not encodable") from exc
    if len(line) > MAX_COMMAND_BYTES:
        raise AgiProtocolError(f"command longer than {MAX_COMMAND_BYTES} bytes")
    return line + b"\n"


# An application argument list (``MSet(a=1,b=2)``) is split on commas outside () [] and "",
# with quotes and backslashes removed: values made of these characters pass through unchanged.
_APP_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_APP_VALUE = r"[A-Za-z0-9_\-.+*&/@:]*"
_APP_PAIR = re.compile(f"{_APP_NAME}={_APP_VALUE}")
# Names and values hold no "," and the argument has one "," between items: then one match of the
# whole argument checks every name and value at once (a "," inside a value would add one).
_MSET_ARGUMENT = re.compile(f"{_APP_NAME}={_APP_VALUE}(?:,{_APP_NAME}={_APP_VALUE})*")


def format_mset(pairs: Iterable[tuple[str, str]]) -> str:
    """``MSet``'s argument for ``pairs``: ``"A=1,B=,C=x&y"``, set in order by one ``EXEC MSet``.

    Raises ``AgiProtocolError`` when a name or value would need the dialplan's own escaping; the
    caller then falls back to one ``SET VARIABLE`` per pair.
    """
    items = [f"{name}={value}" for name, value in pairs]
    if not items:
        raise AgiProtocolError("MSet needs at least one pair")
    argument = ",".join(items)
    if argument.count(",") != len(items) - 1 or _MSET_ARGUMENT.fullmatch(argument) is None:
        bad = next((item for item in items if _APP_PAIR.fullmatch(item) is None), items[0])
        raise AgiProtocolError(f"{bad.partition('=')[0]}: value not safe inside MSet()")
    return argument


SECRET_REPLY_COMMANDS: Final = frozenset({"GET DATA"})
"""Commands whose reply carries what the caller typed: the PIN of a phone replace."""
_SECRET_PREFIXES: Final = tuple(
    prefix
    for name in SECRET_REPLY_COMMANDS
    for prefix in (f"{name} ".encode(), f"{name}\n".encode())
)


def bears_secret(line: bytes) -> bool:
    """Whether the reply to the command ``line`` may hold a secret (Asterisk ignores case)."""
    return line[:16].upper().startswith(_SECRET_PREFIXES)


# Commands Asterisk still runs on a dead channel (res_agi.c `commands[]`, the `dead` flag).
DEAD_OK_COMMANDS: Final = frozenset(
    {
        "ASYNCAGI BREAK",
        "DATABASE DEL",
        "DATABASE DELTREE",
        "DATABASE GET",
        "DATABASE PUT",
        "EXEC",
        "GET FULL VARIABLE",
        "GET VARIABLE",
        "NOOP",
        "SET VARIABLE",
        "VERBOSE",
        "SPEECH DESTROY",
        "SPEECH UNLOAD GRAMMAR",
    }
)


# --------------------------------------------------------------------------- the state machine


class AgiState(Enum):
    ENVIRONMENT = "environment"
    """Reading the environment block."""
    IDLE = "idle"
    """Waiting for the server's next command (only ``HANGUP`` may arrive)."""
    AWAITING_REPLY = "awaiting_reply"
    CLOSED = "closed"
    """The peer closed its side."""


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Marker("NEED_DATA")
"""No complete event in the buffer yet."""
HANGUP: Final = _Marker("HANGUP")
"""Asterisk's out-of-band ``HANGUP`` line: the caller hung up (or the session is ending)."""
CLOSED: Final = _Marker("CLOSED")
"""The peer closed the connection at a line boundary."""

Event = AgiEnvironment | Reply | _Marker


class AgiConnection:
    """The protocol state of one FastAGI connection, without I/O.

    ``receive_data(b"")`` means end of stream. ``next_event()`` returns an ``AgiEnvironment``, a
    ``Reply``, ``HANGUP``, ``CLOSED`` or ``NEED_DATA``. ``send(line)`` checks that a command may be
    sent now (never two in flight) and returns the bytes to write, in one write.
    """

    __slots__ = (
        "_buffer",
        "_eof",
        "_max_env",
        "_max_line",
        "_secret",
        "_usage",
        "_usage_bytes",
        "_usage_code",
        "_usage_text",
        "dead",
        "hangup_seen",
        "state",
    )

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_env: int = DEFAULT_MAX_ENV) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._max_line = max_line
        self._max_env = max_env
        self._usage: list[str] | None = None
        self._usage_code = ""
        self._usage_text = ""
        self._usage_bytes = 0
        self._secret = False
        """The last command sent bears a secret (``bears_secret``): its reply, and any line
        after it until the next command, are never shown."""
        self.state = AgiState.ENVIRONMENT
        self.hangup_seen = False
        """An out-of-band ``HANGUP`` line arrived."""
        self.dead = False
        """``HANGUP`` or a ``511`` was seen: only dead-OK commands still work."""

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        if self._eof:
            raise AgiProtocolError("data after end of stream")
        self._buffer += data

    def send(self, line: bytes) -> bytes:
        """Account for one encoded command line (from ``encode_command``) about to be written."""
        if self.state is not AgiState.IDLE:
            raise AgiProtocolError(f"cannot send a command while {self.state.value}")
        self.state = AgiState.AWAITING_REPLY
        self._secret = bears_secret(line)
        return line

    def next_event(self) -> Event:
        if self.state is AgiState.ENVIRONMENT:
            return self._next_environment()
        if self.state is AgiState.CLOSED:
            return CLOSED
        while True:
            line = self._next_line()
            if line is None:
                if self._eof:
                    self.state = AgiState.CLOSED
                    if self._buffer or self._usage is not None:
                        raise AgiProtocolError("connection closed in the middle of a reply")
                    return CLOSED
                return NEED_DATA
            if line == "HANGUP" and self._usage is None:
                self.hangup_seen = self.dead = True
                return HANGUP
            if self.state is not AgiState.AWAITING_REPLY:
                raise AgiProtocolError(f"unsolicited line: {_shown(line, self._secret)}")
            reply = self._reply(line)
            if reply is None:
                continue  # inside a 520- block, or a provisional "100 Trying"
            self.state = AgiState.IDLE
            if reply.code == 511:
                self.dead = True
            return reply

    # -- internals

    def _next_environment(self) -> Event:
        buffer = self._buffer
        end = 0 if buffer[:1] == b"\n" else buffer.find(b"\n\n")
        if end < 0:
            if len(buffer) > self._max_line and buffer.rfind(b"\n") < len(buffer) - self._max_line:
                raise AgiProtocolError(f"environment line longer than {self._max_line} bytes")
            if len(buffer) > self._max_env:
                raise AgiProtocolError(f"environment larger than {self._max_env} bytes")
            # Refuse a stranger at once rather than at the deadline: every line starts "agi_".
            for line in bytes(buffer).split(b"\n"):
                if line[:4] != b"agi_"[: len(line)]:
                    raise AgiProtocolError(
                        f"not an environment line: {_excerpt(line.decode('latin-1'))}"
                    )
            if self._eof:
                self.state = AgiState.CLOSED
                if buffer:
                    raise AgiProtocolError(f"closed after {len(buffer)} bytes of environment")
                return CLOSED
            return NEED_DATA
        if end == 0:
            raise AgiProtocolError("empty environment")
        if end > self._max_env:
            raise AgiProtocolError(f"environment larger than {self._max_env} bytes")
        block = bytes(buffer[:end])
        del buffer[: end + 2]
        if self._max_line < end and any(len(x) > self._max_line for x in block.split(b"\n")):
            raise AgiProtocolError(f"environment line longer than {self._max_line} bytes")
        environment = parse_environment(block)
        self.state = AgiState.IDLE
        return environment

    def _next_line(self) -> str | None:
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > self._max_line:
                raise AgiProtocolError(f"reply line longer than {self._max_line} bytes")
            return None
        if end > self._max_line:
            raise AgiProtocolError(f"reply line longer than {self._max_line} bytes")
        raw = buffer[:end]
        del buffer[: end + 1]
        if raw.endswith(b"\r"):
            del raw[-1:]
        return raw.decode("utf-8", "surrogateescape")

    def _reply(self, line: str) -> Reply | None:
        usage = self._usage
        if usage is not None:
            if line.startswith(self._usage_code + " "):
                self._usage = None
                return Reply(
                    int(self._usage_code),
                    text=self._usage_text,
                    usage=tuple(usage),
                    secret=self._secret,
                )
            self._usage_bytes += len(line) + 1
            if self._usage_bytes > self._max_env:
                raise AgiProtocolError(f"usage block larger than {self._max_env} bytes")
            usage.append(line)
            return None
        if line[3:4] == "-":
            parse_reply_line(line, secret=self._secret)  # validates the code
            self._usage = []
            self._usage_code = line[:3]
            self._usage_text = line[4:]
            self._usage_bytes = len(line)
            return None
        reply = parse_reply_line(line, secret=self._secret)
        if reply.code == 100:  # "100 result=0 Trying...": the real reply follows
            return None
        return reply


_KNOWN_CODES: Final = frozenset({"100", "200", "510", "511", "520"})


def _shown(line: str, secret: bool) -> str:
    """``_excerpt(line)``, or for a secret-bearing reply its length and code only.

    The code is named only when it is one Asterisk sends and stands apart from the rest: the
    first three characters of a malformed line may as well be the caller's first digits.
    """
    if not secret:
        return _excerpt(line)
    code = line[:3] if line[:3] in _KNOWN_CODES and line[3:4] in ("", " ", "-") else "none"
    return _withheld(len(line), code)


def _withheld(length: int, code: str) -> str:
    return f"line withheld ({length} characters, code {code}: it answers GET DATA)"


def _excerpt(text: str, limit: int = 60) -> str:
    """A loggable view of untrusted text: escaped, and cut at ``limit`` characters."""
    short = text[:limit]
    return ascii(short) + ("..." if len(text) > limit else "")
