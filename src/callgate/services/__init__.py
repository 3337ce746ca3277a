"""The use cases every entry point calls (HTTP today, the console next); never a repository.

``daemon.py`` builds them on the store's ports and hands them to the entry points. A write only
writes: what follows from it (the registry, the revocations) follows the store's change feed.
"""

from __future__ import annotations

from dataclasses import dataclass

from callgate.audit import AuditLog
from callgate.replace.service import ReplaceService
from callgate.services.follower import PolicyFollower
from callgate.services.policies import PolicyService
from callgate.services.supervision import GrantLimits, SupervisionService
from callgate.services.tokens import TokenService

__all__ = [
    "AppServices",
    "GrantLimits",
    "PolicyFollower",
    "PolicyService",
    "ReplaceService",
    "SupervisionService",
    "TokenService",
]


@dataclass(frozen=True, slots=True)
class AppServices:
    """The use cases, as one value the entry points are built with."""

    policies: PolicyService
    tokens: TokenService
    replace: ReplaceService
    """Replace PINs and replacements (``callgate.replace.service``)."""
    audit: AuditLog
    """The audit log: written by the sessions, read by the audit route (``AuditLog.list``)."""
    supervision: SupervisionService
    """The settings and grants beside each policy (``callgate.services.supervision``)."""
