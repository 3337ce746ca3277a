"""The lexical rules of ``policy.md``: what an extension, a group name and a client id look like.

The patterns are written once here and used twice: by pydantic (as ``StringConstraints``, checked
in Rust while a document is validated) and by ``decide()`` on every request (Python ``re``). Both
engines read them the same way: ASCII character classes, anchored at both ends.
"""

from __future__ import annotations

import re
from typing import Final

EXTENSION_PATTERN: Final = r"^[A-Za-z0-9_.+-]{1,32}$"
GROUP_NAME_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]{1,64}$"
CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
DYNAMIC_KEY_PATTERN: Final = r"^(eavesdrop|whisper)_[A-Za-z0-9_.+-]{1,32}$"

EAVESDROP_PREFIX: Final = "eavesdrop_"
WHISPER_PREFIX: Final = "whisper_"

MAX_GROUPS: Final = 100
MAX_GROUP_SIZE: Final = 200

EXTENSION_RULE: Final = "1 to 32 characters of A-Z a-z 0-9 _ - . +"
GROUP_NAME_RULE: Final = "1 to 64 characters, no control characters"

# fullmatch, not match: "$" in Python also matches before a final newline.
EXTENSION_RE: Final = re.compile(EXTENSION_PATTERN[1:-1])
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN[1:-1])


def is_valid_extension(value: object) -> bool:
    """True for 1 to 32 characters of ``A-Z a-z 0-9 _ - . +``."""
    return isinstance(value, str) and EXTENSION_RE.fullmatch(value) is not None


def is_valid_client_id(value: object) -> bool:
    """True for 1 to 64 characters of ``A-Z a-z 0-9 _ - .``."""
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None
