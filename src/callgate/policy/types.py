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
    PROTECTED = "protected"
    """listen or whisper to a protected extension (``call_control_settings``): wins over every
    rule and every grant"""
    # allowances
    ALLOW_ALL = "allow_all"
    PICKUP_ALL = "pickup_all"
    PICKUP_SHARE_GROUP = "pickup_share_group"
    EAVESDROP_GROUP = "eavesdrop_group"
    WHISPER_GROUP = "whisper_group"
    PHONE_REPLACE_GROUP = "phone_replace_group"
    RESTORED = "restored"
    TEMPORARY_GRANT = "temporary_grant"
    """allowed by an active grant (``grants``) where the document denies; the id is in the
    decision's ``grant_ids``"""
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
    grant_ids: tuple[str, ...] = ()
    """The grants that allowed the request (reason ``temporary_grant``: exactly one for a directed
    request), or, for a group form, added targets the document does not give; sorted."""
    excluded: tuple[str, ...] = ()
    """Only with ``targets == ("*",)``: the extensions ``*`` does not cover (the protected ones),
    sorted. ``*`` cannot be narrowed to a list: under ``allow_all`` the client's extensions are not
    known to the policy."""

    @property
    def grant_id(self) -> str | None:
        """The grant a directed request was allowed by (reason ``temporary_grant``), if any."""
        return self.grant_ids[0] if self.grant_ids else None

    @property
    def verdict(self) -> str:
        return "allow" if self.allowed else "deny"

    def to_json(self) -> dict[str, object]:
        """The contract's JSON form: ``{"decision", "reason", "targets"}``, plus ``grant_ids`` and
        ``excluded`` when not empty (never for a client without settings or grants)."""
        body: dict[str, object] = {
            "decision": self.verdict,
            "reason": str(self.reason),
            "targets": list(self.targets),
        }
        if self.grant_ids:
            body["grant_ids"] = list(self.grant_ids)
        if self.excluded:
            body["excluded"] = list(self.excluded)
        return body

    @classmethod
    def deny(cls, reason: Reason) -> Decision:
        return cls(allowed=False, reason=reason)
