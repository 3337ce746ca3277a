"""The permission picture of a policy: who may do what to whom, and what a change would change.

Every answer is a ``decide()`` answer, never a rule written again. What keeps it cheap is that
extensions a document mentions in exactly the same places are interchangeable: swapping two of
them leaves the document unchanged, so ``decide()`` answers the same for either. Extensions are
therefore put in *classes* by the places the document names them (``signature``), ``decide()`` is
asked once per ordered pair of class representatives, and the answers are spread over the
members. A class is never too coarse (a signature lists every mention, a key ending in
``_<ext>`` included); it may be finer than needed, which only costs time.

Pure: no I/O, and nothing from callgate outside ``callgate.policy``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from callgate.policy.compiled import CompiledPolicy
from callgate.policy.decide import decide
from callgate.policy.document import PolicyDocument
from callgate.policy.types import ALL_TARGETS, Decision, Reason

GROUP_PICKUP: Final = "group_pickup"
"""The picture's name for "the column is in the row's group-pickup reach"."""
ACTIONS: Final = ("pickup", GROUP_PICKUP, "eavesdrop", "whisper", "replace")
ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
"""Cell digits (base64url): a cell is ``width`` of them, an index into the legend."""

Cell = tuple[bool, str, str | None]
"""(allowed, reason code, the group that granted it)"""


def extensions_of(document: PolicyDocument) -> list[str]:
    """Every extension the document names (group members and grant keys), sorted."""
    found: set[str] = set()
    for members in document.groups.values():
        found.update(members)
    found.update(document.eavesdrop)
    found.update(document.whisper)
    return sorted(found)


def signature(document: PolicyDocument, extensions: Iterable[str]) -> dict[str, frozenset[str]]:
    """For each extension: the places the document names it (a list item, a key, a key suffix)."""
    wanted = set(extensions)
    places: dict[str, set[str]] = {ext: set() for ext in wanted}

    def walk(value: object, path: str) -> None:
        if isinstance(value, str):
            if value in wanted:
                places[value].add(path)
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                key = str(key)
                # A key naming an extension carries its value: two extensions are only
                # interchangeable if what the document says of each is the same.
                if key in wanted:
                    places[key].add(f"{path}{{}}={inner!r}")
                at = key.find("_")
                while at >= 0:
                    if key[at + 1 :] in wanted:
                        places[key[at + 1 :]].add(f"{path}/{key[: at + 1]}*={inner!r}")
                    at = key.find("_", at + 1)
                walk(inner, f"{path}/{key}")
        elif isinstance(value, (list, tuple)):
            where = path + "[]"
            for inner in value:
                if isinstance(inner, str):  # the common case, without a call
                    if inner in wanted:
                        places[inner].add(where)
                else:
                    walk(inner, where)

    walk(document.model_dump(mode="json"), "")
    return {ext: frozenset(where) for ext, where in places.items()}


def _cell(decision: Decision) -> Cell:
    return (decision.allowed, str(decision.reason), decision.group)


def decide_cell(policy: CompiledPolicy, action: str, ext: str, target: str) -> Cell:
    """One cell of the picture: what ``decide()`` answers ``ext`` doing ``action`` to ``target``.

    ``group_pickup`` is the group form of pickup: allowed when ``target`` is among the targets
    ``decide()`` gives (``*``: everyone); the group is then the one the directed decision names.
    """
    if action != GROUP_PICKUP:
        return _cell(decide(policy, action, ext, target))
    if ext == target:
        return _cell(decide(policy, "pickup", ext, target))
    group_form = decide(policy, "pickup", ext, None)
    if group_form.allowed and (target in group_form.targets or ALL_TARGETS in group_form.targets):
        directed = decide(policy, "pickup", ext, target)
        return (True, str(group_form.reason), directed.group)
    reason = group_form.reason if not group_form.allowed else Reason.NO_PICKUP_GROUP
    return (False, str(reason), None)


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
    _memo: dict[tuple[str, int, int], Cell] = field(default_factory=dict)

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
            found = self._memo[key] = decide_cell(self.policy, action, ext, target)
        return found

    def self_cell(self, action: str, a: int) -> Cell:
        ext = self.classes.members[a][0]
        key = (action, a, -1)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = decide_cell(self.policy, action, ext, ext)
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

    def to_json(self) -> list[dict[str, object]]:
        return [{"allowed": a, "reason": r, "group": g} for a, r, g in self.cells]


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
    document: PolicyDocument, policy: CompiledPolicy, actions: Sequence[str] = ACTIONS
) -> dict[str, object]:
    """Every ordered pair of the document's extensions, per action, as legend codes.

    ``cells[action][i]`` is row ``i``'s string: ``width`` digits of ``alphabet`` per column,
    the column's index into ``legend`` (base 64, most significant first).
    """
    _check_actions(actions)
    extensions = extensions_of(document)
    classes = Classes.build(signature(document, extensions))
    cells = ClassCells(policy, classes)
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
    width = _width(len(legend.cells))
    out: dict[str, list[str]] = {}
    for action in actions:
        rows = []
        templates: dict[int, list[str]] = {}
        for i, ext in enumerate(extensions):
            a = classes.of[ext]
            template = templates.get(a)
            if template is None:
                row = codes[action][a]
                template = templates[a] = [_digits(row[b], width) for b in column_classes]
            line = template.copy()
            line[i] = _digits(codes[action][a][-1], width)
            rows.append("".join(line))
        out[action] = rows
    return {
        "extensions": extensions,
        "actions": list(actions),
        "legend": legend.to_json(),
        "width": width,
        "alphabet": ALPHABET,
        "cells": out,
    }


def extension_view(
    document: PolicyDocument, policy: CompiledPolicy, ext: str, actions: Sequence[str] = ACTIONS
) -> dict[str, object]:
    """One extension's row (what it may do to each other) and column (what each may do to it)."""
    _check_actions(actions)
    extensions = extensions_of(document)
    others = [other for other in extensions if other != ext]
    legend = Legend()
    row: dict[str, list[int]] = {}
    column: dict[str, list[int]] = {}
    for action in actions:
        row[action] = [legend.code(decide_cell(policy, action, ext, o)) for o in others]
        column[action] = [legend.code(decide_cell(policy, action, o, ext)) for o in others]
    width = _width(len(legend.cells))
    return {
        "extension": ext,
        "known": ext in extensions,
        "others": others,
        "actions": list(actions),
        "legend": legend.to_json(),
        "width": width,
        "alphabet": ALPHABET,
        "row": {a: "".join(_digits(c, width) for c in codes) for a, codes in row.items()},
        "column": {a: "".join(_digits(c, width) for c in codes) for a, codes in column.items()},
    }


def group_summary(
    document: PolicyDocument,
    policy: CompiledPolicy,
    actions: Sequence[str] = ACTIONS,
    *,
    max_class_pairs: int = 4_000_000,
) -> dict[str, object]:
    """For each ordered pair of groups (A, B): how many of the pairs (a in A, b in B, a != b)
    each action allows. ``pairs[i][j]`` and ``allowed[action][i][j]`` are those counts.

    Raises ``SummaryTooLargeError`` when the document's classes would need more than
    ``max_class_pairs`` ``decide()`` calls per action.
    """
    _check_actions(actions)
    extensions = extensions_of(document)
    classes = Classes.build(signature(document, extensions))
    grouped = {c for members in document.groups.values() for c in {classes.of[e] for e in members}}
    if len(grouped) ** 2 > max_class_pairs:
        raise SummaryTooLargeError(len(grouped))
    cells = ClassCells(policy, classes)
    names = list(document.groups)
    member_sets = [frozenset(document.groups[name]) for name in names]
    counts: list[dict[int, int]] = []
    for members in member_sets:
        tally: dict[int, int] = {}
        for ext in members:
            tally[classes.of[ext]] = tally.get(classes.of[ext], 0) + 1
        counts.append(tally)
    pairs = [[0] * len(names) for _ in names]
    allowed = {action: [[0] * len(names) for _ in names] for action in actions}
    for i, row_members in enumerate(member_sets):
        for j, col_members in enumerate(member_sets):
            both = row_members & col_members
            shared: dict[int, int] = {}
            for ext in both:
                shared[classes.of[ext]] = shared.get(classes.of[ext], 0) + 1
            pairs[i][j] = len(row_members) * len(col_members) - len(both)
            for action in actions:
                total = 0
                for a, n_a in counts[i].items():
                    for b, n_b in counts[j].items():
                        n = n_a * n_b - (shared.get(a, 0) if a == b else 0)
                        if n and cells.cell(action, a, b)[0]:
                            total += n
                allowed[action][i][j] = total
    return {"groups": names, "actions": list(actions), "pairs": pairs, "allowed": allowed}


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
            "before": {"allowed": self.before[0], "reason": self.before[1]},
            "after": {"allowed": self.after[0], "reason": self.after[1]},
        }


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
) -> Impact:
    """Every (ext, target, action) whose allow/deny differs between ``old`` and ``new``.

    Classes are taken over both documents at once (an extension's places in each), so one
    representative pair stands for its members under either policy.
    """
    _check_actions(actions)
    extensions = sorted(set(extensions_of(old_document)) | set(extensions_of(new_document)))
    before_sig = signature(old_document, extensions)
    after_sig = signature(new_document, extensions)
    classes = Classes.build({e: (before_sig[e], after_sig[e]) for e in extensions})
    if len(classes.members) ** 2 > max_class_pairs:
        raise SummaryTooLargeError(len(classes.members))
    before = ClassCells(old, classes)
    after = ClassCells(new, classes)
    allowed = dict.fromkeys(actions, 0)
    denied = dict.fromkeys(actions, 0)
    changes: list[Change] = []
    truncated = False
    sizes = [len(m) for m in classes.members]
    for action in actions:
        for a, row in enumerate(classes.members):
            for b, col in enumerate(classes.members):
                pairs = sizes[a] * sizes[b] - (sizes[a] if a == b else 0)
                if not pairs:
                    continue
                was, now = before.cell(action, a, b), after.cell(action, a, b)
                if was[0] == now[0]:
                    continue
                (allowed if now[0] else denied)[action] += pairs
                for ext in row:
                    if len(changes) >= limit:
                        truncated = True
                        break
                    for target in col:
                        if target == ext:
                            continue
                        if len(changes) >= limit:
                            truncated = True
                            break
                        changes.append(Change(action, ext, target, was, now))
    return Impact(allowed, denied, tuple(changes), truncated)
