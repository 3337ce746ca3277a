"""The settings and grant bodies: defaults, round trips, and every error located."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callgate.policy import PolicyValidationError, parse_document
from callgate.policy.grants import (
    Grant,
    GrantAction,
    check_grant,
    parse_grant,
    parse_grant_request,
)
from callgate.policy.settings import CallControlSettings, NoticeMode, parse_settings

from .policy_examples import REFERENCE

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def errors_of(parse: Any, data: object) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(PolicyValidationError) as caught:
        parse(data)
    return [(issue.loc, issue.message) for issue in caught.value.errors]


# -- settings


def test_settings_default_and_round_trip() -> None:
    default = parse_settings({})
    assert default == CallControlSettings()
    assert default.to_json() == {
        "notice": {"mode": "off", "repeat_seconds": None, "sound": None},
        "protected_extensions": [],
    }
    assert not default.notice.required
    full = {
        "notice": {"mode": "tone", "repeat_seconds": 30, "sound": "custom/monitored"},
        "protected_extensions": ["100", "911"],
    }
    parsed = parse_settings(json.dumps(full))
    assert parsed.to_json() == full
    assert parsed.notice.mode is NoticeMode.TONE
    assert parsed.notice.required
    assert parse_settings(parsed.to_json()) == parsed
    only_start = parse_settings({"notice": {"mode": "tone"}})
    assert (only_start.notice.repeat_seconds, only_start.notice.sound) == (None, None)


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        ({"notice": {"mode": "beep"}}, ("notice", "mode"), "one of 'off' or 'tone'"),
        ({"notice": {"mode": "tone", "repeat_seconds": 4}}, ("notice", "repeat_seconds"),
         "at least 5"),
        ({"notice": {"mode": "tone", "repeat_seconds": 3601}}, ("notice", "repeat_seconds"),
         "at most 3600"),
        ({"notice": {"mode": "tone", "repeat_seconds": True}}, ("notice", "repeat_seconds"),
         "whole number"),
        ({"notice": {"mode": "tone", "repeat_seconds": "30"}}, ("notice", "repeat_seconds"),
         "whole number"),
        ({"notice": {"mode": "off", "repeat_seconds": 30}}, ("notice", "repeat_seconds"),
         "only allowed with mode 'tone'"),
        ({"notice": {"sound": "beep"}}, ("notice", "sound"), "only allowed with mode 'tone'"),
        ({"notice": {"mode": "tone", "sound": "../etc/passwd"}}, ("notice", "sound"),
         "Asterisk sound name"),
        ({"notice": {"mode": "tone", "sound": "/var/lib/x"}}, ("notice", "sound"), "sound name"),
        ({"notice": {"mode": "tone", "sound": "beep.wav"}}, ("notice", "sound"), "sound name"),
        ({"notice": {"mode": "tone", "tone": 440}}, ("notice", "tone"), "Unknown key 'tone'"),
        ({"notice": "tone"}, ("notice",), "must be a JSON object"),
        ({"protected_extensions": ["100", "1 01"]}, ("protected_extensions", 1),
         "not valid for protected_extensions[1] (1 to 32 characters"),
        ({"protected_extensions": ["100", "101", "100"]}, ("protected_extensions", 2),
         "'100' is listed twice in protected_extensions (also at index 0)"),
        ({"protected_extensions": [str(n) for n in range(20_001)]}, ("protected_extensions",),
         "has 20001 items; at most 20000"),
        ({"protected_extensions": "100"}, ("protected_extensions",), "must be an array"),
        ({"protected": ["100"]}, ("protected",), "Unknown key 'protected'"),
        ([], (), "The call control settings must be a JSON object, not an array"),
    ],
)  # fmt: skip
def test_settings_errors_are_located(body: object, loc: tuple[str | int, ...], says: str) -> None:
    (found,) = [message for where, message in errors_of(parse_settings, body) if where == loc]
    assert says in found


def test_settings_report_every_error_at_once() -> None:
    body = {"notice": {"mode": "tone", "repeat_seconds": 1, "sound": "a.b"}, "x": 1}
    assert [loc for loc, _ in errors_of(parse_settings, body)] == [
        ("notice", "repeat_seconds"),
        ("notice", "sound"),
        ("x",),
    ]


def test_settings_text_that_is_not_json() -> None:
    with pytest.raises(PolicyValidationError) as caught:
        parse_settings('{"notice": ')
    assert caught.value.malformed_json
    assert "call control settings" in str(caught.value)


# -- grants

BODY: dict[str, Any] = {
    "ext": "200",
    "action": "eavesdrop",
    "groups": ["support"],
    "extensions": ["105"],
    "from": "2026-05-01T08:00:00Z",
    "until": "2026-05-01T17:00:00+02:00",
    "note": "coaching the new support staff",
}


def test_a_grant_request_and_the_stored_grant() -> None:
    request = parse_grant_request(json.dumps(BODY))
    assert request.action is GrantAction.EAVESDROP
    assert request.from_ == datetime(2026, 5, 1, 8, tzinfo=UTC)
    assert request.until == datetime(2026, 5, 1, 15, tzinfo=UTC)
    assert request.active(datetime(2026, 5, 1, 8, tzinfo=UTC))
    assert not request.active(datetime(2026, 5, 1, 15, tzinfo=UTC))  # until: no longer
    stored = request.to_grant(grant_id="3f2a9c", created_by="acme-supervisor")
    body = stored.to_json()
    assert body == {
        "id": "3f2a9c",
        **BODY,
        "from": "2026-05-01T08:00:00+00:00",
        "created_by": "acme-supervisor",
    }
    assert parse_grant(body) == stored
    assert isinstance(stored, Grant)


@pytest.mark.parametrize(
    ("change", "loc", "says"),
    [
        ({"action": "replace"}, ("action",), "one of 'eavesdrop', 'whisper' or 'pickup'"),
        ({"action": "barge"}, ("action",), "one of"),
        ({"ext": "2 00"}, ("ext",), "not valid for ext (1 to 32 characters"),
        ({"from": 1714550400}, ("from",), "RFC 3339"),
        ({"from": "2026-05-01"}, ("from",), "RFC 3339"),
        ({"from": "2026-05-01T08:00:00"}, ("from",), "with its offset"),
        ({"until": "tomorrow"}, ("until",), "RFC 3339"),
        ({"until": "2026-05-01T08:00:00Z"}, ("until",), "must be later than from"),
        ({"until": "2026-05-01T09:59:59+02:00"}, ("until",), "must be later than from"),
        ({"groups": [], "extensions": []}, ("groups",), "give groups, extensions or both"),
        ({"groups": ["support", "support"]}, ("groups", 1), "listed twice in groups"),
        ({"extensions": ["105", "200"]}, ("extensions", 1), "the grant's own ext '200'"),
        ({"extensions": ["1 05"]}, ("extensions", 0), "not valid for extensions[0]"),
        ({"extensions": [str(n) for n in range(201)]}, ("extensions",), "at most 200"),
        ({"groups": ["bad\x07name"]}, ("groups", 0), "no control characters"),
        ({"note": ""}, ("note",), "not only blanks"),
        ({"note": "   "}, ("note",), "not only blanks"),
        ({"note": "line\nbreak"}, ("note",), "no control characters"),
        ({"note": "x" * 501}, ("note",), "longer than 500 characters"),
        ({"note": None}, ("note",), "must be a string, not null"),
        ({"id": "chosen-by-me"}, ("id",), "Unknown key 'id'"),
        ({"created_by": "someone"}, ("created_by",), "Unknown key 'created_by'"),
    ],
)  # fmt: skip
def test_grant_errors_are_located(
    change: dict[str, Any], loc: tuple[str | int, ...], says: str
) -> None:
    found = [message for where, message in errors_of(parse_grant_request, {**BODY, **change})]
    assert [where for where, _ in errors_of(parse_grant_request, {**BODY, **change})] == [loc]
    assert says in found[0]


@pytest.mark.parametrize("missing", ["ext", "action", "from", "until", "note"])
def test_grant_required_fields(missing: str) -> None:
    body = {key: value for key, value in BODY.items() if key != missing}
    assert errors_of(parse_grant_request, body) == [((missing,), f"{missing} is required.")]


def test_a_stored_grant_needs_its_id_and_author() -> None:
    assert [loc for loc, _ in errors_of(parse_grant, BODY)] == [("id",), ("created_by",)]
    bad = {**BODY, "id": "has space", "created_by": ""}
    assert [loc for loc, _ in errors_of(parse_grant, bad)] == [("id",), ("created_by",)]


def check(**changes: Any) -> list[tuple[tuple[str | int, ...], str]]:
    arguments: dict[str, Any] = {
        "document": parse_document({**REFERENCE}),
        "existing": [],
        "now": NOW,
        "max_grants": 2,
        "max_duration": timedelta(days=1),
    }
    body = {**BODY, "groups": ["support", "hr"], "until": "2026-05-01T18:00:00Z"}
    request = parse_grant_request({**body, **changes.pop("body", {})})
    arguments.update(changes)
    try:
        check_grant(request, **arguments)
    except PolicyValidationError as exc:
        return [(issue.loc, issue.message) for issue in exc.errors]
    return []


def test_check_grant_against_the_clients_state() -> None:
    assert check() == []
    assert check(body={"groups": ["support", "night"]}) == [
        (("groups", 1), "Group 'night' does not exist in the client's policy document.")
    ]
    assert check(body={"until": "2026-05-01T12:00:00Z"}) == [
        (("until",), "until (2026-05-01T12:00:00+00:00) is already past.")
    ]
    (too_long,) = check(max_duration=timedelta(hours=8))
    assert too_long[0] == ("until",)
    assert "lasts 10:00:00; at most 8:00:00" in too_long[1]


def test_check_grant_counts_only_grants_active_or_to_come() -> None:
    def old(until: str) -> Grant:
        return parse_grant({**BODY, "id": until[:13], "created_by": "t", "until": until})

    ended = [old("2026-05-01T11:00:00Z"), old("2026-05-01T12:00:00Z")]  # until <= now: over
    assert check(existing=ended) == []
    in_force = [old("2026-05-01T12:00:01Z"), old("2026-05-01T13:00:00Z")]
    ((loc, message),) = check(existing=ended + in_force)
    assert loc == ()
    assert "2 grants active or to come; at most 2" in message
