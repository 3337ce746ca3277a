"""Per-client settings beside the policy document (``policy.md``, "Beside the document").

The body of ``GET``/``PUT /client/{client_id}/call_control_settings``, every field optional on
``PUT`` (a missing field takes its default) and every field explicit on ``GET``::

    {
      "notice": {"mode": "tone", "repeat_seconds": 30, "sound": "custom/monitored"},
      "protected_extensions": ["100", "911"]
    }

- ``notice``: what the monitored call's parties hear when a listen or whisper starts.
  - ``mode``: ``"off"`` (the default: no notice) or ``"tone"`` (a notice when the session starts).
  - ``repeat_seconds``: only with ``"tone"``; the notice again every N seconds while the session
    lasts, ``MIN_REPEAT_SECONDS`` to ``MAX_REPEAT_SECONDS``; absent or ``null``: only at the start.
  - ``sound``: only with ``"tone"``; an Asterisk sound name (``custom/monitored``: no file
    extension, no ``..``, no leading ``/``) played instead of the generated tone; absent or
    ``null``: Asterisk's tone generator, which needs no sound file.
  ``repeat_seconds`` or ``sound`` with ``"off"`` is an error rather than ignored: a setting that
  looks like a notice but gives none is what a compliance officer must never read.
- ``protected_extensions``: extensions nobody may listen or whisper to, not under ``allow_all``
  and not with any grant; at most ``MAX_PROTECTED`` extensions of the document's syntax, each
  listed once (a repeat is an error naming both places, not folded: the list stored is the list
  sent, and a repeat is usually a typo for another extension). Directed and group pickup are not
  affected: protection is about being heard, and ``policy.md`` limits it to listen and whisper.

The default (no settings stored): notice off, nothing protected; ``CallControlSettings()``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from callgate.policy.document import Extension
from callgate.policy.issues import parse_model
from callgate.policy.syntax import EXTENSION_PATTERN, EXTENSION_RULE

MIN_REPEAT_SECONDS: Final = 5
"""Shorter than this, a repeated notice would drown the call it announces."""
MAX_REPEAT_SECONDS: Final = 3600
"""The dialplan's longest listen (``CALLGATE_SPY_MAX_SECONDS``): a longer period never repeats."""
MAX_PROTECTED: Final = 20_000
"""As many extensions as the largest document holds (100 groups of 200)."""
SOUND_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,3}$"
SOUND_RULE: Final = (
    "an Asterisk sound name: up to 4 parts of 1 to 64 characters of A-Z a-z 0-9 _ - joined by /,"
    " without a file extension"
)
DUPLICATE: Final = "duplicate"
"""The pydantic error type of an entry listed twice."""
NOT_WITH_OFF: Final = "not_with_off"
"""The pydantic error type of a notice detail given with ``mode: "off"``."""


class NoticeMode(StrEnum):
    OFF = "off"
    TONE = "tone"


SoundName = Annotated[str, StringConstraints(strict=True, pattern=SOUND_PATTERN)]


class Notice(BaseModel):
    """The notice to the monitored; ``Notice()`` is no notice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: NoticeMode = NoticeMode.OFF
    repeat_seconds: (
        Annotated[StrictInt, Field(ge=MIN_REPEAT_SECONDS, le=MAX_REPEAT_SECONDS)] | None
    ) = None
    sound: SoundName | None = None

    @property
    def required(self) -> bool:
        """A listen or whisper may start only once the notice is given (fail closed)."""
        return self.mode is NoticeMode.TONE

    @model_validator(mode="after")
    def _only_with_tone(self) -> Self:
        if self.mode is NoticeMode.OFF:
            errors = [
                located_error(
                    NOT_WITH_OFF, (name,), value, f"notice.{name} is only allowed with mode 'tone'."
                )
                for name, value in (("repeat_seconds", self.repeat_seconds), ("sound", self.sound))
                if value is not None
            ]
            if errors:
                raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def to_json(self) -> dict[str, object]:
        return {"mode": str(self.mode), "repeat_seconds": self.repeat_seconds, "sound": self.sound}


class CallControlSettings(BaseModel):
    """One client's settings beside its document; ``CallControlSettings()`` is the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice: Notice = Notice()
    protected_extensions: Annotated[tuple[Extension, ...], Field(max_length=MAX_PROTECTED)] = ()

    @model_validator(mode="after")
    def _each_once(self) -> Self:
        errors = duplicates(self.protected_extensions, ("protected_extensions",))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def to_json(self) -> dict[str, object]:
        """Every field explicit (the ``GET`` body)."""
        return {
            "notice": self.notice.to_json(),
            "protected_extensions": list(self.protected_extensions),
        }


SETTINGS_RULES: Final = {EXTENSION_PATTERN: EXTENSION_RULE, SOUND_PATTERN: SOUND_RULE}


def parse_settings(data: object) -> CallControlSettings:
    """Validate a settings body: JSON text or a decoded value.

    Raises ``PolicyValidationError`` listing every problem, each located (``["notice",
    "repeat_seconds"]``, ``["protected_extensions", 3]``); ``malformed_json`` for text that is not
    JSON.
    """
    return parse_model(
        CallControlSettings, data, subject="call control settings", rules=SETTINGS_RULES
    )


def duplicates(values: tuple[str, ...], where: tuple[str, ...]) -> list[InitErrorDetails]:
    """One ``duplicate`` error at each repeat in ``values``, naming the first place it is at."""
    if len(set(values)) == len(values):
        return []  # the usual case, in bulk
    first: dict[str, int] = {}
    errors: list[InitErrorDetails] = []
    for index, value in enumerate(values):
        seen = first.setdefault(value, index)
        if seen != index:
            message = f"{value!r} is listed twice in {'.'.join(where)} (also at index {seen})."
            errors.append(located_error(DUPLICATE, (*where, index), value, message))
    return errors


def located_error(
    kind: str, loc: tuple[str | int, ...], value: object, message: str
) -> InitErrorDetails:
    # The sentence is the whole template: a value may itself contain "{...}".
    return InitErrorDetails(
        type=PydanticCustomError(kind, "{message}", {"message": message}), loc=loc, input=value
    )
