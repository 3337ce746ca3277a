"""The lexical rules of ``policy.md``: what an extension, a group name and a client id look like,
and how long a document's lists may be.

The patterns are written once here and used twice: by pydantic (as ``StringConstraints``, checked
in Rust while a document is validated) and by ``decide()`` on every request (Python ``re``). Both
engines read them the same way: ASCII character classes, anchored at both ends. The HTTP layer's
OpenAPI document imports them too, so that what it publishes is what is checked.
"""

from __future__ import annotations

import re
from typing import Final

_EXTENSION: Final = r"[A-Za-z0-9_.+-]{1,32}"
EXTENSION_PATTERN: Final = f"^{_EXTENSION}$"
GROUP_NAME_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]{1,64}$"
CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
DYNAMIC_KEY_PATTERN: Final = f"^(eavesdrop|whisper)_{_EXTENSION}$"

EAVESDROP_PREFIX: Final = "eavesdrop_"
WHISPER_PREFIX: Final = "whisper_"
EAVESDROP_KEY_PATTERN: Final = f"^{EAVESDROP_PREFIX}{_EXTENSION}$"
WHISPER_KEY_PATTERN: Final = f"^{WHISPER_PREFIX}{_EXTENSION}$"

MAX_GROUPS: Final = 100
MAX_GROUP_SIZE: Final = 200
MAX_GROUP_LIST: Final = MAX_GROUPS
"""Names in one group list (``pickup_share_groups``, ``phone_replace_groups``, each
``eavesdrop_{ext}``/``whisper_{ext}``): a list can name each of the at most 100 groups once;
a longer one can only repeat names, which adds nothing. Repeats within the limit stay allowed,
as ``policy.md`` does not forbid them."""
MAX_GRANT_KEYS: Final = MAX_GROUPS * MAX_GROUP_SIZE
"""``eavesdrop_{ext}`` keys in one document, and as many ``whisper_{ext}`` keys: one for each
extension the largest document can hold (100 groups of 200). Not tied to the extensions the
document itself names: a supervisor who listens need not be in any group."""

EXTENSION_RULE: Final = "1 to 32 characters of A-Z a-z 0-9 _ - . +"
GROUP_NAME_RULE: Final = "1 to 64 characters, no control characters"
CLIENT_ID_RULE: Final = "1 to 64 characters of A-Z a-z 0-9 _ - ."

# fullmatch, not match: "$" in Python also matches before a final newline.
EXTENSION_RE: Final = re.compile(_EXTENSION)
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN[1:-1])


def is_valid_extension(value: object) -> bool:
    """True for 1 to 32 characters of ``A-Z a-z 0-9 _ - . +``."""
    return isinstance(value, str) and EXTENSION_RE.fullmatch(value) is not None


def is_valid_client_id(value: object) -> bool:
    """True for 1 to 64 characters of ``A-Z a-z 0-9 _ - .``."""
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None
