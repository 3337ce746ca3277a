"""The reference document of ``policy.md`` (the provider's "system response" example), shared by
every test folder that needs a realistic policy."""

from __future__ import annotations

REFERENCE_DOCUMENT: dict[str, object] = {
    "allow_all": False,
    "pickup_all": True,
    "groups": {"support": ["100", "101"], "sales": ["102", "101"], "hr": ["100", "101", "103"]},
    "pickup_share_groups": ["support", "sales"],
    "phone_replace_groups": ["support"],
    "eavesdrop_100": ["support"],
    "whisper_101": ["sales", "hr"],
}
