"""The protocol withholds the reply to ``GET DATA`` (what the caller typed) from every error
message and ``repr``, and only that reply: other commands' errors still quote the line."""

from __future__ import annotations

import pytest

from callgate.agi.protocol import AgiConnection, AgiProtocolError, Reply, bears_secret
from callgate.agi.session import AgiChannelDead, AgiCommandFailed

DIGITS = "864209"


def after_command(line: bytes) -> AgiConnection:
    conn = AgiConnection()
    conn.receive_data(b"agi_request: agi://127.0.0.1/replace\n\n")
    conn.next_event()
    conn.send(line)
    return conn


@pytest.mark.parametrize(
    "line",
    [b"GET DATA agent-pass 6000 12\n", b'GET DATA "" 6000 12\n', b"get data x\n", b"GET DATA\n"],
)
def test_get_data_bears_a_secret(line: bytes) -> None:
    assert bears_secret(line)


@pytest.mark.parametrize("line", [b"GET VARIABLE X\n", b"GET DATABASE\n", b"EXEC MSet a=1\n"])
def test_other_commands_do_not(line: bytes) -> None:
    assert not bears_secret(line)


@pytest.mark.parametrize(
    "data",
    [
        f"200 result={DIGITS} (timeout\n",
        f"{DIGITS}\n",
        f"200 {DIGITS}\n",
        f"{DIGITS[:3]}x result=1\n",
        f"200 result={DIGITS}\n{DIGITS}\n",  # a stray line after the reply
    ],
)
def test_errors_after_get_data_withhold_the_line(data: str) -> None:
    conn = after_command(b"GET DATA agent-pass 6000 12\n")
    conn.receive_data(data.encode())
    for _ in range(data.count("\n") - 1):  # the well-formed lines before the bad one
        assert isinstance(conn.next_event(), Reply)
    with pytest.raises(AgiProtocolError) as caught:
        conn.next_event()
    message = str(caught.value)
    assert "withheld" in message
    assert DIGITS[:3] not in message


def test_the_code_is_named_only_when_it_is_one_asterisk_sends() -> None:
    conn = after_command(b"GET DATA agent-pass 6000 12\n")
    conn.receive_data(b"200 result=1 (x\n")
    with pytest.raises(AgiProtocolError, match="code 200"):
        conn.next_event()
    conn = after_command(b"GET DATA agent-pass 6000 12\n")
    conn.receive_data(b"975x result=1\n")  # three digits that may be the caller's
    with pytest.raises(AgiProtocolError, match="code none"):
        conn.next_event()
    # a three-digit code Asterisk never sends parses, but shows as no code at all
    conn = after_command(b"GET DATA agent-pass 6000 12\n")
    conn.receive_data(b"975 result=1\n")
    reply = conn.next_event()
    assert isinstance(reply, Reply)
    assert reply.code == 975
    assert "975" not in reply.shown
    assert "975" not in str(AgiCommandFailed("GET DATA", reply))


def test_replies_to_get_data_are_marked_and_hidden_from_repr() -> None:
    conn = after_command(b"GET DATA agent-pass 6000 12\n")
    conn.receive_data(f"200 result={DIGITS} (timeout)\n".encode())
    reply = conn.next_event()
    assert isinstance(reply, Reply)
    assert (reply.result, reply.data, reply.secret) == (DIGITS, "timeout", True)
    assert DIGITS not in repr(reply)
    assert DIGITS not in reply.shown
    assert DIGITS not in str((reply,))  # inside a container too
    # the session's errors are built from the shown text
    for code in (510, 511, 520):
        failed = Reply(code, text=DIGITS, usage=(DIGITS,), secret=True)
        assert DIGITS not in str(AgiCommandFailed("GET DATA", failed))
        assert DIGITS not in repr(failed)
    dead = Reply(511, text=DIGITS, secret=True)
    assert DIGITS not in str(AgiChannelDead(f"GET DATA: {dead.shown}"))


def test_a_520_block_after_get_data_is_secret_too() -> None:
    conn = after_command(b"GET DATA agent-pass 6000 12\n")
    conn.receive_data(f"520-{DIGITS}\n{DIGITS}\n520 End of proper usage.\n".encode())
    reply = conn.next_event()
    assert isinstance(reply, Reply)
    assert reply.secret
    assert reply.usage == (DIGITS,)
    assert DIGITS not in repr(reply)


def test_the_next_command_clears_the_mark_and_others_still_quote_the_line() -> None:
    conn = after_command(b"GET DATA agent-pass 6000 12\n")
    conn.receive_data(b"200 result=1234\n")
    assert isinstance(conn.next_event(), Reply)
    conn.send(b"GET VARIABLE X\n")
    conn.receive_data(b"200 result=1 (abc\n")
    with pytest.raises(AgiProtocolError, match="'200 result=1 \\(abc'"):
        conn.next_event()
    plain = after_command(b"GET VARIABLE X\n")
    plain.receive_data(b"200 result=1 (v)\n")
    reply = plain.next_event()
    assert isinstance(reply, Reply)
    assert not reply.secret
    assert "result=1 (v)" in repr(reply)
    assert reply.shown == "200 result=1 (v)"
