"""``decide()``: ``policy.md``'s decision rules 1 to 8, in order; the first rule that applies wins.

Rules 1 and 2 (a well-formed request, not aimed at oneself) are checked here; then the action and
its form (directed, or group when there is no target) pick one rule function from a table. Rule 3
(``allow_all``) is a table of its own. Two departures from a literal reading, both deliberate:

- ``replace`` answers only the authorization half; the PIN is the replace service's.
- ``restore`` is allowed for any valid extension, even under ``allow_all`` (reason ``restored``):
  the policy never keeps a phone from going home; the replace service answers ``not_replaced``
  when there is nothing to restore.

The rules beside the document (protected extensions, grants that expire; ``policy/supervision.py``
says how they are ordered) are checked here for the directed forms, so that the document's
allowances pay two set look-ups for them, and by ``Supervision.group_form`` for the group forms;
a client without them (``supervision=None``) pays one comparison.

This is the hot path of every FastAGI request, hence the tables and the prebuilt decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

from callgate.policy.compiled import EMPTY_REACH, CompiledPolicy
from callgate.policy.supervision import GrantIndex, Supervision, checked_now
from callgate.policy.syntax import EXTENSION_RE
from callgate.policy.types import ALL_TARGETS, Decision, Reason

Rule = Callable[[CompiledPolicy, str, str], Decision]

_is_extension: Final = EXTENSION_RE.fullmatch

_INVALID: Final = Decision.deny(Reason.INVALID_REQUEST)
_SELF: Final = Decision.deny(Reason.SELF_TARGET)
_PROTECTED: Final = Decision.deny(Reason.PROTECTED)
_LISTEN_ACTIONS: Final = frozenset({"eavesdrop", "whisper"})
_NO_GRANTS: Final[Mapping[str, GrantIndex]] = {}
_RESTORED: Final = Decision(allowed=True, reason=Reason.RESTORED)
_ALLOW_ALL: Final = Decision(allowed=True, reason=Reason.ALLOW_ALL)
_ALLOW_ALL_TARGETS: Final = Decision(allowed=True, reason=Reason.ALLOW_ALL, targets=(ALL_TARGETS,))
_PICKUP_ALL: Final = Decision(allowed=True, reason=Reason.PICKUP_ALL)
_NO_PICKUP: Final = Decision.deny(Reason.PICKUP_NOT_PERMITTED)
_NO_PICKUP_GROUP: Final = Decision.deny(Reason.NO_PICKUP_GROUP)
_NO_EAVESDROP: Final = Decision.deny(Reason.EAVESDROP_NOT_PERMITTED)
_NO_WHISPER: Final = Decision.deny(Reason.WHISPER_NOT_PERMITTED)
_NO_REPLACE: Final = Decision.deny(Reason.REPLACE_NOT_PERMITTED)

# Enum members looked up once: attribute access on an Enum class is slow on the hot path.
_SHARE: Final = Reason.PICKUP_SHARE_GROUP
_EAVESDROP: Final = Reason.EAVESDROP_GROUP
_WHISPER: Final = Reason.WHISPER_GROUP
_REPLACE: Final = Reason.PHONE_REPLACE_GROUP


def decide(
    policy: CompiledPolicy,
    action: str,
    ext: str,
    target: str | None,
    *,
    now: datetime | None = None,
    supervision: Supervision | None = None,
) -> Decision:
    """Decide whether ``ext`` may do ``action`` to ``target`` (``None`` or ``""``: group form).

    ``supervision``: the client's protected extensions and grants (``compile_supervision``;
    ``None`` for a client with neither: then exactly the document's rules). ``now`` is the time
    the grants are judged at, an aware datetime, required when there are grants: the decision
    never reads the clock, so that a test, a replay and the expiry timer all decide alike.
    Raises ``ValueError`` when a grant must be looked at and ``now`` is ``None`` (or naive): a
    caller's bug, never a request's.
    """
    try:
        rules = (_ALLOW_ALL_RULES if policy.allow_all else _RULES).get(action)
        if rules is None or _is_extension(ext) is None:
            return _INVALID
        if target and _is_extension(target) is None:
            return _INVALID
    except TypeError:  # not strings: not a request anyone could have meant
        return _INVALID
    if not target:
        if supervision is None:
            return rules[1](policy, ext, "")
        return supervision.group_form(policy, rules[1], action, ext, now)
    if target == ext:
        return _SELF
    if supervision is None:
        return rules[0](policy, ext, target)
    # policy.md: protection right after rule 2, before allow_all; grants only where rules deny.
    if target in supervision.protected and action in _LISTEN_ACTIONS:
        return _PROTECTED
    decision = rules[0](policy, ext, target)
    if decision.allowed:
        return decision
    index = supervision.grants.get(action, _NO_GRANTS).get(ext)
    if index is None:
        return decision
    reach = index.reach
    if reach is not None and target not in reach:
        return decision  # none of its grants reaches the target: most denials end here
    now = checked_now(now)
    rows = index.rows
    if rows is None:
        grant = index.allowing(target, now, supervision)
        return decision if grant is None else grant.allows
    # The scan of an extension's few grants, inlined: the hot path of a client with many grants.
    for start, end, extensions, member_sets, allows in rows:
        if start <= now < end:
            if target in extensions:
                return allows
            for members in member_sets:
                if target in members:
                    return allows
    return decision


# -- rule 4: directed pickup; rule 5: group pickup


def _pickup(policy: CompiledPolicy, ext: str, target: str) -> Decision:
    if policy.pickup_all:
        return _PICKUP_ALL
    reach = policy.share.get(ext)
    return (reach is not None and reach.decisions(_SHARE).get(target)) or _NO_PICKUP


def _group_pickup(policy: CompiledPolicy, ext: str, _: str) -> Decision:
    reach = policy.share.get(ext, EMPTY_REACH)
    targets = reach.targets_without(ext)
    if not targets:
        return _NO_PICKUP_GROUP
    return Decision(True, _SHARE, targets, reach.first_group_without(ext))


# -- rule 6: listen and whisper; rule 7: their group forms


def _eavesdrop(policy: CompiledPolicy, ext: str, target: str) -> Decision:
    """A whisper grant includes listening: whispering includes hearing the call."""
    found = policy.granted("eavesdrop_" + ext).get(target)
    return found or policy.granted("whisper_" + ext).get(target) or _NO_EAVESDROP


def _whisper(policy: CompiledPolicy, ext: str, target: str) -> Decision:
    return policy.granted("whisper_" + ext).get(target) or _NO_WHISPER


def _group_eavesdrop(policy: CompiledPolicy, ext: str, _: str) -> Decision:
    targets = policy.listen(ext).targets_without(ext)
    if not targets:
        return _NO_EAVESDROP
    group = policy.grant("eavesdrop_" + ext).first_group_without(ext)
    if group is not None:
        return Decision(True, _EAVESDROP, targets, group)
    group = policy.grant("whisper_" + ext).first_group_without(ext)
    return Decision(True, _WHISPER, targets, group)


def _group_whisper(policy: CompiledPolicy, ext: str, _: str) -> Decision:
    reach = policy.grant("whisper_" + ext)
    targets = reach.targets_without(ext)
    if not targets:
        return _NO_WHISPER
    return Decision(True, _WHISPER, targets, reach.first_group_without(ext))


# -- rule 8: replace (the authorization half), and restore


def _replace(policy: CompiledPolicy, ext: str, target: str) -> Decision:
    reach = policy.replace.get(ext)
    return (reach is not None and reach.decisions(_REPLACE).get(target)) or _NO_REPLACE


def _restore(_policy: CompiledPolicy, _ext: str, _target: str) -> Decision:
    return _RESTORED


def _invalid(_policy: CompiledPolicy, _ext: str, _target: str) -> Decision:
    return _INVALID


def _allow_all(_policy: CompiledPolicy, _ext: str, _target: str) -> Decision:
    return _ALLOW_ALL


def _allow_all_targets(_policy: CompiledPolicy, _ext: str, _target: str) -> Decision:
    return _ALLOW_ALL_TARGETS


# action -> (directed rule, group-form rule)
_RULES: Final[dict[str, tuple[Rule, Rule]]] = {
    "pickup": (_pickup, _group_pickup),
    "eavesdrop": (_eavesdrop, _group_eavesdrop),
    "whisper": (_whisper, _group_whisper),
    "replace": (_replace, _invalid),  # replace always names the extension to take over
    "restore": (_restore, _restore),
}
_ALLOW_ALL_RULES: Final[dict[str, tuple[Rule, Rule]]] = {
    "pickup": (_allow_all, _allow_all_targets),
    "eavesdrop": (_allow_all, _allow_all_targets),
    "whisper": (_allow_all, _allow_all_targets),
    "replace": (_allow_all, _invalid),
    "restore": (_restore, _restore),
}
