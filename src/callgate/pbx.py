"""Which Asterisk server (PBX) a channel, a session or a Manager connection belongs to.

A uniqueid or a channel name is unique on one Asterisk server only: two servers can hand out the
same one. So every key that names a channel or a session is a ``ChannelRef`` (PBX and uniqueid),
never a bare uniqueid, and each PBX has its own Manager connection. The settings name the PBXes
(``[pbx.<name>]`` tables; ``--ami`` alone is the one named ``DEFAULT_PBX``), and the dialplan says
which one a FastAGI session comes from (``callgate.agi.pbx``).

Imported by the FastAGI side, the Manager side and HTTP alike: it depends on nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NewType

PbxName = NewType("PbxName", str)
"""The name an Asterisk server is known by in callgate (settings, logs, keys)."""

DEFAULT_PBX: Final = PbxName("default")
"""The one PBX of a single-server deployment (``--ami``), and the PBX of a FastAGI request that
names none."""


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """A channel on one PBX: what names a spier, a spied-on channel or a tracked session."""

    pbx: PbxName
    uniqueid: str

    def __str__(self) -> str:
        return f"{self.pbx}/{self.uniqueid}"


class ManagerState(StrEnum):
    """A PBX's Manager connection; the values are what ``/readyz`` reports as ``ami``.

    The member names, lower-cased, are the ``state`` labels of the ``callgate_ami_state`` metric
    (``metric_label``): dashboards read those, ``/readyz`` readers the values; both stay as they
    were when the two had separate types.
    """

    CONNECTED = "up"
    """Logged in: live enforcement is on."""
    DISCONNECTED = "down"
    """Not logged in (connecting, or reconnecting after the connection was lost)."""
    AUTH_FAILED = "auth_failed"
    """Asterisk refused the Manager credentials: fix ``ami_user``/``ami_secret``."""
    STANDBY = "standby"
    """Not connected on purpose: this instance does not hold the PBX's enforcement lock (another
    instance enforces on it, or the store that holds the locks is unreachable)."""
    NOT_CONFIGURED = "not_configured"
    """No Manager connection configured (no ``--ami``): decisions only, nothing ended live."""

    @property
    def metric_label(self) -> str:
        return self.name.lower()
