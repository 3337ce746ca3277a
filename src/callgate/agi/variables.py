"""Every channel-variable name and value that crosses the FastAGI boundary, in one place.

The shipped dialplan (``asterisk-conf/``) reads exactly these names after the AGI returns; a
rename here is a change of the outside contract (``README.md`` "FastAGI").
"""

from __future__ import annotations

from typing import Final

# What callgate sets on the asking channel (always all of them, a denial included).
DECISION: Final = "CALLGATE_DECISION"
"""``ALLOW`` or ``DENY``. The dialplan lets a call through only on ``ALLOW``."""
REASON: Final = "CALLGATE_REASON"
"""A reason code of ``policy.md`` (``pickup_all``, ``invalid_request``, ...)."""
TARGETS: Final = "CALLGATE_TARGETS"
"""Group forms: the allowed targets, sorted, joined by ``&`` (``*`` = everyone); else empty."""
VERSION: Final = "CALLGATE_VERSION"
"""The version of the client's policy that decided (0 = the default document)."""
PICKUP: Final = "CALLGATE_PICKUP"
"""An allowed pickup: the ``Pickup()`` argument (``<client>/<ext>@PICKUPMARK`` items joined by
``&``); empty when targets are ``*`` (plain ``Pickup()`` in the client's pickup group) or denied."""

NOTICE: Final = "CALLGATE_NOTICE"
"""An allowed listen or whisper of a client whose settings ask for a notice to the monitored:
``tone`` (once, as the session starts), ``tone,<N>`` (and again every N seconds while it lasts),
``tone,<N or empty>,<sound>`` (that Asterisk sound instead of the generated tone); empty for no
notice and for every other answer. The shipped dialplan gives it before ``ChanSpy`` and denies
when it cannot (``[callgate]`` ``notice``)."""

ALL: Final = (DECISION, REASON, TARGETS, VERSION, PICKUP, NOTICE)

# Set on the PJSIP endpoint (``set_var=``), read by callgate: what the phone itself is.
OWN_EXTENSION: Final = "CALLGATE_EXT"
"""``set_var=CALLGATE_EXT=<ext>``: the physical phone's own extension (the replace flow reads it
with ``GET VARIABLE``; caller ID is never used)."""
CLIENT: Final = "CALLGATE_CLIENT"
"""``set_var=CALLGATE_CLIENT=<client>``: the client the endpoint belongs to (the shipped dialplan
checks it against the client it passes to the AGI)."""

ALLOW: Final = "ALLOW"
DENY: Final = "DENY"

# Set by the dialplan, read by Asterisk applications; callgate only formats values for them.
PICKUPMARK: Final = "PICKUPMARK"
"""``__PICKUPMARK=<client>/<ext>`` marks a ringing leg; ``Pickup(<client>/<ext>@PICKUPMARK)``."""
AGISTATUS: Final = "AGISTATUS"
"""Set by Asterisk after the AGI; the dialplan requires ``SUCCESS`` and ``ALLOW``."""

# Set on the PJSIP endpoint (``set_var=`` in pjsip.conf): who a phone is, from server-side data
# only. The dialplan reads them, ``asterisk_conf`` checks every endpoint has them, the replace
# flow reads ``ENDPOINT_EXT`` with ``GET VARIABLE``.
ENDPOINT_CLIENT: Final = "CALLGATE_CLIENT"
"""The client (tenant) the phone belongs to."""
ENDPOINT_EXT: Final = "CALLGATE_EXT"
"""The phone's own extension (never taken from caller ID)."""

# Set by the shipped dialplan's ``identify`` step; callgate reads them back over the Manager
# (``Getvar``) to recover the grant of a listen/whisper that outlived a restart of callgate.
DIALPLAN_CLIENT: Final = "CG_CLIENT"
"""The client the dialplan checked ``ENDPOINT_CLIENT`` against (the AGI's first argument)."""
DIALPLAN_ACTING: Final = "CG_ACTING"
"""The extension the phone acts as now: its own, or the one it replaced (the AGI's second)."""
