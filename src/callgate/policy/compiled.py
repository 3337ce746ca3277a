"""The compiled policy: a document turned into look-up tables, once per change.

A decision then costs a few dict and set look-ups. ``policy.md``'s sets map onto ``Reach`` values:

- ``share(A)``: the union of the ``pickup_share_groups`` that contain ``A`` (table ``share``);
- ``reach(eavesdrop_A)`` / ``reach(whisper_A)``: the union of the groups granted to ``A``
  (``grant("eavesdrop_A")``: the document's own key -> its group list -> the list's reach);
- the replace peers of ``A``: the union of the ``phone_replace_groups`` that contain ``A``.

Compiling has to stay cheap for the largest document (20,000 extensions, 40,000 grants), so:
extensions granted the same list of groups share one ``Reach``, and one union is computed per
distinct set of groups; tables are filled with C-level bulk operations (``dict.fromkeys``, set
algebra) wherever extensions do not overlap; and what only some requests need (the sorted target
tuples, the target -> decision tables, the combined reach of group listen) is built on first use
and kept.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from callgate.policy.document import PolicyDocument
from callgate.policy.types import Decision, Reason


class Reach:
    """The extensions an ordered list of groups covers, and the first group covering each."""

    __slots__ = ("_grants", "_sorted", "groups", "member_sets", "members")

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
        self._grants: dict[Reason, dict[str, Decision]] = {}

    def grant(self, target: str, reason: Reason) -> Decision | None:
        """Allow ``reason`` naming the first group that contains ``target``; None if none does."""
        table = self._grants.get(reason)
        if table is None:
            table = self._grants[reason] = {}
            for group, members in zip(
                reversed(self.groups), reversed(self.member_sets), strict=True
            ):
                table.update(dict.fromkeys(members, Decision(True, reason, (), group)))
        return table.get(target)

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
    """extension -> share(A)"""
    replace: Mapping[str, Reach]
    """extension -> the members of the phone replace groups it is in"""
    grant_lists: Mapping[str, tuple[str, ...]]
    """the document's ``eavesdrop_{ext}`` / ``whisper_{ext}`` keys -> their group lists"""
    reaches: Mapping[tuple[str, ...], Reach]
    """every distinct group list of ``grant_lists`` -> its reach"""
    _listen: dict[tuple[Reach, Reach], Reach] = field(default_factory=dict, compare=False)

    def grant(self, key: str) -> Reach:
        """The reach of a grant, ``eavesdrop_{ext}`` or ``whisper_{ext}``; empty if none."""
        names = self.grant_lists.get(key)
        return EMPTY_REACH if names is None else self.reaches[names]

    def listen(self, ext: str) -> Reach:
        """What the group form of listen reaches: the eavesdrop and the whisper grant together."""
        eavesdrop = self.grant("eavesdrop_" + ext)
        whisper = self.grant("whisper_" + ext)
        if whisper is EMPTY_REACH:
            return eavesdrop
        if eavesdrop is EMPTY_REACH:
            return whisper
        combined = self._listen.get((eavesdrop, whisper))
        if combined is None:
            combined = Reach(
                eavesdrop.groups + whisper.groups,
                eavesdrop.member_sets + whisper.member_sets,
                eavesdrop.members | whisper.members,
            )
            self._listen[eavesdrop, whisper] = combined
        return combined


class _Builder:
    """Builds ``Reach`` values: one per distinct list of groups, one union per distinct set."""

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        self._members = {name: frozenset(exts) for name, exts in groups.items()}
        self._by_list: dict[tuple[str, ...], Reach] = {}
        self._by_set: dict[frozenset[str], frozenset[str]] = {}

    def reach(self, names: tuple[str, ...]) -> Reach:
        found = self._by_list.get(names)
        if found is None:
            ordered = tuple(dict.fromkeys(names))
            found = self._by_list.get(ordered)
            if found is None:
                found = self._by_list[ordered] = self._new(ordered)
            self._by_list[names] = found
        return found

    def _new(self, ordered: tuple[str, ...]) -> Reach:
        member_sets = tuple(self._members[name] for name in ordered)
        key = frozenset(ordered)
        union = self._by_set.get(key)
        if union is None:
            union = member_sets[0] if len(member_sets) == 1 else frozenset().union(*member_sets)
            self._by_set[key] = union
        return Reach(ordered, member_sets, union)

    def reaches(self, lists: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], Reach]:
        return {names: self.reach(names) for names in set(lists)}

    def containing(self, names: Iterable[str]) -> dict[str, Reach]:
        """For each extension in any of ``names``: the reach of those of ``names`` it is in."""
        ordered = tuple(dict.fromkeys(names))
        table: dict[str, Reach] = {}
        for name in ordered:
            table.update(dict.fromkeys(self._members[name], self.reach((name,))))
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
            table[ext] = self.reach(tuple(names_of))
        return table


def compile_policy(document: PolicyDocument) -> CompiledPolicy:
    builder = _Builder(document.groups)
    grant_lists = dict(document.model_extra or {})
    return CompiledPolicy(
        allow_all=document.allow_all,
        pickup_all=document.pickup_all,
        share=builder.containing(document.pickup_share_groups),
        replace=builder.containing(document.phone_replace_groups),
        grant_lists=grant_lists,
        reaches=builder.reaches(grant_lists.values()),
    )
