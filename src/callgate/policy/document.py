"""The policy document (``policy.md``, "The document" and "Validation") as a pydantic model.

Shape and syntax are declared on the fields, so pydantic checks them in one pass and reports every
error it finds. The rules that span fields, "every referenced group exists" and "at most
``MAX_GRANT_KEYS`` grant keys of each kind", run after that pass (``_check_across_fields``);
``parse_document`` also runs them on a document that failed the first pass, so that a user sees
all of their mistakes at once.

The ``eavesdrop_{ext}`` and ``whisper_{ext}`` keys are pydantic "extra" data whose keys and values
are both typed: a key that does not fit ``DYNAMIC_KEY_PATTERN`` (``eavesdrp_100``) is an error
naming that key, in Python and in JSON input alike (pydantic >= 2.14.2).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from itertools import chain
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from callgate.policy.errors import Location
from callgate.policy.syntax import (
    DYNAMIC_KEY_PATTERN,
    EAVESDROP_PREFIX,
    EXTENSION_PATTERN,
    GROUP_NAME_PATTERN,
    MAX_GRANT_KEYS,
    MAX_GROUP_LIST,
    MAX_GROUP_SIZE,
    MAX_GROUPS,
    WHISPER_PREFIX,
)

Extension = Annotated[str, StringConstraints(strict=True, pattern=EXTENSION_PATTERN)]
GroupName = Annotated[str, StringConstraints(strict=True, pattern=GROUP_NAME_PATTERN)]
DynamicKey = Annotated[str, StringConstraints(strict=True, pattern=DYNAMIC_KEY_PATTERN)]
GroupList = Annotated[tuple[GroupName, ...], Field(max_length=MAX_GROUP_LIST)]
Members = Annotated[tuple[Extension, ...], Field(max_length=MAX_GROUP_SIZE)]

MISSING_GROUP = "missing_group"
"""The pydantic error type of a reference to a group that ``groups`` does not define."""
TOO_MANY_GRANTS = "too_many_grants"
"""The pydantic error type of the first ``eavesdrop_``/``whisper_`` key past ``MAX_GRANT_KEYS``."""

REFERENCING_FIELDS = ("pickup_share_groups", "phone_replace_groups")
"""The fixed fields that name groups; the ``eavesdrop_*`` and ``whisper_*`` keys do too."""


def _describe(schema: dict[str, JsonValue]) -> None:
    """What the JSON Schema of a document says beyond its fields (``model_json_schema``)."""
    schema["description"] = (
        "A call control group policy (policy.md). Besides the fields, eavesdrop_<extension> and"
        " whisper_<extension> keys list the groups that extension may listen or whisper to;"
        " any other key is refused. Every group named must be defined in groups, and there are"
        f" at most {MAX_GRANT_KEYS} keys of each prefix (rules a JSON Schema cannot state)."
    )
    # The bound that the per-prefix limit implies for the document as a whole.
    schema["maxProperties"] = len(PolicyDocument.model_fields) + 2 * MAX_GRANT_KEYS
    schema["examples"] = [
        {
            "allow_all": False,
            "pickup_all": True,
            "groups": {"support": ["100", "101"], "sales": ["102", "101"]},
            "pickup_share_groups": ["support", "sales"],
            "phone_replace_groups": ["support"],
            "eavesdrop_100": ["support"],
            "whisper_101": ["sales"],
        }
    ]


class PolicyDocument(BaseModel):
    """One client's policy. ``PolicyDocument()`` is the default document (no policy stored)."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        # JSON Schema only: the attribute docstrings describe the fields, and an answer (the
        # serialization schema) always has every field, as ``to_json`` writes them.
        use_attribute_docstrings=True,
        json_schema_serialization_defaults_required=True,
        json_schema_extra=_describe,
    )

    __pydantic_extra__: dict[DynamicKey, GroupList] = Field(init=False)

    allow_all: StrictBool = False
    """Every action is allowed between any two extensions of the client."""
    pickup_all: StrictBool = True
    """Directed pickup of any extension; when false, only within the picker's share groups."""
    groups: Annotated[Mapping[GroupName, Members], Field(max_length=MAX_GROUPS)] = Field(
        default_factory=dict
    )
    """Each group's name and its member extensions."""
    pickup_share_groups: GroupList = ()
    """Groups within which a call can be picked up without naming the extension (group pickup)."""
    phone_replace_groups: GroupList = ()
    """Groups within which an extension may act as another, with that one's replace PIN."""

    @property
    def eavesdrop(self) -> Mapping[str, GroupList]:
        """``eavesdrop_{ext}`` grants: extension -> the groups it may listen to."""
        return self._grants(EAVESDROP_PREFIX)

    @property
    def whisper(self) -> Mapping[str, GroupList]:
        """``whisper_{ext}`` grants: extension -> the groups it may whisper to."""
        return self._grants(WHISPER_PREFIX)

    def _grants(self, prefix: str) -> dict[str, GroupList]:
        extra = self.__pydantic_extra__ or {}
        return {
            key[len(prefix) :]: groups for key, groups in extra.items() if key.startswith(prefix)
        }

    def references(self) -> Iterator[tuple[Location, str]]:
        """Every group name the document refers to, with where it does so."""
        fixed = ((field, getattr(self, field)) for field in REFERENCING_FIELDS)
        return find_references(chain(fixed, (self.__pydantic_extra__ or {}).items()))

    def to_json(self) -> dict[str, object]:
        """Every field explicit, then the ``eavesdrop_*``/``whisper_*`` keys in document order."""
        body: dict[str, object] = {
            "allow_all": self.allow_all,
            "pickup_all": self.pickup_all,
            "groups": {name: list(members) for name, members in self.groups.items()},
            "pickup_share_groups": list(self.pickup_share_groups),
            "phone_replace_groups": list(self.phone_replace_groups),
        }
        for key, groups in (self.__pydantic_extra__ or {}).items():
            body[key] = list(groups)
        return body

    @model_validator(mode="after")
    def _check_across_fields(self) -> Self:
        extra = self.__pydantic_extra__ or {}
        errors = too_many_grants(extra)
        named = set(self.pickup_share_groups).union(self.phone_replace_groups, *extra.values())
        if not named <= self.groups.keys():  # in bulk first: the loop finds the culprits
            errors += missing_groups(self.groups, self.references())
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


def find_references(items: Iterable[tuple[object, object]]) -> Iterator[tuple[Location, str]]:
    """Group names referenced by the (key, value) pairs of a document body, valid or not."""
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, list | tuple):
            continue
        if key not in REFERENCING_FIELDS and not key.startswith((EAVESDROP_PREFIX, WHISPER_PREFIX)):
            continue
        for index, name in enumerate(value):
            if isinstance(name, str):
                yield (key, index), name


def missing_groups(
    defined: Container[object], references: Iterable[tuple[Location, str]]
) -> list[InitErrorDetails]:
    """One ``missing_group`` error for each reference to a group not in ``defined``."""
    return [
        InitErrorDetails(
            # The sentence is the whole template: a group name may itself contain "{...}".
            type=PydanticCustomError(
                MISSING_GROUP, "{message}", {"message": missing_group_message(loc, name)}
            ),
            loc=loc,
            input=name,
        )
        for loc, name in references
        if name not in defined
    ]


def missing_group_message(loc: Location, group: str) -> str:
    return f"Group '{group}', named in {loc[0]}, does not exist in groups."


def too_many_grants(keys: Iterable[object]) -> list[InitErrorDetails]:
    """One ``too_many_grants`` error per prefix whose keys pass ``MAX_GRANT_KEYS``, located at
    the first key over the limit."""
    keys = list(keys)
    if len(keys) <= MAX_GRANT_KEYS:
        return []  # the usual case: no prefix can be over the limit
    counts = {EAVESDROP_PREFIX: 0, WHISPER_PREFIX: 0}
    errors: list[InitErrorDetails] = []
    for key in keys:
        if not isinstance(key, str):
            continue
        prefix = EAVESDROP_PREFIX if key.startswith(EAVESDROP_PREFIX) else WHISPER_PREFIX
        if not key.startswith(prefix):
            continue
        counts[prefix] += 1
        if counts[prefix] == MAX_GRANT_KEYS + 1:
            errors.append(_too_many_grants_error(key, prefix))
    return errors


def _too_many_grants_error(key: str, prefix: str) -> InitErrorDetails:
    message = (
        f"Too many {prefix}<extension> keys: at most {MAX_GRANT_KEYS} (one for each extension"
        f" that {MAX_GROUPS} groups of {MAX_GROUP_SIZE} can hold); '{key}' is the first past"
        " the limit."
    )
    return InitErrorDetails(
        type=PydanticCustomError(TOO_MANY_GRANTS, "{message}", {"message": message}),
        loc=(key,),
        input=key,
    )
