"""Documents the policy tests share: the reference example of policy.md."""

from __future__ import annotations

from typing import Any

REFERENCE: dict[str, Any] = {
    "allow_all": False,
    "pickup_all": True,
    "groups": {
        "support": ["100", "101"],
        "sales": ["102", "101"],
        "hr": ["100", "101", "103"],
    },
    "pickup_share_groups": ["support", "sales"],
    "phone_replace_groups": ["support"],
    "eavesdrop_100": ["support"],
    "whisper_101": ["sales", "hr"],
}
