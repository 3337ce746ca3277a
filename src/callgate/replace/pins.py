"""Replace PINs: the format users may choose, and how they are kept (scrypt, never in clear).

A PIN is 4 to 12 ASCII digits — what a phone keypad can type and ``GET DATA`` can collect. It is
stored as ``scrypt$<log2 n>$<r>$<p>$<salt>$<key>`` (base64 without padding), with a fresh 16-byte
salt per PIN, so equal PINs do not look equal in the store and the cost can be raised later
without invalidating stored PINs (each hash carries its own parameters).

A 4-digit PIN has only 10,000 values: no hash makes it safe against someone who can read the
store and try them all offline. The hash keeps the PIN out of plain sight (backups, support
dumps); the lockout (``lockout.py``) is what protects a PIN against guessing on the phone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PIN_PATTERN = re.compile(r"[0-9]{4,12}")
MAX_PIN_DIGITS = 12

_SALT_BYTES = 16
_KEY_BYTES = 32
_SCHEME = "scrypt"
# Bounds on the parameters read back from the store: a damaged or hostile row must not make one
# verification take minutes or gigabytes.
_MAX_LOG2_N = 20
_MAX_R = 32
_MAX_P = 16


class PinFormatError(ValueError):
    """The value is not a PIN callgate accepts (4 to 12 digits, as a string)."""


class PinHashError(ValueError):
    """A stored PIN hash cannot be read (wrong scheme, damaged, or absurd parameters)."""


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost. The default (n=2^15, r=8, p=1) takes about 0.1 s and 32 MiB per hash."""

    log2_n: int = 15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (
            1 <= self.log2_n <= _MAX_LOG2_N and 1 <= self.r <= _MAX_R and 1 <= self.p <= _MAX_P
        ):
            raise PinHashError(f"scrypt parameters out of bounds: {self}")

    @property
    def maxmem(self) -> int:
        # scrypt needs 128 * r * n bytes (plus a little); give it twice that.
        return 2 * 128 * self.r * (1 << self.log2_n) * self.p + 1024 * 1024


def check_pin(value: object) -> str:
    """Return ``value`` if it is a well-formed PIN, else raise ``PinFormatError``.

    Only a ``str`` of ASCII digits: ``1234`` as a JSON number would lose leading zeros, and
    ``str.isdigit`` would accept digits from other scripts that no keypad sends.
    """
    if not isinstance(value, str) or PIN_PATTERN.fullmatch(value) is None:
        raise PinFormatError("a PIN is a string of 4 to 12 digits (0-9)")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(pin: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        pin.encode("ascii"),
        salt=salt,
        n=1 << params.log2_n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=_KEY_BYTES,
    )


def hash_pin(pin: str, params: ScryptParams | None = None) -> str:
    """Hash a well-formed PIN with a fresh salt (CPU-bound: call it off the event loop)."""
    params = params or ScryptParams()
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _derive(check_pin(pin), salt, params)
    return f"{_SCHEME}${params.log2_n}${params.r}${params.p}${_b64(salt)}${_b64(key)}"


def _parse(encoded: str) -> tuple[ScryptParams, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise PinHashError("not a callgate scrypt PIN hash")
    try:
        params = ScryptParams(int(parts[1]), int(parts[2]), int(parts[3]))
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as exc:
        raise PinHashError("damaged PIN hash") from exc
    if len(salt) < 8 or len(key) != _KEY_BYTES:
        raise PinHashError("damaged PIN hash")
    return params, salt, key


def verify_pin(candidate: str, encoded: str) -> bool:
    """Whether ``candidate`` is the PIN behind ``encoded``, compared in constant time.

    Anything that is not a well-formed PIN (``*``, ``#``, too short or long) is still run through
    scrypt before the answer, so the reply time does not tell what kind of input was wrong.
    Raises ``PinHashError`` for a damaged hash (the caller fails closed).
    """
    params, salt, key = _parse(encoded)
    well_formed = PIN_PATTERN.fullmatch(candidate) is not None
    material = candidate if well_formed else "0000"
    derived = _derive(material, salt, params)
    return hmac.compare_digest(derived, key) and well_formed


class PinHasher:
    """Runs scrypt in worker threads, at most ``concurrency`` at once.

    scrypt costs tens of MiB per call: the bound keeps a burst of replace attempts (or of PIN
    writes over HTTP) from taking all the memory, and the event loop never waits on it.
    """

    def __init__(self, params: ScryptParams | None = None, concurrency: int = 2) -> None:
        self.params = params or ScryptParams()
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, pin: str) -> str:
        check_pin(pin)
        async with self._slots:
            return await asyncio.to_thread(hash_pin, pin, self.params)

    async def verify(self, candidate: str, encoded: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(verify_pin, candidate, encoded)
