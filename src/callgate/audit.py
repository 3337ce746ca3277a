"""What was decided and what happened, as values handed to the audit log.

The FastAGI handlers and the replace flow produce ``AuditEvent``s; the Manager side adds the start
and end of each listen/whisper session. ``AuditSink.record`` never blocks and never raises into a
caller: an audit write must not delay a phone, so events are queued and persisted in the
background.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol

SESSION_ACTIONS = frozenset({"eavesdrop", "whisper"})
"""The actions whose allowing decision opens a listen/whisper session with a start and an end."""


class EndReason(StrEnum):
    """Why a listen/whisper session ended (the audit API's ``end_reason``)."""

    LISTENER_HANGUP = "listener_hangup"
    CALL_ENDED = "call_ended"
    REVOKED = "revoked"


class AuditEvent(NamedTuple):
    """One audit record: immutable, and a tuple because one is built for every FastAGI decision
    (a frozen dataclass sets each of its fields through ``object.__setattr__``)."""

    time: datetime
    client_id: str
    action: str
    ext: str
    target: str | None
    decision: str
    """``"allow"`` or ``"deny"``."""
    reason: str
    policy_version: int
    uniqueid: str | None = None
    """Asterisk's uniqueid of the channel that asked (the listener's channel for a spy session)."""
    channel: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    """More facts worth keeping (for example ``("phone", "100")`` for a replace)."""
    started: datetime | None = None
    ended: datetime | None = None
    end_reason: EndReason | None = None
    """Set only on the events the Manager side records for a listen/whisper session: one with
    ``started`` when ChanSpy began, one with ``ended`` and ``end_reason`` when it ended. They
    complete the allowing decision's record (same client, action and ``uniqueid``)."""


class AuditSink(Protocol):
    def record(self, event: AuditEvent) -> None: ...
