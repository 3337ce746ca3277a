"""The Manager framing, driven with bytes (the recorded streams among them), no sockets."""

from __future__ import annotations

import random

import pytest

from callgate.ami.protocol import (
    ASTERISK_MAX_LINE,
    Banner,
    ManagerParser,
    Message,
    ProtocolError,
    format_action,
)
from fake_ami import TRANSCRIPTS

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
NAME = 'Ünïcode \\"Name\\" \\\\, with comma'


def recorded_stream(name: str) -> bytes:
    """A recorded stream as Asterisk sent it: the BANNER placeholder becomes the banner line."""
    data = (TRANSCRIPTS / name).read_bytes()
    _, _, rest = data.partition(b"\r\n")
    return BANNER + rest


def feed_in_pieces(data: bytes, sizes: list[int]) -> list[Banner | Message]:
    parser = ManagerParser()
    out: list[Banner | Message] = []
    start = 0
    for size in sizes:
        out += parser.feed(data[start : start + size])
        start += size
    out += parser.feed(data[start:])
    return out


@pytest.mark.parametrize("name", ["chanspy-listen-whisper-and-hangup.txt", "pickup-directed.txt"])
def test_a_recorded_stream_parses_the_same_however_it_is_cut(name: str) -> None:
    data = recorded_stream(name)
    whole = ManagerParser().feed(data)
    assert whole[0] == Banner("11.0.0")
    assert len(whole) - 1 == data.count(b"\r\n\r\n")
    rng = random.Random(name)
    for _ in range(5):
        sizes = [rng.randint(1, 700) for _ in range(len(data) // 300)]
        assert feed_in_pieces(data, sizes) == whole


def test_the_recorded_caller_name_is_decoded_whole_even_split_inside_a_character() -> None:
    data = recorded_stream("chanspy-listen-whisper-and-hangup.txt")
    cut = data.index("Ünïcode".encode()) + 1  # between the two bytes of "Ü"
    messages = [m for m in feed_in_pieces(data, [cut]) if isinstance(m, Message)]
    names = {m.get("CallerIDName") for m in messages if m.get("Channel").startswith("Local/env")}
    assert NAME in names
    assert not any("\ufffd" in m.get("CallerIDName") for m in messages)


def test_lf_only_line_ends_are_accepted() -> None:
    out = ManagerParser().feed(BANNER + b"Event: Hangup\nUniqueid: 1.2\n\nEvent: Ping\r\n\r\n")
    assert [m.event for m in out if isinstance(m, Message)] == ["Hangup", "Ping"]


def test_headers_match_any_case_and_the_first_duplicate_wins() -> None:
    (_, message) = ManagerParser().feed(
        BANNER + b"Event: Hangup\r\nuniqueid:   1.2\r\nUNIQUEID: 9.9\r\n\r\n"
    )
    assert isinstance(message, Message)
    assert message.get("UniqueID") == "1.2"
    assert message.get("Missing", "-") == "-"
    assert "uniqueid" in message


def test_a_first_line_that_is_not_the_banner_is_refused() -> None:
    with pytest.raises(ProtocolError):
        ManagerParser().feed(b"HTTP/1.1 200 OK\r\n")


def test_an_over_long_line_drops_its_message_and_the_next_one_still_arrives() -> None:
    parser = ManagerParser(max_line=100)
    long_line = b"AppData: " + b"x" * 300 + b"\r\n"
    out = parser.feed(BANNER + b"Event: Newexten\r\n" + long_line[:150])
    out += parser.feed(long_line[150:] + b"Uniqueid: 1\r\n\r\nEvent: Hangup\r\nUniqueid: 2\r\n\r\n")
    assert [(m.event, m.get("Uniqueid")) for m in out if isinstance(m, Message)] == [
        ("Hangup", "2")
    ]
    assert parser.discarded == 1


def test_too_many_headers_drop_the_message() -> None:
    parser = ManagerParser(max_headers=3)
    out = parser.feed(BANNER + b"Event: A\r\nB: 1\r\nC: 2\r\nD: 3\r\n\r\nEvent: Ok\r\n\r\n")
    assert [m.event for m in out if isinstance(m, Message)] == ["Ok"]


def test_invalid_utf8_becomes_replacement_characters_not_an_error() -> None:
    (_, message) = ManagerParser().feed(BANNER + b"Event: X\r\nCallerIDName: caf\xe9\r\n\r\n")
    assert isinstance(message, Message)
    assert message.get("CallerIDName") == "caf\ufffd"


def test_format_action_writes_action_then_actionid_then_headers_crlf() -> None:
    data = format_action("Hangup", "cg-7", [("Channel", "PJSIP/acme_101-00000001")])
    assert data == (b"Action: Hangup\r\nActionID: cg-7\r\nChannel: PJSIP/acme_101-00000001\r\n\r\n")


@pytest.mark.parametrize("value", ["x\r\nAction: Hangup", "x\nChannel: /.*/", "nul\0"])
def test_format_action_refuses_values_that_would_inject_headers(value: str) -> None:
    with pytest.raises(ProtocolError):
        format_action("Hangup", "1", [("Channel", value)])


def test_format_action_refuses_lines_asterisk_would_discard() -> None:
    format_action("Hangup", "1", [("Channel", "x" * (ASTERISK_MAX_LINE - 11))])
    with pytest.raises(ProtocolError):
        format_action("Hangup", "1", [("Channel", "x" * (ASTERISK_MAX_LINE - 10))])
