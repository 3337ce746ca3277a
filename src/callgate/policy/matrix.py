"""The permission picture of a policy: who may do what to whom, and what a change would change.

Every answer is a ``decide()`` answer, never a rule written again. What keeps it cheap is that
extensions a document mentions in exactly the same places are interchangeable: swapping two of
them leaves the document unchanged, so ``decide()`` answers the same for either. Extensions are
therefore put in *classes* by the places the document names them (``signature``), ``decide()`` is
asked once per ordered pair of class representatives, and the answers are spread over the
members. A class is never too coarse: a signature is every place the document names an
extension (the groups it is in, its ``eavesdrop_``/``whisper_`` keys) and whether it is
protected; it may be finer than needed, which only costs time.

Grants are not in the signature: with 1,000 grants held by as many extensions each holder would
be a class of its own, and the classes' pairs grow with the square of their number. A grant
changes only its holder's row, and there only the cells of the targets its reach names
(``decide()`` looks at a holder's grants only for a target one of them covers), and only for
the actions grants answer (``_GRANTED_ACTIONS``). So the classes are decided with the protection
alone (``_protection_only``: every other extension's cells are those), and each holder's row is
then decided again, with the grants, at its grants' reach only: once per class of the groups they
name (their members are alike to it, the extensions its grants list aside) and once per
extension they list. The impact of a change does the same on both sides at once: its classes are
by both documents and both protections, and a holder's row is decided again, before and after,
wherever its active grants reach on either side (the candidate may change the groups a grant
names). The extension view, where one extension is held still, keeps grants in its
classes, but only those that bear on that extension (``_view_marks``).

Beside the document (``policy/supervision.py``): every function takes ``supervision`` and ``now``
as ``decide()`` does, and decides each cell with them. The picture then holds for the time
between two instants at which a grant starts or ends (``Supervision.next_change_after``); the
extensions shown are the document's plus those the supervision names (protected ones, and the
holders and listed extensions of the grants not yet over), so a grant's holder or target the
document never names still has its row and column. A cell allowed by a grant carries its id,
and the legend its ``until``.

The group summary of the largest document (100 groups of 200, every extension with grants) is
100 classes: it is computed from class to class, never pair by pair or group by group; a grant
holder's row then costs a few decisions per action, whatever the number of holders.

Pure: no I/O, and nothing from callgate outside ``callgate.policy``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from callgate.policy.compiled import CompiledPolicy
from callgate.policy.decide import decide
from callgate.policy.document import PolicyDocument
from callgate.policy.supervision import CompiledGrant, Supervision
from callgate.policy.syntax import EAVESDROP_PREFIX, WHISPER_PREFIX
from callgate.policy.types import ALL_TARGETS, Decision, Reason

GROUP_PICKUP: Final = "group_pickup"
"""The picture's name for "the column is in the row's group-pickup reach"."""
ACTIONS: Final = ("pickup", GROUP_PICKUP, "eavesdrop", "whisper", "replace")
ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
"""Cell digits (base64url): a cell is ``width`` of them, an index into the legend."""

Cell = tuple[bool, str, str | None, tuple[str, ...]]
"""(allowed, reason code, the group that granted it, the grants that allowed it)"""


SIGNATURE_FIELDS: Final = frozenset(
    {"allow_all", "pickup_all", "groups", "pickup_share_groups", "phone_replace_groups"}
)
"""The document's fields ``signature`` knows: of them only ``groups`` names extensions (the
others are flags and group names); the ``eavesdrop_``/``whisper_`` keys are the rest."""


def extensions_of(
    document: PolicyDocument, supervision: Supervision | None = None, now: datetime | None = None
) -> list[str]:
    """Every extension the document names (group members and grant keys), sorted; with
    ``supervision``, also the protected ones and those of the grants not over at ``now``."""
    found: set[str] = set()
    for members in document.groups.values():
        found.update(members)
    # Every extra key is ``eavesdrop_<ext>`` or ``whisper_<ext>`` (the document's own check).
    found.update(key[key.index("_") + 1 :] for key in document.model_extra or {})
    if supervision is not None:
        found.update(supervision.protected)
        for holder, grant in _grants_of(supervision):
            if now is None or grant.end > now:
                found.add(holder)
                found.update(grant.extensions)
    return sorted(found)


def _grants_of(supervision: Supervision) -> Iterator[tuple[str, CompiledGrant]]:
    """Each grant once, with the extension that holds it (a whisper grant is in two tables)."""
    seen: set[str] = set()
    for by_ext in supervision.grants.values():
        for holder, index in by_ext.items():
            for grant in index.grants:
                if grant.id not in seen:
                    seen.add(grant.id)
                    yield holder, grant


def grant_ends(supervision: Supervision | None) -> dict[str, datetime]:
    """grant id -> its ``until`` (what a legend entry allowed by grants shows)."""
    if supervision is None:
        return {}
    return {grant.id: grant.end for _, grant in _grants_of(supervision)}


Mark = tuple[bool, tuple[str, ...], tuple[str, ...]] | None
"""What the supervision says of an extension: (protected, the grants it holds, the grants whose
``extensions`` list it); None when it names it nowhere."""


def supervision_marks(supervision: Supervision | None) -> dict[str, Mark]:
    """The extensions the supervision names, with what it says of each."""
    if supervision is None:
        return {}
    held: dict[str, set[str]] = {}
    listed: dict[str, set[str]] = {}
    for holder, grant in _grants_of(supervision):
        held.setdefault(holder, set()).add(grant.id)
        for ext in grant.extensions:
            listed.setdefault(ext, set()).add(grant.id)
    return _marked(supervision.protected, held, listed)


def _marked(
    protected: frozenset[str],
    first: Mapping[str, Iterable[str]],
    second: Mapping[str, Iterable[str]],
) -> dict[str, Mark]:
    """Each extension protected or named by either table: (protected, its ids in each, sorted)."""
    return {
        ext: (
            ext in protected,
            tuple(sorted(first.get(ext, ()))),
            tuple(sorted(second.get(ext, ()))),
        )
        for ext in protected | first.keys() | second.keys()
    }


Signature = tuple[tuple[str, ...], object, object, Hashable]
"""(the groups an extension is in, in document order; its eavesdrop grant; its whisper grant;
what the supervision says of it)"""


_GRANTED_ACTIONS: Final = frozenset({"pickup", "eavesdrop", "whisper"})
"""The picture's actions a grant can change a cell of (``policy/supervision.py``): directed
pickup, listen and whisper. Group pickup's reach is the document's (a pickup grant is a
directed-pickup right) and replace never looks at grants."""


def _protection_only(supervision: Supervision | None) -> Supervision | None:
    """The supervision without its grants: what ``decide()`` answers every extension that holds
    none, and a holder for every target none of its grants reaches."""
    if supervision is None or not supervision.protected:
        return None
    return Supervision(
        protected=supervision.protected,
        protected_sorted=supervision.protected_sorted,
        grants={},
        group_members={},
        changes=(),
    )


@dataclass(frozen=True, slots=True)
class _Held:
    """What the grants an extension holds reach (all of them: any action, active or not)."""

    groups: frozenset[str]
    extensions: frozenset[str]


def _held(supervision: Supervision | None) -> dict[str, _Held]:
    if supervision is None:
        return {}
    groups: dict[str, set[str]] = {}
    listed: dict[str, set[str]] = {}
    for holder, grant in _grants_of(supervision):
        groups.setdefault(holder, set()).update(grant.groups)
        listed.setdefault(holder, set()).update(grant.extensions)
    return {
        holder: _Held(frozenset(found), frozenset(listed[holder]))
        for holder, found in groups.items()
    }


def _view_marks(supervision: Supervision | None, ext: str) -> dict[str, Mark]:
    """What the supervision says of each other extension that bears on ``ext``'s row and column:
    protected; the grants of ``ext`` that list it (those reaching its groups reach its whole
    class); its own grants that reach ``ext`` (any other it holds never changes a cell of the
    view: ``decide()`` looks at a holder's grants only for a target they cover)."""
    if supervision is None:
        return {}
    listing: dict[str, list[str]] = {}
    reaching: dict[str, list[str]] = {}
    for holder, grant in _grants_of(supervision):
        if holder == ext:
            for other in grant.extensions:
                listing.setdefault(other, []).append(grant.id)
        elif grant.covers(ext):
            reaching.setdefault(holder, []).append(grant.id)
    return _marked(supervision.protected, listing, reaching)


def signature(
    document: PolicyDocument,
    extensions: Iterable[str],
    supervision: Supervision | None = None,
) -> dict[str, Signature]:
    """For each extension: the places the document and the supervision name it.

    Two extensions with one signature are interchangeable: swapping them leaves every group's
    member set and every grant as they were (``compile_policy`` reads members as sets), and the
    protected set and every grant of the supervision too (a grant's groups are the document's;
    its holder and its ``extensions`` are in the mark, by grant id).
    """
    return _signature(document, extensions, supervision_marks(supervision))


def _signature(
    document: PolicyDocument, extensions: Iterable[str], marks: Mapping[str, Hashable]
) -> dict[str, Signature]:
    wanted = set(extensions)
    groups_of: dict[str, list[str]] = {ext: [] for ext in wanted}
    for name, members in document.groups.items():
        for ext in dict.fromkeys(members):
            found = groups_of.get(ext)
            if found is not None:
                found.append(name)
    extra = document.model_extra or {}
    return {
        ext: (
            tuple(groups),
            extra.get(EAVESDROP_PREFIX + ext),
            extra.get(WHISPER_PREFIX + ext),
            marks.get(ext),
        )
        for ext, groups in groups_of.items()
    }


def _cell(decision: Decision) -> Cell:
    return (decision.allowed, str(decision.reason), decision.group, decision.grant_ids)


def decide_cell(
    policy: CompiledPolicy,
    action: str,
    ext: str,
    target: str,
    *,
    now: datetime | None = None,
    supervision: Supervision | None = None,
) -> Cell:
    """One cell of the picture: what ``decide()`` answers ``ext`` doing ``action`` to ``target``
    (at ``now``, with ``supervision``, exactly as FastAGI asks it).

    ``group_pickup`` is the group form of pickup: allowed when ``target`` is among the targets
    ``decide()`` gives (``*``: everyone); the group is then the one the directed decision names.
    """
    if action != GROUP_PICKUP:
        return _cell(decide(policy, action, ext, target, now=now, supervision=supervision))
    if ext == target:
        return _cell(decide(policy, "pickup", ext, target, now=now, supervision=supervision))
    group_form = decide(policy, "pickup", ext, None, now=now, supervision=supervision)
    if group_form.allowed and (target in group_form.targets or ALL_TARGETS in group_form.targets):
        directed = decide(policy, "pickup", ext, target, now=now, supervision=supervision)
        return (True, str(group_form.reason), directed.group, ())
    reason = group_form.reason if not group_form.allowed else Reason.NO_PICKUP_GROUP
    return (False, str(reason), None, ())


@dataclass(slots=True)
class Classes:
    """Extensions grouped by signature: ``of[ext]`` is its class, ``members[c]`` its members."""

    of: dict[str, int]
    members: list[list[str]]

    @classmethod
    def build(cls, signatures: Mapping[str, object]) -> Classes:
        index: dict[object, int] = {}
        of: dict[str, int] = {}
        members: list[list[str]] = []
        for ext in sorted(signatures):
            key = signatures[ext]
            found = index.get(key)
            if found is None:
                found = index[key] = len(members)
                members.append([])
            members[found].append(ext)
            of[ext] = found
        return cls(of, members)


@dataclass(slots=True)
class ClassCells:
    """``decide()`` asked once per ordered pair of class representatives (and per action)."""

    policy: CompiledPolicy
    classes: Classes
    now: datetime | None = None
    supervision: Supervision | None = None
    _memo: dict[tuple[str, int, int], Cell] = field(default_factory=dict)

    def _decide(self, action: str, ext: str, target: str) -> Cell:
        return decide_cell(
            self.policy, action, ext, target, now=self.now, supervision=self.supervision
        )

    def cell(self, action: str, a: int, b: int) -> Cell:
        """The cell of any ``x`` of class ``a`` to any other ``y`` of class ``b``."""
        key = (action, a, b)
        found = self._memo.get(key)
        if found is None:
            row, col = self.classes.members[a], self.classes.members[b]
            ext = row[0]
            if a != b:
                target = col[0]
            elif len(col) > 1:
                target = col[1]
            else:
                target = ext  # the class is one extension: its only pair is itself
            found = self._memo[key] = self._decide(action, ext, target)
        return found

    def self_cell(self, action: str, a: int) -> Cell:
        ext = self.classes.members[a][0]
        key = (action, a, -1)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._decide(action, ext, ext)
        return found


class Legend:
    """The distinct cells, numbered in order of first use."""

    def __init__(self) -> None:
        self.cells: list[Cell] = []
        self._index: dict[Cell, int] = {}

    def code(self, cell: Cell) -> int:
        found = self._index.get(cell)
        if found is None:
            found = self._index[cell] = len(self.cells)
            self.cells.append(cell)
        return found

    def to_json(self, ends: Mapping[str, datetime]) -> list[dict[str, object]]:
        """``ends``: the grants' ``until`` (``grant_ends``). A cell allowed by grants names them
        and the instant the last of them ends (a directed cell names one, ``decide()``'s)."""
        out: list[dict[str, object]] = []
        for allowed, reason, group, grant_ids in self.cells:
            entry: dict[str, object] = {"allowed": allowed, "reason": reason, "group": group}
            if grant_ids:
                entry["grant_ids"] = list(grant_ids)
                entry["until"] = max(ends[grant_id] for grant_id in grant_ids).isoformat()
            out.append(entry)
        return out


def _digits(code: int, width: int) -> str:
    out = []
    for _ in range(width):
        code, digit = divmod(code, 64)
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def _width(count: int) -> int:
    width = 1
    while 64**width < count:
        width += 1
    return width


def _check_actions(actions: Sequence[str]) -> None:
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise ValueError(f"not a picture action: {', '.join(unknown)}")


def permission_matrix(
    document: PolicyDocument,
    policy: CompiledPolicy,
    actions: Sequence[str] = ACTIONS,
    *,
    now: datetime | None = None,
    supervision: Supervision | None = None,
) -> dict[str, object]:
    """Every ordered pair of the picture's extensions (``extensions_of``), per action, as legend
    codes.

    ``cells[action][i]`` is row ``i``'s string: ``width`` digits of ``alphabet`` per column,
    the column's index into ``legend`` (base 64, most significant first).
    """
    _check_actions(actions)
    extensions = extensions_of(document, supervision, now)
    signatures = signature(document, extensions, _protection_only(supervision))
    classes = Classes.build(signatures)
    cells = ClassCells(policy, classes, now, _protection_only(supervision))
    legend = Legend()
    column_classes = [classes.of[ext] for ext in extensions]
    distinct = sorted(set(column_classes))
    # Codes first (the legend's size fixes the width), then the strings.
    codes: dict[str, dict[int, dict[int, int]]] = {}
    for action in actions:
        per_row: dict[int, dict[int, int]] = {}
        for a in distinct:
            row = {b: legend.code(cells.cell(action, a, b)) for b in distinct}
            row[-1] = legend.code(cells.self_cell(action, a))
            per_row[a] = row
        codes[action] = per_row
    patches = _holder_patches(
        policy, extensions, signatures, classes, actions, legend, now, supervision
    )
    width = _width(len(legend.cells))
    out: dict[str, list[str]] = {}
    for action in actions:
        rows = []
        templates: dict[int, list[str]] = {}
        patched = patches.get(action, {})
        for i, ext in enumerate(extensions):
            a = classes.of[ext]
            template = templates.get(a)
            if template is None:
                row = codes[action][a]
                template = templates[a] = [_digits(row[b], width) for b in column_classes]
            line = template.copy()
            for columns, code in patched.get(i, ()):
                digits = _digits(code, width)
                for j in columns:
                    line[j] = digits
            line[i] = _digits(codes[action][a][-1], width)
            rows.append("".join(line))
        out[action] = rows
    return {
        "extensions": extensions,
        "actions": list(actions),
        "legend": legend.to_json(grant_ends(supervision)),
        "width": width,
        "alphabet": ALPHABET,
        "cells": out,
    }


Patch = tuple[list[int], int]
"""(the columns of a holder's row, the legend code they all have)"""


def _holder_patches(
    policy: CompiledPolicy,
    extensions: Sequence[str],
    signatures: Mapping[str, Signature],
    classes: Classes,
    actions: Sequence[str],
    legend: Legend,
    now: datetime | None,
    supervision: Supervision | None,
) -> dict[str, dict[int, list[Patch]]]:
    """action -> the row of each grant holder -> its cells that its grants may change, decided
    with them (the class cells stand for the rest of the row: decided without grants).

    Within a class of a group the holder's grants name, the members none of them lists are
    alike to the holder (the same groups, protected or not, covered by the same grants): one
    decision stands for them; each extension listed is decided on its own.
    """
    held = _held(supervision)
    if not held:
        return {}
    position = {ext: i for i, ext in enumerate(extensions)}
    in_group: dict[str, list[int]] = {}
    for c, members in enumerate(classes.members):
        for name in signatures[members[0]][0]:
            in_group.setdefault(name, []).append(c)
    granted = [action for action in actions if action in _GRANTED_ACTIONS]
    out: dict[str, dict[int, list[Patch]]] = {action: {} for action in granted}
    for holder, reach in held.items():
        row = position.get(holder)
        if row is None:
            continue  # its grants are over: not in the picture, and they allow nothing
        alone = reach.extensions | {holder}
        targets: list[tuple[str, list[int]]] = []
        for c in sorted({c for name in reach.groups for c in in_group.get(name, ())}):
            alike = [ext for ext in classes.members[c] if ext not in alone]
            if alike:
                targets.append((alike[0], [position[ext] for ext in alike]))
        targets.extend(
            (ext, [position[ext]]) for ext in sorted(reach.extensions) if ext in position
        )
        for action in granted:
            out[action][row] = [
                (
                    columns,
                    legend.code(
                        decide_cell(
                            policy, action, holder, target, now=now, supervision=supervision
                        )
                    ),
                )
                for target, columns in targets
            ]
    return out


def extension_view(
    document: PolicyDocument,
    policy: CompiledPolicy,
    ext: str,
    actions: Sequence[str] = ACTIONS,
    *,
    now: datetime | None = None,
    supervision: Supervision | None = None,
) -> dict[str, object]:
    """One extension's row (what it may do to each other) and column (what each may do to it)."""
    _check_actions(actions)
    extensions = extensions_of(document, supervision, now)
    others = [other for other in extensions if other != ext]
    # Others of one signature are interchangeable with ``ext`` held still (swapping two of
    # them moves neither ``ext`` nor anything said of it that bears on its row or column): one
    # decision per class and side.
    classes = Classes.build(_signature(document, others, _view_marks(supervision, ext)))
    kinds = [classes.of[other] for other in others]
    representatives = [members[0] for members in classes.members]
    legend = Legend()
    to: dict[str, list[int]] = {}
    by: dict[str, list[int]] = {}

    def code(action: str, row: str, column: str) -> int:
        cell = decide_cell(policy, action, row, column, now=now, supervision=supervision)
        return legend.code(cell)

    for action in actions:
        to[action] = [code(action, ext, r) for r in representatives]
        by[action] = [code(action, r, ext) for r in representatives]
    width = _width(len(legend.cells))

    def spread(codes: list[int]) -> str:
        of_kind = [_digits(code, width) for code in codes]
        return "".join([of_kind[kind] for kind in kinds])

    return {
        "extension": ext,
        "known": ext in extensions,
        "others": others,
        "actions": list(actions),
        "legend": legend.to_json(grant_ends(supervision)),
        "width": width,
        "alphabet": ALPHABET,
        "row": {a: spread(codes) for a, codes in to.items()},
        "column": {a: spread(codes) for a, codes in by.items()},
    }


_GROUP_FORMS: Final = {GROUP_PICKUP: "pickup", "eavesdrop": "eavesdrop", "whisper": "whisper"}
"""Actions whose directed answer, for one row extension, is its group form's target list:
policy.md rules 5 and 7 define those targets as the very reach rules 4 (share groups, without
``pickup_all``) and 6 consult. Directed pickup (``pickup_all`` reaches beyond the share groups)
and replace (no group form) are asked pair by pair. With supervision the group forms stay that
reach (``policy/supervision.py``): the document's plus the active grants', minus the protected
extensions (under ``allow_all``: ``*`` minus ``excluded``)."""


def _row_rule(
    policy: CompiledPolicy,
    action: str,
    ext: str,
    now: datetime | None,
    supervision: Supervision | None,
) -> Callable[[str], bool]:
    """Whether ``decide()`` lets ``ext`` do ``action`` to a target (never ``ext`` itself)."""
    form = _GROUP_FORMS.get(action)
    if form is None:
        return lambda target: (
            decide(policy, action, ext, target, now=now, supervision=supervision).allowed
        )
    decision = decide(policy, form, ext, None, now=now, supervision=supervision)
    if not decision.allowed:
        return lambda _target: False
    if ALL_TARGETS in decision.targets:
        if not decision.excluded:
            return lambda _target: True
        excluded = frozenset(decision.excluded)
        return lambda target: target not in excluded
    targets = decision.targets
    size = len(targets)

    def among(target: str) -> bool:  # the group forms' targets are sorted (policy.md)
        at = bisect_left(targets, target)
        return at < size and targets[at] == target

    return among


@dataclass(slots=True)
class _GroupedClasses:
    """The classes of the extensions in groups: per class, its groups, size, members; ``of``:
    each extension's class."""

    where: list[tuple[int, ...]]
    sizes: list[int]
    members: list[list[str]]
    of: dict[str, int]

    @classmethod
    def build(
        cls, document: PolicyDocument, marks: Mapping[str, Mark] | None = None
    ) -> _GroupedClasses:
        groups_of: dict[str, list[int]] = {}
        for i, members in enumerate(document.groups.values()):
            for ext in dict.fromkeys(members):
                found = groups_of.get(ext)
                if found is None:
                    groups_of[ext] = [i]
                else:
                    found.append(i)
        extra = document.model_extra or {}
        marks = marks or {}
        index: dict[Hashable, int] = {}
        out = cls([], [], [], {})
        # The same places as ``signature`` (group indices stand for the names).
        for ext, found in groups_of.items():
            where = tuple(found)
            key = (
                where,
                extra.get(EAVESDROP_PREFIX + ext),
                extra.get(WHISPER_PREFIX + ext),
                marks.get(ext),
            )
            c = index.get(key)
            if c is None:
                out.of[ext] = index[key] = len(out.sizes)
                out.where.append(where)
                out.sizes.append(1)
                out.members.append([ext])
            else:
                out.of[ext] = c
                out.sizes[c] += 1
                out.members[c].append(ext)
        return out


def group_summary(
    document: PolicyDocument,
    policy: CompiledPolicy,
    actions: Sequence[str] = ACTIONS,
    *,
    max_class_pairs: int = 4_000_000,
    now: datetime | None = None,
    supervision: Supervision | None = None,
) -> dict[str, object]:
    """For each ordered pair of groups (A, B): how many of the pairs (a in A, b in B, a != b)
    each action allows. ``pairs[i][j]`` and ``allowed[action][i][j]`` are those counts.

    One answer of ``decide()`` per ordered pair of classes (per action) stands for all the pairs
    of their members; the counts are then summed class by class into the groups they are in.
    The classes are decided without grants; each grant holder's row is then corrected where its
    grants reach (``_held_targets``, ``_held_rows``).

    Raises ``SummaryTooLargeError`` when the document's classes would need more than
    ``max_class_pairs`` ``decide()`` calls per action.
    """
    _check_actions(actions)
    names = list(document.groups)
    count = len(names)
    base = _protection_only(supervision)
    classes = _GroupedClasses.build(document, supervision_marks(base))
    where, sizes, members = classes.where, classes.sizes, classes.members
    held = {holder: reach for holder, reach in _held(supervision).items() if holder in classes.of}
    rows = _held_targets(names, classes, held)
    of_holders = {a for _, a, _ in rows}
    kinds = len(sizes)
    if kinds**2 > max_class_pairs:
        raise SummaryTooLargeError(kinds)
    # |A| |B| - |A & B|: the members both groups have are the classes both groups have.
    lengths = [0] * count
    both = [[0] * count for _ in names]
    for c, groups in enumerate(where):
        for i in groups:
            lengths[i] += sizes[c]
            row = both[i]
            for j in groups:
                row[j] += sizes[c]
    pairs = [[lengths[i] * lengths[j] - both[i][j] for j in range(count)] for i in range(count)]
    allowed: dict[str, list[list[int]]] = {}
    for action in actions:
        totals = [[0] * count for _ in names]
        kept: dict[int, list[bool]] = {}
        for a in range(kinds):
            rule = _row_rule(policy, action, members[a][0], now, base)
            # For a member x of class a: how many of each group's members x may do it to.
            reached = [0] * count
            hits = [False] * kinds
            for b in range(kinds):
                if b != a:
                    target = members[b][0]
                elif len(members[a]) > 1:
                    target = members[a][1]  # the class's other members, x excluded
                else:
                    continue  # one member: its only pair is itself
                if rule(target):
                    hits[b] = True
                    n = sizes[b] - (1 if b == a else 0)
                    for j in where[b]:
                        reached[j] += n
            if a in of_holders:
                kept[a] = hits
            if not any(reached):
                continue
            for i in where[a]:
                row, weight = totals[i], sizes[a]
                totals[i] = [total + weight * n for total, n in zip(row, reached, strict=True)]
        if action in _GRANTED_ACTIONS and held:
            _held_rows(policy, action, where, rows, kept, totals, now, supervision)
        allowed[action] = totals
    return {"groups": names, "actions": list(actions), "pairs": pairs, "allowed": allowed}


HeldRow = tuple[str, int, list[tuple[str, int, int]]]
"""(a holder, its class, the targets its grants reach: (an extension to decide, its class, how
many of that class it stands for))"""


def _held_targets(
    names: Sequence[str], classes: _GroupedClasses, held: Mapping[str, _Held]
) -> list[HeldRow]:
    """Where each holder's grants reach, in the summary's classes: once per class of the groups
    they name (for its members no grant lists: alike to the holder) and once per extension they
    list (the holder itself left out: not a pair of the summary)."""
    where, sizes, members, of = classes.where, classes.sizes, classes.members, classes.of
    in_group: dict[str, list[int]] = {}
    for c, groups in enumerate(where):
        for i in groups:
            in_group.setdefault(names[i], []).append(c)
    out: list[HeldRow] = []
    for holder, reach in held.items():
        alone = reach.extensions | {holder}
        taken = Counter(of[ext] for ext in alone if ext in of)
        targets = [
            (next(ext for ext in members[c] if ext not in alone), c, sizes[c] - taken[c])
            for c in sorted({c for name in reach.groups for c in in_group.get(name, ())})
            if sizes[c] > taken[c]
        ]
        targets.extend(
            (ext, of[ext], 1) for ext in sorted(reach.extensions) if ext in of and ext != holder
        )
        out.append((holder, of[holder], targets))
    return out


def _held_rows(
    policy: CompiledPolicy,
    action: str,
    where: Sequence[tuple[int, ...]],
    rows: Iterable[HeldRow],
    kept: Mapping[int, list[bool]],
    totals: list[list[int]],
    now: datetime | None,
    supervision: Supervision | None,
) -> None:
    """Add to ``totals`` what each holder's grants change in its row.

    ``kept[a][b]``: what ``decide()`` answers, without grants, a member of class ``a`` doing
    ``action`` to any other of class ``b`` -- the holder's count already summed. Where its
    grants reach (``_held_targets``) the holder is decided with them, and the difference added.
    A grant only ever allows (``decide()`` looks at grants where the rules deny, after the
    protection): where the class is already allowed there is nothing to decide again.
    """
    for holder, a, targets in rows:
        hits = kept[a]
        reached: dict[int, int] = {}
        for target, c, n in targets:
            if hits[c]:
                continue
            if decide(policy, action, holder, target, now=now, supervision=supervision).allowed:
                for j in where[c]:
                    reached[j] = reached.get(j, 0) + n
        for i in where[a]:
            row = totals[i]
            for j, n in reached.items():
                row[j] += n


class SummaryTooLargeError(ValueError):
    def __init__(self, classes: int) -> None:
        super().__init__(f"{classes} distinct kinds of extension: too many to summarize")
        self.classes = classes


@dataclass(frozen=True, slots=True)
class Change:
    action: str
    ext: str
    target: str
    before: Cell
    after: Cell

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action,
            "ext": self.ext,
            "target": self.target,
            "before": _side_json(self.before),
            "after": _side_json(self.after),
        }


def _side_json(cell: Cell) -> dict[str, object]:
    side: dict[str, object] = {"allowed": cell[0], "reason": cell[1]}
    if cell[3]:
        side["grant_ids"] = list(cell[3])
    return side


@dataclass(frozen=True, slots=True)
class Impact:
    """The decisions that flip between two policies: counts per action, and the first ones."""

    became_allowed: Mapping[str, int]
    became_denied: Mapping[str, int]
    changes: tuple[Change, ...]
    truncated: bool

    def to_json(self) -> dict[str, object]:
        return {
            "became_allowed": dict(self.became_allowed),
            "became_denied": dict(self.became_denied),
            "changes": [change.to_json() for change in self.changes],
            "truncated": self.truncated,
        }


def impact(
    old_document: PolicyDocument,
    old: CompiledPolicy,
    new_document: PolicyDocument,
    new: CompiledPolicy,
    actions: Sequence[str] = ACTIONS,
    *,
    limit: int = 500,
    max_class_pairs: int = 4_000_000,
    now: datetime | None = None,
    old_supervision: Supervision | None = None,
    new_supervision: Supervision | None = None,
) -> Impact:
    """Every (ext, target, action) whose allow/deny differs between ``old`` and ``new``.

    Both sides are judged at the same ``now``, each with its own supervision (the client's
    settings and grants compiled against that side's document), so a flip is the document's
    doing, never the clock's.

    Classes are taken over both documents at once (an extension's places in each, and whether
    each side protects it), so one representative pair stands for its members under either
    policy. As in the picture, grants are not in the classes: the class pairs are decided with
    the protection alone, and each grant holder's row is decided again, on both sides, at the
    targets its active grants reach on either side (``_impact_patches``); the changes are listed
    in the same order either way (per action, class pair, row, column).
    """
    _check_actions(actions)
    extensions = sorted(
        set(extensions_of(old_document, old_supervision, now))
        | set(extensions_of(new_document, new_supervision, now))
    )
    old_base, new_base = _protection_only(old_supervision), _protection_only(new_supervision)
    before_sig = signature(old_document, extensions, old_base)
    after_sig = signature(new_document, extensions, new_base)
    classes = Classes.build({e: (before_sig[e], after_sig[e]) for e in extensions})
    if len(classes.members) ** 2 > max_class_pairs:
        raise SummaryTooLargeError(len(classes.members))
    before = ClassCells(old, classes, now, old_base)
    after = ClassCells(new, classes, now, new_base)
    sides = (
        _Side(old, old_document, before_sig, old_supervision, before),
        _Side(new, new_document, after_sig, new_supervision, after),
    )
    allowed = dict.fromkeys(actions, 0)
    denied = dict.fromkeys(actions, 0)
    changes: list[Change] = []
    truncated = False
    sizes = [len(m) for m in classes.members]
    for action in actions:
        patches = _impact_patches(action, classes, sides, now)
        for a, row in enumerate(classes.members):
            for b, col in enumerate(classes.members):
                pairs = sizes[a] * sizes[b] - (sizes[a] if a == b else 0)
                if not pairs:
                    continue
                was, will = before.cell(action, a, b), after.cell(action, a, b)
                flips = was[0] != will[0]
                patched = patches.get((a, b))
                if patched is None:
                    if not flips:
                        continue
                    patched = {}
                elif flips:
                    # The patched cells are counted on their own below, not as the class's.
                    pairs -= sum(len(alike) for runs in patched.values() for alike, _, _ in runs)
                if flips:
                    (allowed if will[0] else denied)[action] += pairs
                for runs in patched.values():
                    for alike, cell_was, cell_will in runs:
                        if cell_was[0] != cell_will[0]:
                            (allowed if cell_will[0] else denied)[action] += len(alike)
                if truncated:
                    continue
                for ext in row:
                    held = patched.get(ext)
                    if held is None and not flips:
                        continue
                    own = {t: (w, v) for alike, w, v in held or () for t in alike}
                    for target in col if flips else sorted(own):
                        if target == ext:
                            continue
                        first, second = own.get(target, (was, will))
                        if first[0] == second[0]:
                            continue
                        if len(changes) >= limit:
                            truncated = True
                            break
                        changes.append(Change(action, ext, target, first, second))
                    if truncated:
                        break
    return Impact(allowed, denied, tuple(changes), truncated)


@dataclass(frozen=True, slots=True)
class _Side:
    """One side of ``impact``: its policy, document, signatures, supervision (with the grants)
    and the class cells (decided with its protection alone)."""

    policy: CompiledPolicy
    document: PolicyDocument
    signatures: Mapping[str, Signature]
    supervision: Supervision | None
    cells: ClassCells


def _active_reach(
    supervision: Supervision | None, action: str, now: datetime | None
) -> dict[str, _Held]:
    """holder -> what its grants that answer ``action`` reach (only those active at ``now``:
    ``decide()`` looks at no other; all of them when ``now`` is not given, so that ``decide()``
    still says it needs one)."""
    if supervision is None:
        return {}
    out: dict[str, _Held] = {}
    for holder, index in supervision.grants.get(action, {}).items():
        grants = [g for g in index.grants if now is None or g.active(now)]
        if grants:
            out[holder] = _Held(
                frozenset(name for g in grants for name in g.groups),
                frozenset(ext for g in grants for ext in g.extensions),
            )
    return out


ImpactPatches = dict[tuple[int, int], dict[str, list[tuple[list[str], Cell, Cell]]]]
"""(the row's class, the column's class) -> holder -> (targets, their cell before, after)"""


def _impact_patches(
    action: str, classes: Classes, sides: tuple[_Side, _Side], now: datetime | None
) -> ImpactPatches:
    """The cells of each holder's row that its grants may change on either side, decided with
    the grants on both sides (the class cells stand for the rest of its row).

    A holder's targets are the members of the classes in the groups its active grants name on
    either side (each side's groups, as that side's grants were resolved against its document),
    and the extensions they list. Within one class the members no grant of the holder lists (on
    either side) are alike to it on both sides: one decision per side stands for them. A grant
    only ever allows: where a side's class cell is already allowed, it is that side's cell. A
    cell is kept only where it changes a count or a listed change: where it flips, or where the
    class's flips (most of a holder's reach is allowed on both sides by its grants: left out).
    """
    out: ImpactPatches = {}
    if action not in _GRANTED_ACTIONS:
        return out
    reaches = [_active_reach(side.supervision, action, now) for side in sides]
    holders = sorted((reaches[0].keys() | reaches[1].keys()) & classes.of.keys())
    if not holders:
        return out
    in_group: list[dict[str, list[int]]] = []
    for side in sides:
        table: dict[str, list[int]] = {}
        for c, members in enumerate(classes.members):
            for name in side.signatures[members[0]][0]:
                table.setdefault(name, []).append(c)
        in_group.append(table)
    empty = _Held(frozenset(), frozenset())
    for holder in holders:
        a = classes.of[holder]
        held = [reach.get(holder, empty) for reach in reaches]
        listed = held[0].extensions | held[1].extensions
        alone = listed | {holder}
        reached: set[int] = set()
        for table, reach in zip(in_group, held, strict=True):
            for name in reach.groups:
                reached.update(table.get(name, ()))
        targets: list[tuple[str, int, list[str]]] = []
        for c in sorted(reached):
            alike = [ext for ext in classes.members[c] if ext not in alone]
            if alike:
                targets.append((alike[0], c, alike))
        targets.extend((ext, classes.of[ext], [ext]) for ext in sorted(listed & classes.of.keys()))
        for target, c, stand_for in targets:
            if target == holder:
                continue
            was, will = (_holder_cell(side, action, a, c, holder, target, now) for side in sides)
            if was[0] == will[0] and not _class_flips(sides, action, a, c):
                continue
            out.setdefault((a, c), {}).setdefault(holder, []).append((stand_for, was, will))
    return out


def _class_flips(sides: tuple[_Side, _Side], action: str, a: int, b: int) -> bool:
    return sides[0].cells.cell(action, a, b)[0] != sides[1].cells.cell(action, a, b)[0]


def _holder_cell(
    side: _Side, action: str, a: int, b: int, holder: str, target: str, now: datetime | None
) -> Cell:
    found = side.cells.cell(action, a, b)
    if found[0]:
        return found
    return decide_cell(side.policy, action, holder, target, now=now, supervision=side.supervision)
