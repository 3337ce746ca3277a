"""``decide()``: ``policy.md``'s decision rules 1 to 8, in order; the first rule that applies wins.

For ``replace`` this is only the authorization half (the PIN is the replace service's), and
``restore`` is always allowed for a valid extension: the policy never keeps a phone from going
home; the replace service denies ``not_replaced`` when there is nothing to restore.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from callgate.policy.compiled import EMPTY_REACH, CompiledPolicy, Reach
from callgate.policy.syntax import is_valid_extension
from callgate.policy.types import ALL_TARGETS, Action, Decision, Reason

_ACTIONS: Final = {action.value: action for action in Action}

_INVALID: Final = Decision.deny(Reason.INVALID_REQUEST)
_SELF: Final = Decision.deny(Reason.SELF_TARGET)
_RESTORED: Final = Decision(allowed=True, reason=Reason.RESTORED)
_ALLOW_ALL: Final = Decision(allowed=True, reason=Reason.ALLOW_ALL)
_ALLOW_ALL_TARGETS: Final = Decision(allowed=True, reason=Reason.ALLOW_ALL, targets=(ALL_TARGETS,))
_PICKUP_ALL: Final = Decision(allowed=True, reason=Reason.PICKUP_ALL)
_DENY: Final = {reason: Decision.deny(reason) for reason in Reason}


def decide(policy: CompiledPolicy, action: str, ext: str, target: str | None) -> Decision:
    """Decide whether ``ext`` may do ``action`` to ``target`` (``None`` or ``""``: group form)."""
    kind = _ACTIONS.get(action)
    if kind is None or not is_valid_extension(ext):
        return _INVALID
    if target:
        if not is_valid_extension(target):
            return _INVALID
        if target == ext:
            return _SELF
    elif kind is Action.REPLACE:
        return _INVALID  # replace has no group form
    if kind is Action.RESTORE:
        return _RESTORED
    if policy.allow_all:
        return _ALLOW_ALL if target else _ALLOW_ALL_TARGETS
    match kind:
        case Action.PICKUP if target:
            if policy.pickup_all:
                return _PICKUP_ALL
            found = _granted(policy.share, ext, target, Reason.PICKUP_SHARE_GROUP)
            return found or _DENY[Reason.PICKUP_NOT_PERMITTED]
        case Action.PICKUP:
            found = _group_form(policy.share, ext, Reason.PICKUP_SHARE_GROUP)
            return found or _DENY[Reason.NO_PICKUP_GROUP]
        case Action.EAVESDROP if target:
            found = _granted(policy.eavesdrop, ext, target, Reason.EAVESDROP_GROUP)
            found = found or _granted(policy.whisper, ext, target, Reason.WHISPER_GROUP)
            return found or _DENY[Reason.EAVESDROP_NOT_PERMITTED]
        case Action.EAVESDROP:
            return _group_listen(policy, ext) or _DENY[Reason.EAVESDROP_NOT_PERMITTED]
        case Action.WHISPER if target:
            found = _granted(policy.whisper, ext, target, Reason.WHISPER_GROUP)
            return found or _DENY[Reason.WHISPER_NOT_PERMITTED]
        case Action.WHISPER:
            found = _group_form(policy.whisper, ext, Reason.WHISPER_GROUP)
            return found or _DENY[Reason.WHISPER_NOT_PERMITTED]
        case Action.REPLACE if target:
            found = _granted(policy.replace, ext, target, Reason.PHONE_REPLACE_GROUP)
            return found or _DENY[Reason.REPLACE_NOT_PERMITTED]
    return _INVALID  # unreachable: every action and form is matched above


def _granted(table: Mapping[str, Reach], ext: str, target: str, grant: Reason) -> Decision | None:
    """Allow ``grant`` when ``target`` is in the reach ``table`` gives ``ext``."""
    reach = table.get(ext)
    if reach is None or target not in reach.members:
        return None
    return Decision(allowed=True, reason=grant, group=reach.group_of(target))


def _group_form(table: Mapping[str, Reach], ext: str, grant: Reason) -> Decision | None:
    """Allow ``grant`` for everyone in the reach ``table`` gives ``ext``, except ``ext``."""
    reach = table.get(ext, EMPTY_REACH)
    targets = reach.targets_without(ext)
    if not targets:
        return None
    return Decision(True, grant, targets, reach.first_group_without(ext))


def _group_listen(policy: CompiledPolicy, ext: str) -> Decision | None:
    """Everyone in the eavesdrop or whisper reach (a whisper grant includes listening)."""
    targets = policy.listen.get(ext, EMPTY_REACH).targets_without(ext)
    if not targets:
        return None
    group = policy.eavesdrop.get(ext, EMPTY_REACH).first_group_without(ext)
    if group is not None:
        return Decision(True, Reason.EAVESDROP_GROUP, targets, group)
    group = policy.whisper.get(ext, EMPTY_REACH).first_group_without(ext)
    return Decision(True, Reason.WHISPER_GROUP, targets, group)
