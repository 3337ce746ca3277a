"""The compiled policy: a document turned into look-up tables, once per change.

A decision then costs a few dict and set look-ups. ``policy.md``'s sets map onto ``Reach`` values:

- ``share(A)``: the union of the ``pickup_share_groups`` that contain ``A`` (table ``share``);
- ``reach(eavesdrop_A)`` / ``reach(whisper_A)``: the union of the groups granted to ``A``
  (``grant("eavesdrop_A")``: the document's own key -> its group list -> the list's reach);
- the replace peers of ``A``: the union of the ``phone_replace_groups`` that contain ``A``.

Compiling has to stay cheap for the largest document (20,000 extensions, 40,000 grants), so:
extensions granted the same list of groups share one ``Reach``; the per-extension tables are filled
with C-level bulk operations (``dict.fromkeys``, set algebra) wherever extensions do not overlap;
and the reach of a grant, and what a ``Reach`` answers (its union, sorted targets, target ->
decision table), are built the first time a request needs them, then kept.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from callgate.policy.document import PolicyDocument
from callgate.policy.types import Decision, Reason


class Reach:
    """The extensions an ordered list of groups covers, and the first group covering each.

    Only the list is fixed when compiling; the union, its sorted tuple and the target -> decision
    tables are made the first time a request needs them, and kept.
    """

    __slots__ = ("_grants", "_members", "_sorted", "groups", "member_sets")

    def __init__(self, groups: tuple[str, ...], member_sets: tuple[frozenset[str], ...]) -> None:
        self.groups = groups
        self.member_sets = member_sets
        self._members: frozenset[str] | None = None
        self._sorted: tuple[str, ...] | None = None
        self._grants: dict[Reason, dict[str, Decision]] = {}

    @property
    def members(self) -> frozenset[str]:
        members = self._members
        if members is None:
            sets = self.member_sets
            members = sets[0] if len(sets) == 1 else frozenset().union(*sets)
            self._members = members
        return members

    def decisions(self, reason: Reason) -> Mapping[str, Decision]:
        """member -> allow ``reason``, naming the first group (in document order) that has it."""
        table = self._grants.get(reason)
        if table is None:
            # Filled, then published: a reader on another thread (the console's pictures are
            # computed off the loop) sees no table or a whole one, never one half made.
            filling: dict[str, Decision] = {}
            for group, members in zip(
                reversed(self.groups), reversed(self.member_sets), strict=True
            ):
                filling.update(dict.fromkeys(members, Decision(True, reason, (), group)))
            table = self._grants[reason] = filling
        return table

    def targets_without(self, ext: str) -> tuple[str, ...]:
        """The members except ``ext``, sorted."""
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = tuple(sorted(self.members))
        at = bisect_left(ordered, ext)
        if at < len(ordered) and ordered[at] == ext:
            return ordered[:at] + ordered[at + 1 :]
        return ordered

    def first_group_without(self, ext: str) -> str | None:
        """The first group, in document order, with a member other than ``ext``."""
        for group, members in zip(self.groups, self.member_sets, strict=True):
            if len(members) > 1 or (members and ext not in members):
                return group
        return None


EMPTY_REACH = Reach((), ())
_NOTHING: Mapping[str, Decision] = MappingProxyType({})


class Reaches:
    """One ``Reach`` per distinct list of groups, made when first asked for and kept."""

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        self._members = {name: frozenset(exts) for name, exts in groups.items()}
        self._by_list: dict[tuple[str, ...], Reach] = {}

    def of(self, names: tuple[str, ...]) -> Reach:
        found = self._by_list.get(names)
        if found is None:
            ordered = tuple(dict.fromkeys(names))
            found = self._by_list.get(ordered)
            if found is None:
                members = tuple(self._members[name] for name in ordered)
                found = self._by_list[ordered] = Reach(ordered, members)
            self._by_list[names] = found
        return found

    def containing(self, names: Iterable[str]) -> dict[str, Reach]:
        """For each extension in any of ``names``: the reach of those of ``names`` it is in."""
        ordered = tuple(dict.fromkeys(names))
        table: dict[str, Reach] = {}
        for name in ordered:
            table.update(dict.fromkeys(self._members[name], self.of((name,))))
        if len(table) == sum(len(self._members[name]) for name in ordered):
            return table  # no extension is in two of the groups: done
        seen: set[str] = set()
        shared: set[str] = set()
        for name in ordered:
            shared |= self._members[name] & seen
            seen |= self._members[name]
        lists: dict[str, list[str]] = {ext: [] for ext in shared}
        for name in ordered:
            for ext in self._members[name] & shared:
                lists[ext].append(name)
        for ext, names_of in lists.items():
            table[ext] = self.of(tuple(names_of))
        return table


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """Look-up tables for ``decide()``; build with ``compile_policy``, never change.

    (``reaches`` and ``_granted`` fill as requests come: memos of what the document already fixes.)
    """

    allow_all: bool
    pickup_all: bool
    share: Mapping[str, Reach]
    """extension -> share(A)"""
    replace: Mapping[str, Reach]
    """extension -> the members of the phone replace groups it is in"""
    grant_lists: Mapping[str, tuple[str, ...]]
    """the document's ``eavesdrop_{ext}`` / ``whisper_{ext}`` keys -> their group lists"""
    reaches: Reaches
    _granted: dict[str, Mapping[str, Decision]] = field(default_factory=dict)

    def grant(self, key: str) -> Reach:
        """The reach of a grant, ``eavesdrop_{ext}`` or ``whisper_{ext}``; empty if none."""
        names = self.grant_lists.get(key)
        return EMPTY_REACH if names is None else self.reaches.of(names)

    def granted(self, key: str) -> Mapping[str, Decision]:
        """target -> the allowing decision, for the grant ``key`` (``eavesdrop_{ext}`` ...)."""
        table = self._granted.get(key)
        if table is None:
            if key not in self.grant_lists:
                return _NOTHING  # not kept: the keys asked for are not bounded by the document
            reason = Reason.EAVESDROP_GROUP if key.startswith("e") else Reason.WHISPER_GROUP
            table = self._granted[key] = self.grant(key).decisions(reason)
        return table

    def listen(self, ext: str) -> Reach:
        """What the group form of listen reaches: the eavesdrop and the whisper grant together."""
        names = self.grant_lists.get("eavesdrop_" + ext, ()) + self.grant_lists.get(
            "whisper_" + ext, ()
        )
        return self.reaches.of(names) if names else EMPTY_REACH


def compile_policy(document: PolicyDocument) -> CompiledPolicy:
    reaches = Reaches(document.groups)
    return CompiledPolicy(
        allow_all=document.allow_all,
        pickup_all=document.pickup_all,
        share=reaches.containing(document.pickup_share_groups),
        replace=reaches.containing(document.phone_replace_groups),
        grant_lists=dict(document.model_extra or {}),
        reaches=reaches,
    )
