"""Decision tables: the worked example of policy.md and its variants, rule by rule."""

from __future__ import annotations

import pytest
from policy_examples import REFERENCE

from callgate.policy import (
    CompiledPolicy,
    compile_policy,
    decide,
    parse_document,
)


def compiled(**changes: object) -> CompiledPolicy:
    return compile_policy(parse_document({**REFERENCE, **changes}))


def verdict(
    policy: CompiledPolicy, action: str, ext: str, target: str | None
) -> tuple[object, ...]:
    decision = decide(policy, action, ext, target)
    return decision.verdict, decision.reason, decision.targets


# The worked example of policy.md, row by row (replace: the policy half; the PIN decides later).
WORKED_EXAMPLE = [
    ("pickup", "100", "103", "allow", "pickup_all", ()),
    ("pickup", "100", None, "allow", "pickup_share_group", ("101",)),
    ("pickup", "101", None, "allow", "pickup_share_group", ("100", "102")),
    ("pickup", "103", None, "deny", "no_pickup_group", ()),
    ("eavesdrop", "100", "101", "allow", "eavesdrop_group", ()),
    ("eavesdrop", "100", "102", "deny", "eavesdrop_not_permitted", ()),
    ("whisper", "100", "101", "deny", "whisper_not_permitted", ()),
    ("whisper", "101", "103", "allow", "whisper_group", ()),
    ("eavesdrop", "101", "103", "allow", "whisper_group", ()),
    ("eavesdrop", "101", "101", "deny", "self_target", ()),
    ("replace", "100", "101", "allow", "phone_replace_group", ()),
    ("replace", "100", "102", "deny", "replace_not_permitted", ()),
]


@pytest.mark.parametrize(
    ("action", "ext", "target", "decision", "reason", "targets"), WORKED_EXAMPLE
)
def test_worked_example(
    action: str, ext: str, target: str | None, decision: str, reason: str, targets: tuple[str, ...]
) -> None:
    assert verdict(compiled(), action, ext, target) == (decision, reason, targets)
