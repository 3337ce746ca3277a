"""Replace PINs: the format users may choose, and how they are kept (scrypt, never in clear).

A PIN is 4 to 12 ASCII digits — what a phone keypad can type and ``GET DATA`` can collect. It is
stored as ``scrypt$<log2 n>$<r>$<p>$<salt>$<key>`` (base64 without padding), with a fresh 16-byte
salt per PIN, so equal PINs do not look equal in the store and the cost can be raised later
without invalidating stored PINs (each hash carries its own parameters).

A 4-digit PIN has only 10,000 values: no hash makes it safe against someone who can read the
store and try them all offline. The hash keeps the PIN out of plain sight (backups, support
dumps); the lockout (``lockout.py``) is what protects a PIN against guessing on the phone.

scrypt runs in threads: CPython's ``hashlib.scrypt`` releases the GIL for the whole derivation
(``bench/pin_fairness_bench.py`` measures it: two threads do twice the work of one in the same
time), so the event loop and other hashes run beside it. A PIN check during a call and a PIN write
over HTTP never share a thread or a queue (``PinHasher``), and within each, clients take turns.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from callgate.policy.syntax import MAX_PIN_DIGITS as MAX_PIN_DIGITS  # agi_flow asks for as many
from callgate.policy.syntax import PIN_FORMAT_RULE, is_well_formed_pin

_T = TypeVar("_T")

log = logging.getLogger(__name__)


_SALT_BYTES = 16
_KEY_BYTES = 32
_SCHEME = "scrypt"
# Bounds on the parameters read back from the store: a damaged or hostile row must not make one
# verification take minutes or gigabytes.
_MAX_LOG2_N = 20
_MAX_R = 32
_MAX_P = 16


class PinFormatError(ValueError):
    """The value is not a PIN callgate accepts (``PIN_FORMAT_RULE``)."""


class PinHashError(ValueError):
    """A stored PIN hash cannot be read (wrong scheme, damaged, or absurd parameters)."""


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost. The default (n=2^15, r=8, p=1) takes 32 MiB (128 * n * r bytes) per hash;
    ``bench/replace_bench.py`` prints its time."""

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
    if not is_well_formed_pin(value):
        raise PinFormatError(f"a PIN is {PIN_FORMAT_RULE}")
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
    well_formed = is_well_formed_pin(candidate)
    material = candidate if well_formed else "0000"
    derived = _derive(material, salt, params)
    return hmac.compare_digest(derived, key) and well_formed


class FairSlots:
    """At most ``size`` jobs hold a slot at once; waiting jobs get one client by client, in turn.

    A client with a hundred jobs waiting delays another client's job by one job per slot at most,
    not by its hundred: each freed slot goes to the next client in the rotation, and a client
    that got one goes to the back of it.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("at least one slot")
        self._free = size
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        """Each client's waiting jobs in arrival order; the dict's order is the rotation."""

    def waiting(self, key: str | None = None) -> int:
        """Jobs waiting for a slot: ``key``'s, or everyone's."""
        if key is not None:
            return len(self._waiting.get(key, ()))
        return sum(map(len, self._waiting.values()))

    async def acquire(self, key: str) -> None:
        if self._free > 0:  # never true while anyone waits: release() hands slots over
            self._free -= 1
            return
        slot = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(slot)
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.release()  # handed over just as the waiter was cancelled: pass it on
            else:
                self._forget(key, slot)
            raise

    def release(self) -> None:
        while self._waiting:
            key = next(iter(self._waiting))
            queue = self._waiting.pop(key)
            slot = queue.popleft()
            if queue:
                self._waiting[key] = queue  # to the back of the rotation
            if not slot.done():
                slot.set_result(None)
                return
        self._free += 1

    def _forget(self, key: str, slot: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is None:
            return
        if slot in queue:
            queue.remove(slot)
        if not queue:
            del self._waiting[key]


class PinHasher:
    """Runs scrypt off the event loop: PIN checks and PIN writes on separate threads.

    A PIN check is part of a live call (someone waits at the phone); a PIN write is an HTTP
    request that can come by the hundred. Each has its own thread pool and its own ``FairSlots``
    of the same size, so a check never queues behind a write, jobs never queue inside a pool
    (where they would be first come, first served), and within each kind clients take turns.
    The sizes also bound the memory: scrypt takes tens of MiB per running hash.
    """

    def __init__(
        self,
        params: ScryptParams | None = None,
        *,
        verify_threads: int = 2,
        write_threads: int = 1,
    ) -> None:
        self.params = params or ScryptParams()
        self._verify_slots = FairSlots(verify_threads)
        self._write_slots = FairSlots(write_threads)
        self._verify_pool = ThreadPoolExecutor(verify_threads, "callgate-pin-verify")
        self._write_pool = ThreadPoolExecutor(
            write_threads, "callgate-pin-write", initializer=_yield_the_cpu
        )

    def writes_waiting(self, client_id: str | None = None) -> int:
        """PIN writes waiting for a hashing thread: ``client_id``'s, or everyone's."""
        return self._write_slots.waiting(client_id)

    async def hash(self, pin: str, client_id: str = "") -> str:
        """Hash a PIN written for ``client_id`` (a turn among the writing clients)."""
        check_pin(pin)
        return await _run(
            self._write_slots, self._write_pool, client_id, hash_pin, pin, self.params
        )

    async def verify(self, candidate: str, encoded: str, client_id: str = "") -> bool:
        """Check a PIN typed during a call: a turn among the clients' calls, never behind writes."""
        return await _run(
            self._verify_slots, self._verify_pool, client_id, verify_pin, candidate, encoded
        )

    def close(self) -> None:
        """Stop the threads once the running hashes end (nothing waits in the pools)."""
        self._verify_pool.shutdown(wait=False, cancel_futures=True)
        self._write_pool.shutdown(wait=False, cancel_futures=True)


WRITE_THREAD_NICE = 10
"""How much lower than the rest of the process the PIN write threads run (Linux): when the CPU
is short, the event loop and the PIN checks of calls go first, PIN writes wait."""


def _yield_the_cpu() -> None:
    # Linux keeps a nice value per thread (setpriority on a thread id changes that thread only);
    # elsewhere PRIO_PROCESS would lower the whole process, so nothing is done.
    if sys.platform != "linux":
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(
            os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WRITE_THREAD_NICE
        )
    except OSError as exc:  # a sandbox may refuse it: writes then compete as equals
        log.warning("PIN write thread keeps its priority: %s", exc)


async def _run(
    slots: FairSlots, pool: ThreadPoolExecutor, key: str, work: Callable[..., _T], *args: object
) -> _T:
    """``work(*args)`` in ``pool`` once ``key`` has a slot; the slot is held until the thread is
    done, even when the caller is cancelled first (a thread cannot be stopped: were its slot given
    away, the next job would queue inside the pool, and scrypt's memory bound would not hold)."""
    await slots.acquire(key)
    try:
        job = asyncio.get_running_loop().run_in_executor(pool, work, *args)
    except BaseException:
        slots.release()
        raise

    def done(finished: asyncio.Future[_T]) -> None:
        slots.release()
        if not finished.cancelled():
            finished.exception()  # retrieved: a caller cancelled meanwhile does not read it

    job.add_done_callback(done)
    return await asyncio.shield(job)
