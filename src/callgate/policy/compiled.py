"""The compiled policy: a document turned into per-extension look-up tables, once per change.

A decision then costs a few dict and set look-ups. ``policy.md``'s sets map onto ``Reach`` values:

- ``share(A)``: the union of the ``pickup_share_groups`` that contain ``A``;
- ``reach(eavesdrop_A)`` / ``reach(whisper_A)``: the union of the groups granted to ``A``;
- the replace peers of ``A``: the union of the ``phone_replace_groups`` that contain ``A``.

Extensions granted the same list of groups share one ``Reach`` (a big document typically grants a
handful of distinct lists to thousands of extensions), and the sorted target tuple and the
target -> group table of a ``Reach`` are built on first use, so compiling stays cheap.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from callgate.policy.document import PolicyDocument


class Reach:
    """The extensions that an ordered list of groups covers, and which group covers each first."""

    __slots__ = ("_first_group", "_sorted", "groups", "member_sets", "members")

    def __init__(
        self,
        groups: tuple[str, ...],
        member_sets: tuple[frozenset[str], ...],
        members: frozenset[str],
    ) -> None:
        self.groups = groups
        self.member_sets = member_sets
        self.members = members
        self._sorted: tuple[str, ...] | None = None
        self._first_group: dict[str, str] | None = None

    def group_of(self, ext: str) -> str | None:
        """The first group, in document order, that contains ``ext``."""
        table = self._first_group
        if table is None:
            table = {}
            for group, members in zip(
                reversed(self.groups), reversed(self.member_sets), strict=True
            ):
                table.update(dict.fromkeys(members, group))
            self._first_group = table
        return table.get(ext)

    def targets_without(self, ext: str) -> tuple[str, ...]:
        """The members except ``ext``, sorted."""
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = tuple(sorted(self.members))
        if ext not in self.members:
            return ordered
        at = bisect_left(ordered, ext)
        return ordered[:at] + ordered[at + 1 :]

    def first_group_without(self, ext: str) -> str | None:
        """The first group, in document order, with a member other than ``ext``."""
        for group, members in zip(self.groups, self.member_sets, strict=True):
            if len(members) > 1 or (members and ext not in members):
                return group
        return None


EMPTY_REACH = Reach((), (), frozenset())


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Immutable look-up tables for ``decide()``; build with ``compile_policy``."""

    allow_all: bool
    pickup_all: bool
    share: Mapping[str, Reach]
    eavesdrop: Mapping[str, Reach]
    whisper: Mapping[str, Reach]
    listen: Mapping[str, Reach]
    """eavesdrop and whisper grants together: what the group form of listen may reach."""
    replace: Mapping[str, Reach]


class _ReachBuilder:
    """Builds ``Reach`` values, one per distinct group list and one union per distinct set."""

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        self._members = {name: frozenset(exts) for name, exts in groups.items()}
        self._by_list: dict[tuple[str, ...], Reach] = {}
        self._by_set: dict[frozenset[str], frozenset[str]] = {}

    def reach(self, names: Iterable[str]) -> Reach:
        ordered = tuple(dict.fromkeys(names))
        found = self._by_list.get(ordered)
        if found is None:
            member_sets = tuple(self._members[name] for name in ordered)
            key = frozenset(ordered)
            union = self._by_set.get(key)
            if union is None:
                union = self._by_set[key] = frozenset().union(*member_sets)
            found = self._by_list[ordered] = Reach(ordered, member_sets, union)
        return found

    def containing(self, names: Iterable[str]) -> dict[str, Reach]:
        """For each extension in any of ``names``: the reach of those of ``names`` it is in."""
        lists: dict[str, list[str]] = {}
        for name in dict.fromkeys(names):
            for ext in self._members[name]:
                lists.setdefault(ext, []).append(name)
        return {ext: self.reach(names_of) for ext, names_of in lists.items()}


def compile_policy(document: PolicyDocument) -> CompiledPolicy:
    builder = _ReachBuilder(document.groups)
    eavesdrop = document.eavesdrop
    whisper = document.whisper
    return CompiledPolicy(
        allow_all=document.allow_all,
        pickup_all=document.pickup_all,
        share=builder.containing(document.pickup_share_groups),
        eavesdrop={ext: builder.reach(names) for ext, names in eavesdrop.items()},
        whisper={ext: builder.reach(names) for ext, names in whisper.items()},
        listen={
            ext: builder.reach((*eavesdrop.get(ext, ()), *whisper.get(ext, ())))
            for ext in eavesdrop.keys() | whisper.keys()
        },
        replace=builder.containing(document.phone_replace_groups),
    )
