"""Values the policy core hands to the rest of callgate: actions, reason codes, decisions.

Reason codes are part of the outside contract (``../shared/spec/policy.md``): the dialplan, the
HTTP API and the logs all carry them verbatim, so they never change spelling.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    PICKUP = "pickup"
    EAVESDROP = "eavesdrop"
    WHISPER = "whisper"
    REPLACE = "replace"
    RESTORE = "restore"


class Reason(StrEnum):
    # denials that come before any rule
    INVALID_REQUEST = "invalid_request"
    SELF_TARGET = "self_target"
    # allowances
    ALLOW_ALL = "allow_all"
    PICKUP_ALL = "pickup_all"
    PICKUP_SHARE_GROUP = "pickup_share_group"
    EAVESDROP_GROUP = "eavesdrop_group"
    WHISPER_GROUP = "whisper_group"
    PHONE_REPLACE_GROUP = "phone_replace_group"
    RESTORED = "restored"
    # denials by rule
    PICKUP_NOT_PERMITTED = "pickup_not_permitted"
    NO_PICKUP_GROUP = "no_pickup_group"
    EAVESDROP_NOT_PERMITTED = "eavesdrop_not_permitted"
    WHISPER_NOT_PERMITTED = "whisper_not_permitted"
    REPLACE_NOT_PERMITTED = "replace_not_permitted"
    NO_REPLACE_PIN = "no_replace_pin"
    LOCKED_OUT = "locked_out"
    BAD_PIN = "bad_pin"
    NOT_REPLACED = "not_replaced"
    # the service could not decide: it fails closed
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


ALL_TARGETS = "*"
"""The target list of a group form under ``allow_all``: everyone in the client."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request. ``targets`` is sorted, and only filled for group forms."""

    allowed: bool
    reason: Reason
    targets: tuple[str, ...] = ()
    group: str | None = None
    """The group whose membership granted the request, when one did (for logs and audit)."""

    @property
    def verdict(self) -> str:
        return "allow" if self.allowed else "deny"

    def to_json(self) -> dict[str, object]:
        """The contract's JSON form: ``{"decision", "reason", "targets"}``."""
        return {"decision": self.verdict, "reason": str(self.reason), "targets": list(self.targets)}

    @classmethod
    def deny(cls, reason: Reason) -> Decision:
        return cls(allowed=False, reason=reason)
