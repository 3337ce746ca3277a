"""Protection and grants, compiled for ``decide()`` (``policy.md``, "Beside the document").

``compile_supervision(settings, grants, document)`` turns a client's settings and grants into
look-up tables, once per change of any of the three (a grant's group is resolved against the
document); ``decide(..., now=now, supervision=compiled)`` applies them. It answers ``None`` when
nothing in them can change a decision (no protected extension, no grant: the notice alone does not
decide anything), so a client without them takes today's path and pays nothing.

The order (``policy.md``): ``invalid_request``, ``self_target``, then ``protected`` for a listen
or whisper whose target is protected (pickup is not affected: ``policy.md`` protects from being
heard) -- before ``allow_all`` and every grant; then the document's rules 3-8; where rules 4, 6 or
7 deny, an active grant (``from <= now < until``) of the acting extension, for that action and with
the target in its reach, allows with reason ``temporary_grant`` and the grant's id in
``Decision.grant_ids``. A whisper grant also allows listening, as the document's ``whisper_{ext}``
does (whispering includes hearing the call). Replace and restore never look at grants. When several
grants allow, the one that lasts longest is named (then the smallest id): it is the one whose
``until`` really ends the session.

Group forms. Listen and whisper: the document's targets plus the reach of the active grants, minus
the acting extension and the protected ones; the reason stays the document's when the document
alone still gives a target, ``grant_ids`` then names the grants that added any; with only grants
giving targets the reason is ``temporary_grant``; when protection took every target away, deny
``protected`` (a clearer answer than "not permitted" for a supervisor who has a right on paper).
Group pickup is unchanged: a pickup grant is a directed-pickup right.

Group forms under ``allow_all``: the targets stay ``("*",)`` and ``Decision.excluded`` lists the
protected extensions (without the acting one). ``*`` cannot become "everyone else" as a list:
under ``allow_all`` the client's extensions are not known to the policy (a document with
``allow_all`` may have no groups at all). The shipped dialplan never asks for the group form of
listen or whisper (``[callgate] listen``/``whisper`` need a target: ChanSpy spies the one channel
callgate allowed), and its only ``*`` (group pickup -> plain ``Pickup()``) is not touched by
protection. So the FastAGI answer can carry the exclusion as one more variable (for example
``CALLGATE_EXCLUDED``, ``&``-joined like ``CALLGATE_TARGETS``) for any dialplan that ever spies by
group, and ``*`` keeps meaning what it means today.

Live sessions. Enforcement re-decides each live listen or whisper with its own action, extension
and target at the current time (``decide(..., now=now, supervision=new)``) after every change of
the document, the settings or the grants, and ends those now denied -- protection added during a
listen included. For expiry, ``Supervision.next_change_after(now)`` is the next instant a grant
starts or ends: a timer that wakes exactly then and re-decides the sessions allowed by
``temporary_grant`` ends a session allowed by that grant alone at its ``until`` (the Manager's
hangup is then the only delay, well within the 1 s goal), and leaves one that another grant or the
document still allows.

Cost: a decision that the document allows pays one set look-up (protected) for listen and whisper;
a denial pays two dict look-ups more for an extension without grants, and one set look-up more
for a target none of its grants reaches (``GrantIndex.reach``); the grants of an extension are kept
per action and indexed by the extensions and the groups they reach, so 1,000 grants in a client
cost what the few of the acting extension cost (``bench/policy_bench.py``: within 2 % of the
same decisions with protection alone, ``docs/performance.md``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from callgate.policy.compiled import CompiledPolicy, Reach
from callgate.policy.document import PolicyDocument
from callgate.policy.grants import Grant, GrantAction
from callgate.policy.settings import CallControlSettings
from callgate.policy.types import ALL_TARGETS, Decision, Reason

Rule = Callable[[CompiledPolicy, str, str], Decision]

_PROTECTED: Final = Decision.deny(Reason.PROTECTED)
_TEMPORARY: Final = Reason.TEMPORARY_GRANT
_LISTEN_ACTIONS: Final = frozenset({"eavesdrop", "whisper"})

# Which grants answer which request: a whisper grant also lets its holder listen.
_BUCKETS_OF: Final = {
    GrantAction.EAVESDROP: ("eavesdrop",),
    GrantAction.WHISPER: ("whisper", "eavesdrop"),
    GrantAction.PICKUP: ("pickup",),
}


@dataclass(frozen=True, slots=True, eq=False)
class CompiledGrant:
    id: str
    start: datetime
    end: datetime
    groups: tuple[str, ...]
    """The grant's groups that exist in the document (a removed group reaches nobody)."""
    member_sets: tuple[frozenset[str], ...]
    """Their members (the sets are shared between grants: no copy per grant)."""
    extensions: frozenset[str]
    allows: Decision
    """The decision of a directed request this grant allows (made once, not per request)."""
    reach: frozenset[str]
    """``extensions`` and every member of ``member_sets`` (for group forms): the one set itself
    when there is one, shared, not copied."""

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def covers(self, target: str) -> bool:
        if target in self.extensions:
            return True
        # not any(): on the hot path a generator costs more than the look-ups
        for members in self.member_sets:  # noqa: SIM110
            if target in members:
                return True
        return False


def _reach(extensions: frozenset[str], member_sets: tuple[frozenset[str], ...]) -> frozenset[str]:
    sets = (extensions, *member_sets) if extensions else member_sets
    return sets[0] if len(sets) == 1 else frozenset().union(*sets)


def _union(grants: list[CompiledGrant], limit: int) -> frozenset[str] | None:
    sets = [g.extensions for g in grants if g.extensions]
    sets.extend(members for g in grants for members in g.member_sets)
    if len(sets) == 1:
        return sets[0]  # the grant's own set or the document's: shared, not copied
    if sum(map(len, sets)) > limit:
        return None
    return frozenset().union(*sets)


def _lasts_longer(grant: CompiledGrant, other: CompiledGrant | None) -> bool:
    return other is None or (grant.end, other.id) > (other.end, grant.id)


class GrantIndex:
    """The grants of one extension for one action, by the extensions and groups they reach.

    Each list is sorted longest-lasting first, so its first active grant is its best one. An
    extension holds few grants, as a rule: then trying each is quicker than the index.
    """

    __slots__ = ("by_ext", "by_group", "grants", "reach", "rows")
    SCAN: Final = 4
    """Up to this many grants, ``allowing`` tries each instead of looking up the index."""
    REACH: Final = 2_000
    """``reach`` is made up to this many extensions (a copy: the document's sets are shared)."""

    def __init__(self, grants: list[CompiledGrant]) -> None:
        order = sorted(grants, key=lambda grant: (-grant.end.timestamp(), grant.id))
        self.grants = tuple(order)
        self.rows = (
            tuple((g.start, g.end, g.extensions, g.member_sets, g.allows) for g in order)
            if len(order) <= self.SCAN
            else None
        )
        """For a scan (``decide()`` does it, inlined), each grant's fields as a tuple: unpacking
        is cheaper than attributes. ``None``: more than ``SCAN`` grants, ask ``allowing``."""
        self.reach = _union(order, self.REACH)
        """Every extension some grant here reaches, active or not (``None``: too many to copy):
        most denials are of a target none reaches, answered by this one look-up."""
        by_ext: dict[str, list[CompiledGrant]] = {}
        by_group: dict[str, list[CompiledGrant]] = {}
        for grant in order:
            for ext in grant.extensions:
                by_ext.setdefault(ext, []).append(grant)
            for name in grant.groups:
                by_group.setdefault(name, []).append(grant)
        self.by_ext = {ext: tuple(found) for ext, found in by_ext.items()}
        self.by_group = {name: tuple(found) for name, found in by_group.items()}

    def allowing(
        self, target: str, now: datetime, supervision: Supervision
    ) -> CompiledGrant | None:
        """The longest-lasting grant active at ``now`` whose reach has ``target``."""
        if len(self.grants) <= self.SCAN:
            for grant in self.grants:
                if grant.start <= now < grant.end and grant.covers(target):
                    return grant
            return None
        best = None
        for grant in self.by_ext.get(target, ()):
            if grant.start <= now < grant.end:
                best = grant
                break
        by_group = self.by_group
        for name in supervision.groups_of.get(target, ()):
            for grant in by_group.get(name, ()):
                if grant.start <= now < grant.end:
                    if _lasts_longer(grant, best):
                        best = grant
                    break
        return best


_NO_GRANTS: Final[Mapping[str, GrantIndex]] = {}


@dataclass(frozen=True, slots=True, eq=False)
class Supervision:
    """A client's protection and grants as look-up tables; build with ``compile_supervision``."""

    protected: frozenset[str]
    protected_sorted: tuple[str, ...]
    grants: Mapping[str, Mapping[str, GrantIndex]]
    """request action -> acting extension -> its grants for that action"""
    group_members: Mapping[str, frozenset[str]]
    """the members of each group that some grant names"""
    changes: tuple[datetime, ...]
    """every grant's ``from`` and ``until``, sorted, each once"""
    _groups_of: list[Mapping[str, tuple[str, ...]]] = field(default_factory=list)

    @property
    def groups_of(self) -> Mapping[str, tuple[str, ...]]:
        """extension -> the groups that some grant names and it is in.

        Made on first use (only an extension with many grants needs it), not when compiling: a
        grant naming the groups of the largest document would make every grant change pay for
        a table of 20,000 extensions.
        """
        if not self._groups_of:
            table: dict[str, list[str]] = {}
            for name, members in self.group_members.items():
                for member in members:
                    table.setdefault(member, []).append(name)
            self._groups_of.append({ext: tuple(names) for ext, names in table.items()})
        return self._groups_of[0]

    def next_change_after(self, now: datetime) -> datetime | None:
        """The first instant after ``now`` at which a grant starts or ends; ``None``: none left.

        What the grants allow can change only then: a timer for it is all expiry needs.
        """
        at = bisect_right(self.changes, now)
        return self.changes[at] if at < len(self.changes) else None

    def group_form(
        self, policy: CompiledPolicy, rule: Rule, action: str, ext: str, now: datetime | None
    ) -> Decision:
        """A group form (no target): ``rule`` is the document's, the result as the module says."""
        decision = rule(policy, ext, "")
        if action not in _LISTEN_ACTIONS:
            return decision  # group pickup, and the invalid group forms of replace and restore
        if decision.targets == (ALL_TARGETS,):
            excluded = _without(self.protected_sorted, ext)
            if not excluded:
                return decision
            return Decision(True, decision.reason, decision.targets, excluded=excluded)
        protected = self.protected
        kept = tuple(t for t in decision.targets if t not in protected)
        reason, group = decision.reason, decision.group
        if kept and len(kept) != len(decision.targets):
            reason, group = _first_unprotected(policy, action, ext, protected)
        index = self.grants.get(action, _NO_GRANTS).get(ext)
        added: set[str] = set()
        ids: list[str] = []
        lost_to_protection = len(kept) != len(decision.targets)
        if index is not None:
            # What the document gives, as its memoized set (not a set of the kept targets made
            # per request): the difference below iterates only the grant's reach.
            given = policy.listen(ext) if action == "eavesdrop" else policy.grant("whisper_" + ext)
            have = given.members
            now = checked_now(now)
            for grant in index.grants:
                if grant.active(now):
                    if not lost_to_protection:
                        hit = protected.intersection(grant.reach)
                        lost_to_protection = len(hit) > (ext in hit)
                    reach = grant.reach - protected - have
                    if ext in reach:
                        reach = reach - {ext}
                    if reach:
                        ids.append(grant.id)
                        added |= reach
        if not kept and not added:
            return _PROTECTED if lost_to_protection else decision
        # kept is sorted and added disjoint from it: timsort merges the two runs in linear time
        targets = tuple(sorted((*kept, *added))) if added else kept
        if not kept:
            return Decision(True, _TEMPORARY, targets, None, tuple(sorted(ids)))
        return Decision(True, reason, targets, group, tuple(sorted(ids)))


def checked_now(now: datetime | None) -> datetime:
    """``now`` if it is an aware datetime; else ``ValueError`` (a caller's bug)."""
    if now is None or now.tzinfo is None:
        raise ValueError("deciding with grants needs now, an aware datetime")
    return now


def _without(ordered: tuple[str, ...], ext: str) -> tuple[str, ...]:
    at = bisect_left(ordered, ext)
    if at < len(ordered) and ordered[at] == ext:
        return ordered[:at] + ordered[at + 1 :]
    return ordered


def _first_unprotected(
    policy: CompiledPolicy, action: str, ext: str, protected: frozenset[str]
) -> tuple[Reason, str | None]:
    """The document's reason and group for a group form once protected targets are left out."""
    reaches: tuple[tuple[Reach, Reason], ...] = (
        (policy.grant("whisper_" + ext), Reason.WHISPER_GROUP),
    )
    if action == "eavesdrop":
        reaches = ((policy.grant("eavesdrop_" + ext), Reason.EAVESDROP_GROUP), *reaches)
    for reach, reason in reaches:
        for group, members in zip(reach.groups, reach.member_sets, strict=True):
            if members - protected - {ext}:
                return reason, group
    raise AssertionError("called with a target left")  # pragma: no cover


def compile_supervision(
    settings: CallControlSettings | None, grants: Iterable[Grant], document: PolicyDocument
) -> Supervision | None:
    """The tables for ``decide()``; ``None`` when neither protection nor a grant is set.

    Recompile when the settings, the grants or the document change (grants' groups are the
    document's). Grants ended long ago may be left out by the caller; they never allow anything.
    """
    protected = frozenset(settings.protected_extensions) if settings is not None else frozenset()
    compiled: dict[str, dict[str, list[CompiledGrant]]] = {}
    members: dict[str, frozenset[str]] = {}
    changes: set[datetime] = set()
    for grant in grants:
        groups = tuple(name for name in grant.groups if name in document.groups)
        for name in groups:
            if name not in members:
                members[name] = frozenset(document.groups[name])
        entry = CompiledGrant(
            id=grant.id,
            start=grant.from_.astimezone(UTC),
            end=grant.until.astimezone(UTC),
            groups=groups,
            member_sets=tuple(members[name] for name in groups),
            extensions=frozenset(grant.extensions),
            allows=Decision(True, _TEMPORARY, grant_ids=(grant.id,)),
            reach=_reach(frozenset(grant.extensions), tuple(members[name] for name in groups)),
        )
        changes.update((entry.start, entry.end))
        for bucket in _BUCKETS_OF[grant.action]:
            compiled.setdefault(bucket, {}).setdefault(grant.ext, []).append(entry)
    if not protected and not compiled:
        return None
    return Supervision(
        protected=protected,
        protected_sorted=tuple(sorted(protected)),
        grants={
            action: {ext: GrantIndex(found) for ext, found in by_ext.items()}
            for action, by_ext in compiled.items()
        },
        group_members=members,
        changes=tuple(sorted(changes)),
    )
