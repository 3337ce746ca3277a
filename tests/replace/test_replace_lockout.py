from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callgate.replace.lockout import LockoutRules, LockState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = LockoutRules(max_failures=5, window=timedelta(minutes=15), lock=timedelta(minutes=15))


def at(*seconds: float) -> list[datetime]:
    return [T0 + timedelta(seconds=s) for s in seconds]


@pytest.mark.parametrize(
    ("failures", "now", "locked_until"),
    [
        ([], 0, None),
        ([0, 1, 2, 3], 4, None),  # four wrong PINs: not yet
        ([0, 1, 2, 3, 4], 5, 4 + 900),  # the fifth locks, 15 minutes from the fifth
        ([0, 1, 2, 3, 4], 903.9, 4 + 900),
        ([0, 1, 2, 3, 4], 904, None),  # expired
        ([0, 300, 600, 800, 900], 901, 900 + 900),  # exactly 15 minutes apart still counts
        ([0, 300, 600, 800, 900.5], 901, None),  # spread over more than the window
        ([4, 0, 3, 1, 2], 10, 904),  # order does not matter
        ([0, 1, 2, 3, 4, 100], 200, 1000),  # the latest run of five decides
    ],
)
def test_locked_until(failures: list[float], now: float, locked_until: float | None) -> None:
    expected = None if locked_until is None else T0 + timedelta(seconds=locked_until)
    assert RULES.locked_until(at(*failures), T0 + timedelta(seconds=now)) == expected


def test_configurable_limit_and_durations() -> None:
    rules = LockoutRules(max_failures=2, window=timedelta(seconds=10), lock=timedelta(seconds=60))
    assert rules.locked_until(at(0, 11), T0 + timedelta(seconds=12)) is None
    assert rules.locked_until(at(0, 10), T0 + timedelta(seconds=12)) == T0 + timedelta(seconds=70)
    assert rules.horizon == timedelta(seconds=70)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_failures": 0}, {"window": timedelta(0)}, {"lock": timedelta(seconds=-1)}],
)
def test_rules_refuse_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        LockoutRules(**kwargs)  # type: ignore[arg-type]


def test_lock_state_is_locked_when_either_side_is() -> None:
    assert not LockState(None, None).locked
    assert LockState(T0, None).locked
    assert LockState(None, T0).locked
