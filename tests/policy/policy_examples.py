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


def with_groups(**groups: object) -> dict[str, Any]:
    """The reference document with these groups added or replaced."""
    return {**REFERENCE, "groups": {**REFERENCE["groups"], **groups}}


# The tables of the policy tests, named so that tests/http_api/test_openapi_schema.py can hold
# the published JSON Schema to the same documents.

VALID_GROUP_NAMES = ["g", "x" * 64, "night shift", "Ventes été", "客服", "a/b:c", " padded "]
UNKNOWN_KEYS = [
    "eavesdrp_100",
    "Allow_all",
    "eavesdrop",
    "whisper",
    "eavesdrop100",
    "barge_100",
    "",
]
BAD_DYNAMIC_KEYS = ["eavesdrop_1 00", "whisper_", "eavesdrop_" + "1" * 33, "whisper_1/2"]
ONLY_THE_KEY_IS_WRONG: dict[str, Any] = {
    "eavesdrp_100": "night",
    "whisper_": ["night"],
    "eavesdrop_1 0": [7],
}
BOOLEAN_FIELDS = ["allow_all", "pickup_all"]
NOT_BOOLEANS: list[object] = ["true", "false", 1, 0, None, [], {}]
WRONG_SHAPES: list[tuple[dict[str, Any], tuple[str | int, ...], str]] = [
    ({"pickup_share_groups": "support"}, ("pickup_share_groups",), "array of group names"),
    ({"pickup_share_groups": {"support": 1}}, ("pickup_share_groups",), "array"),
    ({"phone_replace_groups": [1]}, ("phone_replace_groups", 0), "must be a string"),
    ({"eavesdrop_100": "support"}, ("eavesdrop_100",), "array of group names"),
    ({"whisper_101": [None]}, ("whisper_101", 0), "must be a string"),
    ({"groups": ["support"]}, ("groups",), "object"),
    ({"groups": None}, ("groups",), "object"),
]
"""(changes to the reference document, where the error is, a fragment of its message)"""
BAD_MEMBERS: list[tuple[object, tuple[str | int, ...]]] = [
    ("102", ("groups", "sales")),
    ([102], ("groups", "sales", 0)),
    (["102", "101", "103", None], ("groups", "sales", 3)),
    ({"102": True}, ("groups", "sales")),
]
"""(the members of group sales, where the error is)"""
BAD_EXTENSIONS = ["1 00", "", "x" * 33, "100\n", "10#", "é", "*8", "1,2"]
BAD_GROUP_NAMES = ["", "x" * 65, "a\x00b", "tab\there", "new\nline", "\x7f", "\x85"]
MISSING_REFERENCES: list[tuple[str, list[str], tuple[str, int]]] = [
    ("pickup_share_groups", ["support", "night"], ("pickup_share_groups", 1)),
    ("phone_replace_groups", ["night"], ("phone_replace_groups", 0)),
    ("eavesdrop_100", ["support", "hr", "night"], ("eavesdrop_100", 2)),
    ("whisper_101", ["night", "sales"], ("whisper_101", 0)),
    ("whisper_999", ["night"], ("whisper_999", 0)),
]
"""(a field, a list naming the undefined group 'night', where the error is)"""
NOT_OBJECTS: list[object] = ["[]", "1", '"policy"', "null", "true", [], None, 3]
"""JSON texts and decoded values that are not an object."""
EVERY_ERROR_AT_ONCE: dict[str, Any] = {
    **with_groups(sales=["102", "1 01"]),
    "pickup_all": "yes",
    "eavesdrp_100": ["support"],
    "phone_replace_groups": ["night"],
}

# The list limits (test_policy_list_limits.py)
GROUPS: dict[str, Any] = {"groups": {"support": ["100", "101"]}}
LIST_FIELDS = ["pickup_share_groups", "phone_replace_groups", "eavesdrop_100", "whisper_1.2+3"]


def grants(prefix: str, count: int) -> dict[str, list[str]]:
    """``count`` grant keys of ``prefix``, each naming group support."""
    return {f"{prefix}{n}": ["support"] for n in range(count)}
