"""Why callgate has its own Manager client: panoramisk 1.4 mis-decodes split UTF-8.

panoramisk's ``AMIProtocol.data_received`` decodes each TCP read on its own with
``errors="ignore"``: the two halves of a character split between reads are each invalid and are
silently dropped. This test runs panoramisk's own parser on the recorded caller name cut inside
"Ü" and asserts the defect, then runs the same bytes through ours. If it ever fails on the
panoramisk side, panoramisk was fixed: weigh the other defects listed in README ("Live
enforcement (AMI)") before switching back.
"""

from __future__ import annotations

from typing import Any

from panoramisk.ami_protocol import AMIProtocol

from callgate.ami.protocol import ManagerParser, Message
from fake_ami import parse_block, render, transcript_blocks

NAME = 'Ünïcode \\"Name\\" \\\\, with comma'
BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def _event_with_name() -> tuple[bytes, int]:
    blocks = map(parse_block, transcript_blocks("chanspy-listen-whisper-and-hangup.txt"))
    block = next(b for b in blocks if ("CallerIDName", NAME) in b)
    data = render(block)
    return data, data.index("Ü".encode()) + 1  # inside the two bytes of "Ü"


class _Collect:
    """What panoramisk's Manager is to its protocol: something with ``dispatch``."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def dispatch(self, message: Any) -> None:
        self.events.append(message)


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def test_panoramisk_drops_a_character_split_across_two_reads() -> None:
    data, cut = _event_with_name()
    protocol = AMIProtocol()
    protocol.connection_made(_Transport())
    protocol.factory = _Collect()
    protocol.encoding = "utf8"  # what panoramisk's Manager sets by default
    protocol.data_received(BANNER + data[:cut])
    protocol.data_received(data[cut:])
    (event,) = protocol.factory.events
    assert event["CallerIDName"] == NAME.removeprefix("Ü")  # the defect: "Ü" is gone


def test_ours_decodes_the_same_split_bytes_whole() -> None:
    data, cut = _event_with_name()
    parser = ManagerParser()
    out = parser.feed(BANNER + data[:cut]) + parser.feed(data[cut:])
    (event,) = [m for m in out if isinstance(m, Message)]
    assert event.get("CallerIDName") == NAME
