"""The lexical rules of callgate's inputs, each pattern and its sentence written once.

What an extension, a group name and a client id look like and how long a document's lists may be
(``policy.md``), and the two API inputs that share their style: token names and replace PINs.

A pattern is used by more than one engine: by pydantic (as ``StringConstraints``, checked in Rust
while a document is validated), by Python ``re`` (``decide()`` on every request, the token and PIN
checks), and by the JSON Schema validators that read the published OpenAPI document. All of them
read these the same way: ASCII character classes, anchored at both ends, and matched in full
(``fullmatch`` in Python, where ``$`` would also match before a final newline). The sentences
(``*_RULE``) are what every error message and schema description says about the rule.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

_EXTENSION: Final = r"[A-Za-z0-9_.+-]{1,32}"
EXTENSION_PATTERN: Final = f"^{_EXTENSION}$"
EXTENSION_RULE: Final = "1 to 32 characters of A-Z a-z 0-9 _ - . +"

GROUP_NAME_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]{1,64}$"
GROUP_NAME_RULE: Final = "1 to 64 characters, no control characters"

EAVESDROP_PREFIX: Final = "eavesdrop_"
WHISPER_PREFIX: Final = "whisper_"
DYNAMIC_KEY_PATTERN: Final = f"^({EAVESDROP_PREFIX}|{WHISPER_PREFIX}){_EXTENSION}$"

# Client ids and token names follow one rule; a token name also may not pass for the admin.
_NAME: Final = r"[A-Za-z0-9_.-]{1,64}"
_NAME_RULE: Final = "1 to 64 characters of A-Z a-z 0-9 _ - ."
CLIENT_ID_PATTERN: Final = f"^{_NAME}$"
CLIENT_ID_RULE: Final = _NAME_RULE
CLIENT_ID_PATH_PATTERN: Final = f"^(?!\\.{{1,2}}$){_NAME}$"
PBX_NAME_PATTERN: Final = CLIENT_ID_PATTERN
"""A PBX's name (``default``, or a name the settings give): the same characters as a client id."""
PBX_NAME_RULE: Final = _NAME_RULE
UNIQUEID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,150}$"
"""An Asterisk channel's uniqueid as a URL path segment (``1795723209.1``, or a linkedid-style
name a system has set): plain characters, bounded."""
"""A client id as a URL path segment: "." and ".." are valid client ids in policy.md, but a URL
cannot carry them as a segment (they mean "this" and "the parent" folder)."""

RESERVED_TOKEN_NAMES: Final = frozenset({"admin"})
"""``admin`` names the admin token in ``changed_by`` and the audit; no client token may pass for
it, in any case (``Admin`` reads the same to a person). Names are ASCII (``TOKEN_NAME_PATTERN``),
so no Unicode look-alike such as ``ADMİN`` gets this far."""
TOKEN_NAME_RULE: Final = (
    f"{_NAME_RULE}, and not {' or '.join(map(repr, sorted(RESERVED_TOKEN_NAMES)))} in any case"
)


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


TOKEN_NAME_PATTERN: Final = (
    f"^(?!(?:{'|'.join(map(_any_case, sorted(RESERVED_TOKEN_NAMES)))})$){_NAME}$"
)
"""The whole token name rule as one pattern (with a look-ahead, which JSON Schema validators and
Python ``re`` support but pydantic's Rust engine does not): what ``is_valid_token_name`` says."""

MIN_PIN_DIGITS: Final = 4
MAX_PIN_DIGITS: Final = 12
_PIN_DIGITS: Final = f"{MIN_PIN_DIGITS} to {MAX_PIN_DIGITS} digits"
PIN_PATTERN: Final = f"^[0-9]{{{MIN_PIN_DIGITS},{MAX_PIN_DIGITS}}}$"
PIN_RULE: Final = f"{_PIN_DIGITS}, as a string"
"""How the HTTP API asks for a PIN: a JSON number would lose its leading zeros."""
PIN_FORMAT_RULE: Final = f"a string of {_PIN_DIGITS} (0-9)"
"""What a value that is not a PIN is told (``PinFormatError``)."""

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

EXTENSION_RE: Final = re.compile(_EXTENSION)
_CLIENT_ID_RE = re.compile(_NAME)
_TOKEN_NAME_RE = _CLIENT_ID_RE
_PIN_RE = re.compile(PIN_PATTERN[1:-1])


def is_valid_extension(value: object) -> bool:
    """True for 1 to 32 characters of ``A-Z a-z 0-9 _ - . +``."""
    return isinstance(value, str) and EXTENSION_RE.fullmatch(value) is not None


def is_valid_client_id(value: object) -> bool:
    """True for 1 to 64 characters of ``A-Z a-z 0-9 _ - .``."""
    return isinstance(value, str) and _CLIENT_ID_RE.fullmatch(value) is not None


def is_reserved_token_name(name: str) -> bool:
    return name.casefold() in RESERVED_TOKEN_NAMES


def is_valid_token_name(name: str) -> bool:
    return _TOKEN_NAME_RE.fullmatch(name) is not None and not is_reserved_token_name(name)


def is_well_formed_pin(value: object) -> TypeGuard[str]:
    """True for a ``str`` of 4 to 12 ASCII digits (``str.isdigit`` would take other scripts')."""
    return isinstance(value, str) and _PIN_RE.fullmatch(value) is not None
