"""The sans-IO protocol, driven with bytes: the recorded environments and replies, quoting, limits,
and random bytes (which may only ever raise AgiProtocolError)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.agi.protocol import (
    CLOSED,
    HANGUP,
    NEED_DATA,
    AgiConnection,
    AgiEnvironment,
    AgiProtocolError,
    AgiState,
    Reply,
    encode_command,
    format_mset,
    parse_environment,
    parse_reply_line,
    quote,
)
from fake_asterisk import load_transcript, parse_args, separate_app_args

CALLER_NAME = 'Ünïcode "Name" \\, with comma'


def connection_after_environment(name: str = "commands-and-replies.txt") -> AgiConnection:
    conn = AgiConnection()
    conn.receive_data(load_transcript(name).environment_bytes)
    assert isinstance(conn.next_event(), AgiEnvironment)
    return conn


def exchange(conn: AgiConnection, command: bytes, reply: bytes) -> list[object]:
    conn.send(command)
    conn.receive_data(reply)
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


# --------------------------------------------------------------------------- environment


def test_recorded_environment_with_utf8_caller_name_and_query() -> None:
    conn = AgiConnection()
    # setup_env() writes line by line: feed it in small pieces, split anywhere
    data = load_transcript("commands-and-replies.txt").environment_bytes
    event: object = NEED_DATA
    for start in range(0, len(data), 7):
        conn.receive_data(data[start : start + 7])
        event = conn.next_event()
        if event is not NEED_DATA:
            break
    assert isinstance(event, AgiEnvironment)
    assert event.action == "pickup"
    assert event.network_script == "pickup?client=acme&x=1"
    assert event.request == "agi://127.0.0.1:4573/pickup?client=acme&x=1"
    assert event.channel == "Local/env@agitest-0000000a;2"
    assert event.uniqueid == "1795723247.21"
    assert event.calleridname == CALLER_NAME
    assert event.args == ("acme", "100", "", "arg with space", "quoted")
    assert event.arg(3) == ""
    assert event.arg(9) == ""
    assert event.get("agi_accountcode") == ""
    assert event.duplicate_keys == ()
    assert conn.state is AgiState.IDLE


@pytest.mark.parametrize(
    ("name", "action", "args"),
    [
        ("get-data-pin.txt", "replace", ("acme", "100", "101")),
        ("hangup-mid-session.txt", "hangupdemo", ("acme", "100")),
        ("h-extension-dead-channel.txt", "dead", ("acme", "100")),
    ],
)
def test_every_recorded_environment(name: str, action: str, args: tuple[str, ...]) -> None:
    env = parse_environment(load_transcript(name).environment_bytes.removesuffix(b"\n\n"))
    assert (env.action, env.args) == (action, args)


def test_first_occurrence_wins_and_repeats_are_kept_aside() -> None:
    env = parse_environment(b"agi_arg_1: acme\nagi_calleridname: x\nagi_arg_1: evil\nagi_arg_2: 1")
    assert env.args == ("acme", "1")
    assert env.duplicate_keys == ("agi_arg_1",)


def test_values_are_raw_bytes_kept_through_surrogateescape() -> None:
    env = parse_environment(b"agi_calleridname: caf\xe9 \xff")
    assert env.calleridname.encode("utf-8", "surrogateescape") == b"caf\xe9 \xff"
    # and echoed back byte for byte
    line = encode_command("SET VARIABLE", "NAME", env.calleridname)
    assert line == b'SET VARIABLE NAME "caf\xe9 \xff"\n'


def test_action_without_network_script_comes_from_the_request() -> None:
    env = parse_environment(b"agi_network: yes\nagi_request: agi://10.0.0.5:4573/whisper/?a=1")
    assert env.action == "whisper"
    bare = parse_environment(b"agi_network: yes\nagi_request: agi://10.0.0.5")
    assert bare.action == ""


@pytest.mark.parametrize(
    "block",
    [b"GET / HTTP/1.1", b"agi_x: 1\nnot agi", b"agi_x 1", b"agi_: 1", b"agi x: 1", b"\xff: 1"],
)
def test_non_environment_lines_are_refused(block: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        parse_environment(block)


def test_environment_limits() -> None:
    conn = AgiConnection(max_line=256, max_env=1024)
    conn.receive_data(b"agi_x: " + b"a" * 300)
    with pytest.raises(AgiProtocolError, match="longer than 256"):
        conn.next_event()
    conn = AgiConnection(max_line=256, max_env=1024)
    conn.receive_data(b"agi_x: 1\n" * 200)
    with pytest.raises(AgiProtocolError, match="larger than 1024"):
        conn.next_event()


def test_environment_cut_short_by_eof() -> None:
    conn = AgiConnection()
    conn.receive_data(b"agi_network: yes\nagi_req")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(AgiProtocolError, match="closed after"):
        conn.next_event()
    silent = AgiConnection()
    silent.receive_data(b"")
    assert silent.next_event() is CLOSED


# --------------------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=1", Reply(200, "1", text="result=1")),
        ("200 result=0", Reply(200, "0", text="result=0")),
        ("200 result=1 (101)", Reply(200, "1", "101", text="result=1 (101)")),
        ("200 result=1 ()", Reply(200, "1", "", text="result=1 ()")),
        ("200 result=1234", Reply(200, "1234", text="result=1234")),
        ("200 result=", Reply(200, "", text="result=")),
        ("200 result= (timeout)", Reply(200, "", "timeout", text="result= (timeout)")),
        (
            "200 result=1 (a (b) c) d) endpos=1234",
            Reply(200, "1", "a (b) c) d", 1234, "result=1 (a (b) c) d) endpos=1234"),
        ),
        ("200 result=-1 endpos=0", Reply(200, "-1", None, 0, "result=-1 endpos=0")),
        ("510 Invalid or unknown command", Reply(510, text="Invalid or unknown command")),
    ],
)
def test_reply_lines(line: str, expected: Reply) -> None:
    assert parse_reply_line(line) == expected


@pytest.mark.parametrize("line", ["", "HANGUP", "20 result=1", "200result=1", "200 res=1", "abc"])
def test_bad_reply_lines(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply_line(line)


def test_recorded_replies_in_order() -> None:
    transcript = load_transcript("commands-and-replies.txt")
    conn = connection_after_environment()
    replies = []
    for command, reply in transcript.exchanges:
        (event,) = exchange(conn, command, reply)
        assert isinstance(event, Reply)
        replies.append(event)
    assert [r.code for r in replies] == [200, 200, 200, 200, 200, 520, 510] + [200] * 7
    assert replies[1].data == CALLER_NAME
    assert replies[2].result == "0"
    assert replies[5].text == "Invalid command syntax.  Proper usage follows:"
    assert replies[5].usage == ("Sets a variable to the current channel.",)
    assert replies[8].data == "101"
    assert replies[12].result_int == 4


def test_recorded_hangup_then_511() -> None:
    transcript = load_transcript("hangup-mid-session.txt")
    conn = connection_after_environment("hangup-mid-session.txt")
    (first,) = exchange(conn, *transcript.exchanges[0])
    assert isinstance(first, Reply)
    assert first.result_int == -1
    assert not conn.dead
    events = exchange(conn, *transcript.exchanges[1])
    assert events[0] is HANGUP
    assert isinstance(events[1], Reply)
    assert events[1].code == 511
    assert conn.dead
    assert conn.hangup_seen
    (after,) = exchange(conn, *transcript.exchanges[2])
    assert isinstance(after, Reply)
    assert (after.result, after.data) == ("1", "")


def test_dead_channel_511_without_hangup_line() -> None:
    transcript = load_transcript("h-extension-dead-channel.txt")
    conn = connection_after_environment("h-extension-dead-channel.txt")
    for command, reply in transcript.exchanges:
        exchange(conn, command, reply)
    assert conn.dead
    assert not conn.hangup_seen


def test_hangup_may_come_while_idle_and_final_hangup_then_eof() -> None:
    conn = connection_after_environment()
    conn.receive_data(b"HANGUP\n")
    assert conn.next_event() is HANGUP
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


def test_no_pipelining_and_no_unsolicited_replies() -> None:
    conn = connection_after_environment()
    conn.send(b"NOOP\n")
    with pytest.raises(AgiProtocolError, match="awaiting_reply"):
        conn.send(b"NOOP\n")
    idle = connection_after_environment()
    idle.receive_data(b"200 result=0\n")
    with pytest.raises(AgiProtocolError, match="unsolicited"):
        idle.next_event()


def test_reply_limits_and_eof_mid_reply() -> None:
    conn = AgiConnection(max_line=256)
    conn.receive_data(b"agi_a: 1\n\n")
    conn.next_event()
    conn.send(b"NOOP\n")
    conn.receive_data(b"2" * 300)
    with pytest.raises(AgiProtocolError, match="longer than 256"):
        conn.next_event()
    block = connection_after_environment()
    block.send(b"SET VARIABLE\n")
    block.receive_data(b"520-Invalid\nusage\n")
    assert block.next_event() is NEED_DATA
    block.receive_data(b"")
    with pytest.raises(AgiProtocolError, match="middle of a reply"):
        block.next_event()


def test_provisional_100_is_skipped() -> None:
    conn = connection_after_environment()
    (event,) = exchange(conn, b"EXEC X\n", b"100 result=0 Trying...\n200 result=0\n")
    assert isinstance(event, Reply)
    assert event.code == 200


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("ALLOW", "ALLOW"),
        ("CALLERID(num)", "CALLERID(num)"),
        ("1,dead", "1,dead"),
        ("pickup share group", '"pickup share group"'),
        ("${CALLERID(name)}", '"${CALLERID(name)}"'),
        ("", '""'),
        ('say "hi" \\ bye', '"say \\"hi\\" \\\\ bye"'),
    ],
)
def test_quote(value: str, token: str) -> None:
    assert quote(value) == token
    assert parse_args(f"X {token}".encode()) == [b"X", value.encode()]


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=["Cs"])))
def test_quote_round_trips_through_asterisks_tokenizer(value: str) -> None:
    line = encode_command("SET VARIABLE", "NAME", value)
    assert parse_args(line.removesuffix(b"\n")) == [
        b"SET",
        b"VARIABLE",
        b"NAME",
        value.encode("utf-8", "surrogateescape"),
    ]


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b", "\udd00"])
def test_quote_refuses_line_breaks_nul_and_lone_surrogates(value: str) -> None:
    with pytest.raises(AgiProtocolError):
        encode_command("SET VARIABLE", "X", value)


def test_recorded_commands_are_what_we_encode() -> None:
    sent = [cmd for cmd, _ in load_transcript("commands-and-replies.txt").exchanges]
    assert encode_command("GET VARIABLE", "CALLERID(num)") == sent[0]
    assert encode_command("GET FULL VARIABLE", "${CALLERID(name)}") == sent[1]
    assert encode_command("SET VARIABLE", "CALLGATE_REASON", "pickup share group") == sent[4]
    assert encode_command("DATABASE PUT", "callgate/acme/device/100", "ext", "101") == sent[7]
    assert encode_command("EXEC", "Verbose", "1,hello from agi") == sent[10]
    assert encode_command("VERBOSE", "verbose line", "1") == sent[11]


def test_command_limits() -> None:
    assert len(encode_command("VERBOSE", "x" * 8182)) == 8190 + 1  # "VERBOSE " is 8 bytes
    with pytest.raises(AgiProtocolError, match="8190"):
        encode_command("VERBOSE", "x" * 8183)
    with pytest.raises(AgiProtocolError, match="too many"):
        encode_command("EXEC", *["a"] * 100)
    with pytest.raises(AgiProtocolError, match="command name"):
        encode_command("NOOP\n")


def test_mset_argument_splits_back_into_the_pairs() -> None:
    pairs = [
        ("A", "ALLOW"),
        ("B", ""),
        ("C", "acme/100@PICKUPMARK&acme/1.0+x@PICKUPMARK"),
        ("D", "*"),
    ]
    argument = format_mset(pairs)
    assert argument == "A=ALLOW,B=,C=acme/100@PICKUPMARK&acme/1.0+x@PICKUPMARK,D=*"
    split = [
        separate_app_args(item, "=", remove_chars=False) for item in separate_app_args(argument)
    ]
    assert split == [[name, value] for name, value in pairs]


@pytest.mark.parametrize("value", ["a,b", 'a"b', "a b", "a(b", "a\\b", "${X}", "é"])
def test_mset_refuses_values_needing_dialplan_escapes(value: str) -> None:
    with pytest.raises(AgiProtocolError):
        format_mset([("X", value)])


# --------------------------------------------------------------------------- random input


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_random_bytes_into_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for parse in (parse_environment, lambda d: parse_reply_line(d.decode("utf-8", "replace"))):
        with contextlib.suppress(AgiProtocolError):
            parse(data)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
def test_random_chunks_into_the_state_machine_raise_only_protocol_errors(
    chunks: list[bytes], after_environment: bool
) -> None:
    conn = connection_after_environment() if after_environment else AgiConnection(max_line=512)
    try:
        if after_environment:
            conn.send(b"NOOP\n")
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while (event := conn.next_event()) not in (NEED_DATA, CLOSED):
                if isinstance(event, Reply) and conn.state is AgiState.IDLE:
                    conn.send(b"NOOP\n")
    except AgiProtocolError:
        pass
