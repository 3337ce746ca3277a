"""The Asterisk Manager Interface on the wire, without any I/O.

What Asterisk 22 does (``main/manager.c``; ``../shared/asterisk/protocol-notes.md`` section 4), and
so what this module holds to:

- The server's first line is the banner ``Asterisk Call Manager/<version>``; no empty line follows.
- Lines end in CRLF; a bare LF is accepted too. A message is a run of ``Name: value`` lines ended by
  an empty line. Responses (``Response:``) and events (``Event:``) share that framing.
- Header names match case-insensitively, the first of duplicate headers wins, and blanks at the
  start of a value are skipped.
- Asterisk reads at most 1024 bytes a line and 128 headers a message, so every action we format
  fits in that (``format_action`` refuses anything else). What Asterisk *writes* is not bounded
  that way (an ``AppData`` line carries a whole Dial string), so incoming lines are bounded by
  ``max_line`` (default 8 KiB): a longer line, or a message with more than ``max_headers``
  headers, is discarded with its whole message and counted, and reading goes on.
- Bytes are decoded as UTF-8 only once a whole message has arrived, never per read: a character
  split across two TCP segments is decoded whole. Invalid UTF-8 becomes U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

BANNER_PREFIX = "Asterisk Call Manager/"
ASTERISK_MAX_LINE = 1024
"""Asterisk's ``get_input()`` buffer, CRLF included: a longer line is discarded by Asterisk."""
ASTERISK_MAX_HEADERS = 128


class ProtocolError(Exception):
    """The peer does not speak the Manager protocol, or an action cannot be put on the wire."""


@dataclass(frozen=True, slots=True)
class Banner:
    version: str


@dataclass(frozen=True, slots=True)
class Message:
    """One response or event: its headers in wire order, looked up case-insensitively."""

    headers: tuple[tuple[str, str], ...]
    _first: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first: dict[str, str] = {}
        for name, value in self.headers:
            first.setdefault(name.lower(), value)
        object.__setattr__(self, "_first", first)

    def get(self, name: str, default: str = "") -> str:
        """The first value of header ``name`` (any case), or ``default``."""
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    @property
    def event(self) -> str | None:
        return self._first.get("event")

    @property
    def response(self) -> str | None:
        return self._first.get("response")

    @property
    def action_id(self) -> str | None:
        return self._first.get("actionid")

    @property
    def is_success(self) -> bool:
        return self.get("Response").lower() == "success"

    @classmethod
    def of(cls, *headers: tuple[str, str]) -> Message:
        return cls(tuple(headers))


class ManagerParser:
    """Bytes from the Manager in, ``Banner`` and ``Message`` values out. Feed it every read."""

    def __init__(self, *, max_line: int = 8192, max_headers: int = 1024) -> None:
        self._max_line = max_line
        self._max_headers = max_headers
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._banner_seen = False
        self._discarding_line = False
        self._discarding_message = False
        self.discarded = 0
        """Messages dropped for an over-long line or too many headers."""

    def feed(self, data: bytes) -> list[Banner | Message]:
        self._buffer += data
        out: list[Banner | Message] = []
        start = 0
        buffer = self._buffer
        while (end := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start:end])
            start = end + 1
            if self._discarding_line:
                self._discarding_line = False
                continue
            if len(line) > self._max_line:
                self._drop_message()
                continue
            self._take_line(line.removesuffix(b"\r"), out)
        del buffer[:start]
        if len(buffer) > self._max_line:
            # A line longer than allowed is still arriving: drop what we have and the rest of it.
            buffer.clear()
            self._discarding_line = True
            self._drop_message()
        return out

    def _take_line(self, line: bytes, out: list[Banner | Message]) -> None:
        if not self._banner_seen:
            text = line.decode("utf-8", "replace")
            if not text.startswith(BANNER_PREFIX):
                raise ProtocolError(f"not an Asterisk Manager: first line {text[:80]!r}")
            self._banner_seen = True
            out.append(Banner(text.removeprefix(BANNER_PREFIX).strip()))
            return
        if line:
            if not self._discarding_message:
                self._lines.append(line)
                if len(self._lines) > self._max_headers:
                    self._drop_message()
            return
        # An empty line ends the message (a stray one between messages ends nothing).
        lines, self._lines = self._lines, []
        if self._discarding_message:
            self._discarding_message = False
            return
        if lines:
            out.append(Message(tuple(_split_header(raw) for raw in lines)))

    def _drop_message(self) -> None:
        if not self._discarding_message:
            self.discarded += 1
        self._discarding_message = True
        self._lines = []


def _split_header(raw: bytes) -> tuple[str, str]:
    name, sep, value = raw.partition(b":")
    if not sep:
        # A line without a colon (free text some commands print): keep it, under no name.
        return "", raw.decode("utf-8", "replace")
    return name.decode("utf-8", "replace").strip(), value.lstrip(b" \t").decode("utf-8", "replace")


def format_action(action: str, action_id: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """``Action``, ``ActionID`` and ``headers`` as one message Asterisk will read whole."""
    lines = [("Action", action), ("ActionID", action_id), *headers]
    if len(lines) > ASTERISK_MAX_HEADERS:
        raise ProtocolError(f"{action}: {len(lines)} headers, Asterisk reads at most 128")
    out = bytearray()
    for name, value in lines:
        if not name or any(c in name for c in ":\r\n\0") or any(c in value for c in "\r\n\0"):
            # A CR or LF inside a value would let it inject headers or a whole other action.
            raise ProtocolError(f"{action}: header {name!r} has a forbidden character")
        line = f"{name}: {value}\r\n".encode()
        if len(line) > ASTERISK_MAX_LINE:
            raise ProtocolError(f"{action}: header {name} is longer than Asterisk reads")
        out += line
    out += b"\r\n"
    return bytes(out)
