"""Which Asterisk server a FastAGI session comes from: ``pbx_of(environment)``.

The shipped dialplan passes its server's name as the fourth AGI argument: ``[globals]`` holds
``CALLGATE_PBX=<name>`` (one value per Asterisk server) and every FastAGI call ends with it,
``AGI(agi://host/eavesdrop,<client>,<acting>,<target>,${CALLGATE_PBX})`` (``restore`` has no
target: ``...,<acting>,,${CALLGATE_PBX}``). An argument, not the URL's query: the quick path reads
it from the environment block already parsed (no ``GET VARIABLE`` round trip), and the URL stays
``agi://host/<action>`` for ``callgate check-conf``. An empty or absent argument is
``DEFAULT_PBX`` (a dialplan from before several servers). ``pbx_gate.PbxGate`` denies the
sessions of a PBX the settings do not name.
"""

from __future__ import annotations

from typing import Final

from callgate.agi.protocol import AgiEnvironment
from callgate.pbx import DEFAULT_PBX, PbxName

PBX_ARGUMENT: Final = 4
"""``agi_arg_4``: the PBX name (after client, acting extension and target)."""


def pbx_of(environment: AgiEnvironment) -> PbxName:
    """The PBX the session comes from (``agi_arg_4``), ``DEFAULT_PBX`` when it names none."""
    return PbxName(environment.arg(PBX_ARGUMENT) or DEFAULT_PBX)
