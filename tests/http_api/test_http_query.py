"""Numbers and times in query strings: only ASCII digits are numbers, odd times are a 400, and
a parameter given twice is an error; never a 500 (``callgate.http.query``, the audit route)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from multidict import MultiDict

from callgate.http.errors import ApiError
from callgate.http.query import MAX_INTEGER, QueryReader, query_int

from .http_support import ADMIN, CLIENT, Harness

AUDIT_URL = f"/client/{CLIENT}/audit"

NOT_NUMBERS = [
    "²",  # superscript two: str.isdigit() is True, int() raises
    "١٢",  # Arabic-Indic digits: int() accepts them
    "\uff11\uff12",  # fullwidth digits: int() accepts them
    "1_000",  # int() accepts the underscore
    " 12",
    "12 ",
    "+12",
    "-1",
    "0x10",
    "1.0",
    "1e3",
    "",
    "1" * 5000,  # int() raises past 4,300 digits
    "9" * 19,  # more digits than MAX_DIGITS
]


def reader(*pairs: tuple[str, str]) -> QueryReader:
    return QueryReader(MultiDict(pairs))


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_query_int_accepts_only_ascii_digits(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        query_int(MultiDict([("limit", value)]), "limit", default=10, minimum=1, maximum=100)
    error = caught.value
    assert (error.status, error.code) == (400, "invalid_query")
    [detail] = error.details
    assert detail["loc"] == ["query", "limit"]
    message = str(detail["message"])
    assert message.startswith("limit must be a whole number from 1 to 100 in digits 0-9")
    assert len(message) < 200  # a 5,000-digit value is not echoed whole


@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1), ("0042", 42), ("100", 100), ("0" * 17 + "7", 7)]
)
def test_query_int_reads_ascii_digits_within_bounds(value: str, expected: int) -> None:
    query = MultiDict([("limit", value)])
    assert query_int(query, "limit", default=10, minimum=1, maximum=100) == expected


@pytest.mark.parametrize("value", ["0", "101", str(MAX_INTEGER)])
def test_query_int_enforces_its_bounds(value: str) -> None:
    with pytest.raises(ApiError):
        query_int(MultiDict([("limit", value)]), "limit", default=10, minimum=1, maximum=100)


def test_query_int_default_and_optional() -> None:
    assert query_int(MultiDict(), "limit", default=10, minimum=1, maximum=100) == 10
    assert query_int(MultiDict(), "before", default=None, minimum=1) is None
    assert query_int(MultiDict([("before", str(MAX_INTEGER))]), "before", default=None) == (
        MAX_INTEGER
    )


def test_a_parameter_given_twice_is_an_error() -> None:
    query = reader(("limit", "1"), ("limit", "2"))
    assert query.integer("limit", default=5, minimum=1, maximum=9) == 5
    assert query.errors == [
        {"loc": ["query", "limit"], "message": "limit is given 2 times; give it once."}
    ]
    with pytest.raises(ApiError):
        query.raise_if_invalid()


def test_every_bad_parameter_is_reported_at_once() -> None:
    query = reader(("a", "x"), ("b", "²"), ("t", "soon"))
    query.integer("a", default=0)
    query.integer("b", default=0)
    query.time("t")
    assert [e["loc"] for e in query.errors] == [["query", "a"], ["query", "b"], ["query", "t"]]


EAST, WEST = timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23, minutes=59))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),
        ("2026-11-26T08:30", datetime(2026, 11, 26, 8, 30, tzinfo=UTC)),
        ("2026-11-26T08:30:05.123Z", datetime(2026, 11, 26, 8, 30, 5, 123000, tzinfo=UTC)),
        ("2026-11-26T09:30:05+01:00", datetime(2026, 11, 26, 8, 30, 5, tzinfo=UTC)),
        ("0001-01-01T00:00:00+23:59", datetime(1, 1, 1, tzinfo=EAST)),
        ("9999-12-31T23:59:59-23:59", datetime(9999, 12, 31, 23, 59, 59, tzinfo=WEST)),
    ],
)
def test_times_that_are_read(value: str, expected: datetime) -> None:
    query = reader(("since", value))
    assert query.time("since") == expected
    assert query.errors == []


BAD_TIMES = [
    "yesterday",
    "\uff12\uff10\uff12\uff16-01-01",  # fullwidth digits
    "2026-01-01T00:00:00\x00",  # fromisoformat alone takes it
    "1" * 5000,  # fromisoformat alone reads it as 1111-11-11 11:11:11.111111
    "11111111",
    "2026-13-01",
    "2026-02-30",
    "2026-01-01T24:00:00",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01T00:00:00 01:00",  # a "+" not written as %2B arrives as a space
    "2026-01-01T00:00:00.1234567",
    "2026-W01",
    "2026-01-01t00:00:00z",
    "",
]


@pytest.mark.parametrize("value", BAD_TIMES)
def test_odd_times_are_errors_naming_the_parameter(value: str) -> None:
    query = reader(("until", value))
    assert query.time("until") is None
    [detail] = query.errors
    assert detail["loc"] == ["query", "until"]
    assert str(detail["message"]).startswith("until ")
    assert len(str(detail["message"])) < 300


# -- over HTTP: the audit route ------------------------------------------------------------------

AUDIT_BAD = [
    *(({"limit": value}, "limit") for value in NOT_NUMBERS),
    ({"limit": "0"}, "limit"),
    ({"limit": "10001"}, "limit"),
    *(({"since": value}, "since") for value in BAD_TIMES if "\x00" not in value),
    ({"until": "2026-01-01T00:00:00\x00"}, "until"),
    ({"ext": "1 00"}, "ext"),
    ({"ext": "x" * 5000}, "ext"),
    ({"action": "barge"}, "action"),
]


@pytest.mark.parametrize(("params", "name"), AUDIT_BAD)
async def test_a_bad_audit_filter_is_400_naming_it(
    api: Harness, params: dict[str, str], name: str
) -> None:
    response = await api.client.get(AUDIT_URL, params=params, headers=ADMIN)
    assert response.status == 400
    error = await response.json()
    assert error["error"] == "invalid_query"
    assert [d["loc"] for d in error["details"]] == [["query", name]]


@pytest.mark.parametrize("raw", ["limit=%FF", "limit=%B2", "since=%FF%FE", "limit=1&limit=2"])
async def test_undecodable_or_repeated_parameters_are_400(api: Harness, raw: str) -> None:
    response = await api.client.get(f"{AUDIT_URL}?{raw}", headers=ADMIN)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_query"


async def test_all_bad_audit_filters_are_reported_together(api: Harness) -> None:
    params = {"limit": "²", "since": "soon", "ext": "1 00"}
    response = await api.client.get(AUDIT_URL, params=params, headers=ADMIN)
    assert response.status == 400
    locs = [d["loc"][1] for d in (await response.json())["details"]]
    assert sorted(locs) == ["ext", "limit", "since"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "1"},
        {"limit": "10000"},
        {"limit": "00010"},
        {"since": "0001-01-01T00:00:00+23:59", "until": "9999-12-31T23:59:59-23:59"},
        {"since": "2026-11-26", "until": "2026-11-26T00:00:00Z"},
        {"since": "2026-11-26T09:00:00+01:00", "ext": "100", "action": "eavesdrop"},
    ],
)
async def test_good_audit_filters_answer_200(api: Harness, params: dict[str, str]) -> None:
    response = await api.client.get(AUDIT_URL, params=params, headers=ADMIN)
    assert response.status == 200
    assert (await response.json())["events"] == []


async def test_the_audit_parameters_are_documented_with_their_bounds(api: Harness) -> None:
    document = await (await api.client.get("/openapi.json")).json()
    operation = document["paths"]["/client/{client_id}/audit"]["get"]
    params = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}
    assert "pattern" in params["since"]
    assert "400" in operation["responses"]
