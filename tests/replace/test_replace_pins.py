from __future__ import annotations

import time

import pytest

from callgate.replace.pins import (
    PinFormatError,
    PinHasher,
    PinHashError,
    ScryptParams,
    check_pin,
    hash_pin,
    verify_pin,
)

from .conftest import FAST_SCRYPT


@pytest.mark.parametrize("pin", ["0000", "1234", "000000000000", "987654321012"])
def test_well_formed_pins_are_accepted(pin: str) -> None:
    assert check_pin(pin) == pin


@pytest.mark.parametrize(
    "value",
    [
        1234,  # a JSON number: leading zeros would be lost
        12.34,
        None,
        ["1234"],
        "123",  # 3 digits
        "1234567890123",  # 13 digits
        "12a4",
        "abcd",
        " 1234",
        "1234\n",
        "12 34",
        "",
        "\u0661\u0662\u0663\u0664",  # Arabic-Indic digits: str.isdigit() says yes, keypads no
        "\uff11\uff12\uff13\uff14",  # fullwidth digits
    ],
)
def test_anything_else_is_rejected(value: object) -> None:
    with pytest.raises(PinFormatError):
        check_pin(value)


def test_hash_verifies_the_right_pin_only() -> None:
    encoded = hash_pin("0123", FAST_SCRYPT)
    assert verify_pin("0123", encoded)
    assert not verify_pin("123", encoded)
    assert not verify_pin("01234", encoded)
    assert not verify_pin("0124", encoded)
    assert not verify_pin("", encoded)
    assert not verify_pin("0123#", encoded)


def test_hash_is_salted_and_does_not_contain_the_pin() -> None:
    first, second = hash_pin("55555555", FAST_SCRYPT), hash_pin("55555555", FAST_SCRYPT)
    assert first != second
    assert "55555555" not in first
    scheme, log2_n, r, p, salt, key = first.split("$")
    assert (scheme, log2_n, r, p) == ("scrypt", "10", "8", "1")
    assert salt
    assert key


def test_default_cost_is_substantial() -> None:
    params = ScryptParams()
    assert (1 << params.log2_n, params.r, params.p) == (32768, 8, 1)
    started = time.perf_counter()
    encoded = hash_pin("4321")
    assert encoded.startswith("scrypt$15$8$1$")
    assert verify_pin("4321", encoded)
    # not a timing assertion on speed, only that the work factor is really applied
    assert time.perf_counter() - started > 0.01


def test_each_hash_carries_its_own_cost() -> None:
    cheap = hash_pin("2468", ScryptParams(log2_n=4, r=1, p=1))
    assert verify_pin("2468", cheap)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain-1234",
        "bcrypt$10$8$1$c2FsdA$a2V5",
        "scrypt$10$8$1$!!!$a2V5",
        "scrypt$10$8$1$c2FsdHNhbHQ$a2V5",  # key of the wrong length
        "scrypt$40$8$1$c2FsdHNhbHQ$" + "A" * 43,  # absurd cost from a damaged row
        "scrypt$x$8$1$c2FsdHNhbHQ$" + "A" * 43,
    ],
)
def test_damaged_hashes_raise(encoded: str) -> None:
    with pytest.raises(PinHashError):
        verify_pin("1234", encoded)


async def test_hasher_runs_off_the_loop() -> None:
    hasher = PinHasher(FAST_SCRYPT, verify_threads=1, write_threads=1)
    encoded = await hasher.hash("7777")
    assert await hasher.verify("7777", encoded)
    assert not await hasher.verify("7778", encoded)
    with pytest.raises(PinFormatError):
        await hasher.hash("77")
