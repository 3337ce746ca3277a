"""Read Asterisk .conf files and check the rules callgate's configuration must keep.

``callgate check-conf [DIR]`` runs every rule on a directory laid out like the shipped
``asterisk-conf/`` (an operator's edited copy, for instance) and prints one line per finding;
``tests/test_asterisk_conf.py`` runs it in CI, without Asterisk, on the shipped files and on
deliberately broken copies of them.

The reader knows the part of Asterisk's config syntax the shipped files use (main/config.c,
pbx/pbx_config.c): ``[section]`` and ``[section](!,template)`` headers, ``key = value`` and
``key => value``, ``;`` comments (``\\;`` is a literal semicolon, ``;-- --;`` a block comment),
``#include`` / ``#tryinclude``, and in the dialplan ``exten => NAME,PRIORITY,App(args)``,
``same => n(label),App(args)`` and ``include =>``.

The rules (each finding names its rule):

- ``agi-url``: a FastAGI call (``AGI(agi://HOST/<action>,...)``, ``hagi://`` or a URL from a
  variable, ``AGI(${CG_AGI_URL}/<action>,...)``) names one of callgate's actions and passes the
  client and the acting extension (``agi_arg_1``, ``agi_arg_2``), neither empty nor taken from
  caller ID.
- ``agi-address``: ``[globals]`` ``CALLGATE_AGI`` is a list of ``agi://HOST[:PORT]``,
  ``hagi://DOMAIN`` or ``HOST[:PORT]`` separated by ``&``: no empty item (it would end the list
  there), no space, comma or path, no port after ``hagi://`` (Asterisk then skips the SRV lookup).
- ``agi-prepare``: before every FastAGI call, on every path, ``AGIEXITONHANGUP=yes`` and every
  answer variable (``CALLGATE_DECISION`` ...) cleared, so a stale ``ALLOW`` cannot be read.
- ``agi-check``: the step right after a FastAGI call is the verdict check: ``GotoIf`` on
  ``AGISTATUS = SUCCESS & CALLGATE_DECISION = ALLOW`` (or its negation towards the denial), or
  the failover check ``GotoIf($["${CALLGATE_DECISION}" = ""]?<retry>)`` right before it.
- ``agi-failover``: a path reaches a second FastAGI call only through the true branch of the
  failover check: callgate is asked again elsewhere only when it gave no answer, never after an
  ``ALLOW`` or a ``DENY``.
- ``guarded``: ``Pickup``/``PickupChan`` run only on the allow branch of a ``pickup`` answer,
  ``ChanSpy``/``ExtenSpy`` only on the allow branch of an ``eavesdrop`` or ``whisper`` answer.
- ``chanspy``: every ``ChanSpy`` has ``u`` (exact channel, never a name prefix); after
  ``eavesdrop`` no ``d``, ``B``, ``w``, ``W``; after ``whisper`` a ``w`` and no ``d``, ``B``.
- ``notice``: a ``ChanSpy`` after ``eavesdrop`` or ``whisper`` runs only on the true branch of
  ``GotoIf($["${CG_NOTICE_OK}" = "yes"]...)`` right after ``Gosub(callgate,notice,1)``: the
  notice callgate asks for (``CALLGATE_NOTICE``) is given first, and a notice not given denies.
  The one ``ChanSpy`` allowed without an answer, and the only one allowed ``B``, is
  ``[callgate-notice]`` ``spy`` (the notice channel barging the tone in), with ``q``, ``E``, ``u``
  and without ``d``, ``w``, ``W``; no context includes ``[callgate-notice]``.
- ``exact-channel``: a ``CHANNELS()`` regular expression is anchored: ``^...-[0-9a-f]+$``.
- ``caller-id``: caller ID is never read (``${CALLERID(...)}``, ``${CALLERIDNUM}``); setting it is
  fine.
- ``labels``: every ``Goto``/``GotoIf`` label exists in its extension.
- ``tenant``: every ``Gosub`` into the ``[callgate]`` subroutines passes a literal client id.
- ``pickupexten``: ``features.conf`` sets a ``pickupexten`` no phone can dial (80+ characters:
  Asterisk keeps a dialed number in AST_MAX_EXTENSION = 80 bytes; empty would match an INVITE
  without a user part).
- ``manager``: every AMI user reads at most ``call`` and writes at most ``call``, ``reporting``,
  ``system``; it is denied everywhere but loopback; connections are not displayed.
- ``endpoint``: every PJSIP phone is ``<client>_<ext>`` (no ``-``) with ``set_var`` for
  ``CALLGATE_CLIENT`` and ``CALLGATE_EXT``, named call/pickup group = client and a dialplan
  context that exists.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callgate.agi import variables

ACTIONS = frozenset({"pickup", "eavesdrop", "whisper", "replace", "restore"})
ANSWER_VARIABLES = variables.ALL
GUARDED_APPS = {
    "pickup": "pickup",
    "pickupchan": "pickup",
    "chanspy": "spy",
    "extenspy": "spy",
}
NOTICE_CONTEXT = "callgate-notice"
"""The notice channel's context; its ``spy`` extension is the only barging ``ChanSpy``."""
NOTICE_SPY = "spy"
NOTICE_OK = "CG_NOTICE_OK"
"""Set to ``yes`` by ``[callgate]`` ``notice`` once the notice was given (or none is asked)."""
_NOTICE_OK_CONDITION = f'$["${{{NOTICE_OK}}}" = "yes"]'
ENDING_APPS = frozenset({"hangup", "return", "congestion", "busy", "stackpop"})
AST_MAX_EXTENSION = 80
MANAGER_READ = frozenset({"call"})
MANAGER_WRITE = frozenset({"call", "reporting", "system"})
LOOPBACK_PERMITS = frozenset({"127.0.0.1/255.255.255.255", "127.0.0.1/32", "127.0.0.1"})


class ConfError(Exception):
    """A file the reader cannot read as Asterisk configuration."""


@dataclass(frozen=True, slots=True)
class Where:
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: str
    where: Where


@dataclass(slots=True)
class Section:
    name: str
    where: Where
    template: bool = False
    parents: tuple[str, ...] = ()
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: [{self.rule}] {self.message}"


# ------------------------------------------------------------------------------ config reader


def _strip_comment(line: str, in_block: bool) -> tuple[str, bool]:
    """The line without comments, and whether a ``;--`` block comment is still open."""
    out: list[str] = []
    i = 0
    while i < len(line):
        if in_block:
            end = line.find("--;", i)
            if end < 0:
                return "".join(out), True
            i, in_block = end + 3, False
            continue
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
        elif line.startswith(";--", i):
            in_block, i = True, i + 3
        elif ch == ";":
            break
        else:
            out.append(ch)
            i += 1
    return "".join(out), in_block


def _logical_lines(path: Path, base: Path, seen: tuple[Path, ...]) -> Iterator[tuple[str, Where]]:
    if path in seen:
        raise ConfError(f"{path}: #include loop")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfError(f"{path}: {exc}") from exc
    in_block = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line, in_block = _strip_comment(raw, in_block)
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            directive, _, arg = line.partition(" ")
            arg = arg.strip().strip('"').strip("<>")
            if directive in ("#include", "#tryinclude"):
                # Asterisk resolves a relative #include against its config directory.
                target = Path(arg) if Path(arg).is_absolute() else base / arg
                if not target.exists() and directive == "#tryinclude":
                    continue
                yield from _logical_lines(target, base, (*seen, path))
                continue
            raise ConfError(f"{path}:{number}: unsupported directive {directive}")
        yield line, Where(path, number)


_HEADER = re.compile(r"^\[(?P<name>[^\]]+)\](?:\((?P<options>[^)]*)\))?$")
_ENTRY = re.compile(r"^(?P<key>[^=]+?)\s*=>?\s*(?P<value>.*)$")


def read_conf(path: Path, base: Path | None = None) -> list[Section]:
    """Every section of ``path`` (with its #includes), templates applied, in file order."""
    base = base or path.parent
    sections: list[Section] = []
    current: Section | None = None
    for line, where in _logical_lines(path, base, ()):
        if header := _HEADER.match(line):
            options = [o.strip() for o in (header["options"] or "").split(",") if o.strip()]
            current = Section(
                name=header["name"].strip(),
                where=where,
                template="!" in options,
                parents=tuple(o for o in options if o != "!"),
            )
            sections.append(current)
            continue
        entry = _ENTRY.match(line)
        if entry is None:
            raise ConfError(f"{where}: not a [section] nor a key = value line: {line!r}")
        if current is None:
            raise ConfError(f"{where}: {line!r} comes before any [section]")
        current.entries.append(Entry(entry["key"].strip(), entry["value"].strip(), where))
    return _apply_templates(sections)


def _apply_templates(sections: list[Section]) -> list[Section]:
    templates = {s.name: s for s in sections if s.template}

    def inherited(section: Section, depth: int = 0) -> list[Entry]:
        if depth > 10:
            raise ConfError(f"{section.where}: template chain too deep")
        entries: list[Entry] = []
        for parent in section.parents:
            if parent not in templates:
                raise ConfError(f"{section.where}: unknown template {parent!r}")
            entries += inherited(templates[parent], depth + 1)
        return entries + section.entries

    return [
        Section(s.name, s.where, s.template, s.parents, inherited(s)) if s.parents else s
        for s in sections
    ]


def values(section: Section, key: str) -> list[str]:
    return [e.value for e in section.entries if e.key.lower() == key.lower()]


def value(section: Section, key: str) -> str | None:
    found = values(section, key)
    return found[-1] if found else None


# ------------------------------------------------------------------------------ dialplan model


def split_args(text: str) -> list[str]:
    """Split application arguments on commas outside (), [], {} and double quotes."""
    args: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            args.append(text[start:i])
            start = i + 1
    args.append(text[start:])
    return args


@dataclass(frozen=True, slots=True)
class Step:
    """One priority of an extension: ``App(args)``."""

    priority: int
    label: str | None
    app: str
    data: str
    where: Where

    @property
    def app_lower(self) -> str:
        return self.app.lower()

    @property
    def text(self) -> str:
        return f"{self.app}({self.data})"


@dataclass(slots=True)
class Extension:
    context: str
    name: str
    steps: list[Step] = field(default_factory=list)

    def label_priority(self, label: str) -> int | None:
        label = label.strip()
        if label.isdigit():
            return int(label)
        for step in self.steps:
            if step.label == label:
                return step.priority
        return None

    def index_of(self, priority: int) -> int | None:
        for i, step in enumerate(self.steps):
            if step.priority == priority:
                return i
        return None


@dataclass(slots=True)
class Dialplan:
    extensions: list[Extension]
    contexts: set[str]
    globals: dict[str, str]
    # where each global was last set (Asterisk keeps the last of several [globals] values)
    globals_where: dict[str, Where] = field(default_factory=dict)
    includes: list[tuple[str, str, Where]] = field(default_factory=list)
    """(context, included context, where) of every ``include =>``."""

    def in_context(self, context: str) -> list[Extension]:
        return [e for e in self.extensions if e.context == context]


_PRIORITY = re.compile(r"^(?P<prio>\d+|n|hint)(?:\((?P<label>[^)]*)\))?$")


def _parse_app(text: str) -> tuple[str, str]:
    app, paren, rest = text.partition("(")
    if not paren:
        return app.strip(), ""
    if not rest.endswith(")"):
        raise ConfError(f"unbalanced parentheses in {text!r}")
    return app.strip(), rest[:-1]


def read_dialplan(sections: Iterable[Section]) -> Dialplan:
    extensions: dict[tuple[str, str], Extension] = {}
    contexts: set[str] = set()
    global_vars: dict[str, str] = {}
    global_where: dict[str, Where] = {}
    includes: list[tuple[str, str, Where]] = []
    for section in sections:
        if section.name.lower() == "globals":
            global_vars.update((e.key, e.value) for e in section.entries)
            global_where.update((e.key, e.where) for e in section.entries)
            continue
        if section.name.lower() == "general" or section.template:
            continue
        contexts.add(section.name)
        last: Extension | None = None
        last_priority = 0
        for entry in section.entries:
            key = entry.key.lower()
            if key == "include":
                includes.append((section.name, entry.value.strip(), entry.where))
                continue
            if key not in ("exten", "same"):
                raise ConfError(f"{entry.where}: unexpected {entry.key!r} in a dialplan context")
            parts = entry.value.split(",", 2 if key == "exten" else 1)
            if key == "exten":
                if len(parts) != 3:
                    raise ConfError(f"{entry.where}: expected NAME,PRIORITY,App(args)")
                name, prio_text, app_text = (p.strip() for p in parts)
                if (section.name, name) not in extensions:
                    extensions[(section.name, name)] = Extension(section.name, name)
                last = extensions[(section.name, name)]
            else:
                if last is None or len(parts) != 2:
                    raise ConfError(f"{entry.where}: 'same' without an extension before it")
                prio_text, app_text = (p.strip() for p in parts)
            prio = _PRIORITY.match(prio_text)
            if prio is None:
                raise ConfError(f"{entry.where}: unsupported priority {prio_text!r}")
            if prio["prio"] == "hint":
                continue
            number = last_priority + 1 if prio["prio"] == "n" else int(prio["prio"])
            app, data = _parse_app(app_text)
            last.steps.append(Step(number, prio["label"], app, data, entry.where))
            last_priority = number
    for ext in extensions.values():
        ext.steps.sort(key=lambda s: s.priority)
    return Dialplan(list(extensions.values()), contexts, global_vars, global_where, includes)


# ------------------------------------------------------------------------------ verdict checks

_STATUS, _DECISION, _ALLOW = (
    f'"${{{variables.AGISTATUS}}}"',
    f'"${{{variables.DECISION}}}"',
    f'"{variables.ALLOW}"',
)
_ALLOW_TERMS = {(_STATUS, "=", '"SUCCESS"'), (_DECISION, "=", _ALLOW)}
_DENY_TERMS = {(_STATUS, "!=", '"SUCCESS"'), (_DECISION, "!=", _ALLOW)}
_UNANSWERED_TERMS = {(_DECISION, "=", '""')}
_TERM = re.compile(r'^\s*("[^"]*")\s*(!=|=)\s*("[^"]*")\s*$')


def _terms(expression: str, joiner: str) -> set[tuple[str, str, str]] | None:
    terms: set[tuple[str, str, str]] = set()
    for part in expression.split(joiner):
        match = _TERM.match(part)
        if match is None:
            return None
        terms.add((match[1], match[2], match[3]))
    return terms


def verdict_kind(condition: str) -> str | None:
    """``"allow"``: ``$[SUCCESS & ALLOW]``; ``"deny"``: ``$[!SUCCESS | !ALLOW]``; else None."""
    condition = condition.strip()
    if not (condition.startswith("$[") and condition.endswith("]")):
        return None
    inner = condition[2:-1]
    if "&" in inner and "|" not in inner and _terms(inner, "&") == _ALLOW_TERMS:
        return "allow"
    if "|" in inner and "&" not in inner and _terms(inner, "|") == _DENY_TERMS:
        return "deny"
    return None


def is_unanswered_check(condition: str) -> bool:
    """``$["${CALLGATE_DECISION}" = ""]``: true only when the FastAGI session gave no answer
    (whatever ``AGISTATUS`` says: an answer followed by a failure is still an answer)."""
    condition = condition.strip()
    if not (condition.startswith("$[") and condition.endswith("]")):
        return False
    inner = condition[2:-1]
    return "&" not in inner and "|" not in inner and _terms(inner, "&") == _UNANSWERED_TERMS


def _partition_outside_substitutions(text: str, separator: str) -> tuple[str, str]:
    """``text`` cut at the first ``separator`` outside ``${...}`` and ``$[...]``: Asterisk
    substitutes those before GotoIf looks for its ``?`` and ``:``."""
    # The closing bracket of each open bracket, innermost last. As in pbx_variables.c, inside
    # ${...} only braces nest, inside $[...] only square brackets.
    closers: list[str] = []
    for i, ch in enumerate(text):
        opens = ch in "{[" and i > 0 and text[i - 1] == "$"
        if opens or (closers and ch == {"}": "{", "]": "["}[closers[-1]]):
            closers.append("}" if ch == "{" else "]")
        elif closers and ch == closers[-1]:
            closers.pop()
        elif ch == separator and not closers:
            return text[:i], text[i + 1 :]
    return text, ""


def split_gotoif(data: str) -> tuple[str, str, str]:
    condition, branches = _partition_outside_substitutions(data, "?")
    if_true, if_false = _partition_outside_substitutions(branches, ":")
    return condition, if_true.strip(), if_false.strip()


# A FastAGI URL: agi:// or hagi:// with a host, or a variable holding one (the failover list).
_FASTAGI_BASE = r"(?:h?agi://[^/]*|\$\{[A-Za-z0-9_]+\})"


def is_fastagi(step: Step) -> bool:
    return step.app_lower == "agi" and bool(
        re.match(_FASTAGI_BASE + "/", split_args(step.data)[0].strip())
    )


def agi_action(step: Step) -> str | None:
    if step.app_lower != "agi":
        return None
    url = split_args(step.data)[0].strip()
    match = re.match(rf"^{_FASTAGI_BASE}/([A-Za-z_]+)$", url)
    return match[1] if match else None


@dataclass(frozen=True, slots=True)
class _State:
    cleared: frozenset[str]
    exit_on_hangup: bool
    asked: str | None  # the action of the last FastAGI call on this path
    allowed: bool  # on the allow branch of that call's verdict check
    notice_ran: bool = False  # the step before was Gosub(callgate,notice,1)
    noticed: bool = False  # on the true branch of the notice check that followed it


def _cleared_by(step: Step) -> tuple[set[str], set[str]]:
    """Variables set to empty, and variables set to something, by a Set/MSet step."""
    if step.app_lower == "set":
        assignments = [step.data]
    elif step.app_lower == "mset":
        assignments = split_args(step.data)
    else:
        return set(), set()
    emptied: set[str] = set()
    assigned: set[str] = set()
    for assignment in assignments:
        name, _, val = assignment.partition("=")
        (emptied if val.strip() == "" else assigned).add(name.strip())
    return emptied, assigned


def _apps_in(step: Step) -> list[tuple[str, str]]:
    """Every (app, args) a step runs: itself, and those inside ExecIf/Exec."""
    found = [(step.app_lower, step.data)]
    for match in re.finditer(r"\b(Pickup|PickupChan|ChanSpy|ExtenSpy)\(([^()]*)\)", step.data):
        found.append((match[1].lower(), match[2]))
    return found


def check_flow(ext: Extension) -> list[Finding]:
    """Walk every path of one extension; see the module docstring for the rules."""
    findings: dict[tuple[str, Where, str], Finding] = {}

    def report(rule: str, step: Step, message: str) -> None:
        findings.setdefault((rule, step.where, message), Finding(rule, step.where, message))

    def target_index(step: Step, label: str) -> int | str | None:
        """Index of a same-extension label; "exit" for another extension; None if unknown."""
        if not label:
            return None
        if "," in label:
            return "exit"
        priority = ext.label_priority(label)
        index = ext.index_of(priority) if priority is not None else None
        if index is None:
            report("labels", step, f"label {label!r} does not exist in {ext.name}")
        return index

    notice_channel = ext.context == NOTICE_CONTEXT and ext.name == NOTICE_SPY
    start = _State(frozenset(), False, None, False)
    seen: set[tuple[int, _State]] = set()
    work: list[tuple[int, _State]] = [(0, start)] if ext.steps else []
    while work:
        index, state = work.pop()
        if (index, state) in seen or index >= len(ext.steps):
            continue
        seen.add((index, state))
        step = ext.steps[index]
        nxt = index + 1

        for app, data in _apps_in(step):
            kind = GUARDED_APPS.get(app)
            if kind is None:
                continue
            if app == "chanspy" and notice_channel:
                for message in notice_chanspy_problems(data):
                    report("notice", step, message)
                continue
            asked = {"pickup": "pickup", "eavesdrop": "spy", "whisper": "spy"}.get(
                state.asked or ""
            )
            if not state.allowed or asked != kind:
                report("guarded", step, f"{step.app} can run without an ALLOW for it")
            if kind == "spy" and asked == "spy" and not state.noticed:
                report("notice", step, f"{step.app} can start before the notice was given")
            if app == "chanspy":
                for message in chanspy_problems(data, state.asked):
                    report("chanspy", step, message)

        after_notice = state.notice_ran  # this step comes right after the notice step
        emptied, assigned = _cleared_by(step)
        cleared = (state.cleared | emptied) - assigned
        exit_on_hangup = state.exit_on_hangup
        if step.app_lower == "set" and step.data.replace(" ", "") == "AGIEXITONHANGUP=yes":
            exit_on_hangup = True
        state = _State(
            frozenset(cleared),
            exit_on_hangup,
            state.asked,
            state.allowed,
            notice_ran=is_notice_gosub(step),
            noticed=state.noticed and NOTICE_OK not in assigned | emptied,
        )

        if step.app_lower == "agi":
            missing = [v for v in ANSWER_VARIABLES if v not in state.cleared]
            if missing:
                report("agi-prepare", step, f"not cleared before the FastAGI call: {missing}")
            if not state.exit_on_hangup:
                report("agi-prepare", step, "Set(AGIEXITONHANGUP=yes) missing before FastAGI")
            if state.asked is not None:
                report(
                    "agi-failover",
                    step,
                    "FastAGI asked again after an answer: only an empty CALLGATE_DECISION may"
                    " fail over",
                )
            if not _verdict_follows(ext, nxt):
                report("agi-check", step, "the next step is not the AGISTATUS/DECISION check")
            work.append((nxt, _State(frozenset(), exit_on_hangup, agi_action(step), False)))
            continue

        if step.app_lower == "gotoif" and is_unanswered_check(split_gotoif(step.data)[0]):
            _, if_true, if_false = split_gotoif(step.data)
            # No answer: nothing was decided, the path may ask again. An answer: unchanged.
            for label, branch in (
                (if_true, _State(state.cleared, state.exit_on_hangup, None, False)),
                (if_false, state),
            ):
                target = target_index(step, label) if label else nxt
                if isinstance(target, int):
                    work.append((target, branch))
            continue

        if step.app_lower == "gotoif" and split_gotoif(step.data)[0].replace(
            " ", ""
        ) == _NOTICE_OK_CONDITION.replace(" ", ""):
            _, if_true, if_false = split_gotoif(step.data)
            # Given only on the true branch, and only when the notice step itself came before.
            for label, noticed in ((if_true, after_notice), (if_false, False)):
                branch = _State(
                    state.cleared, state.exit_on_hangup, state.asked, state.allowed, False, noticed
                )
                target = target_index(step, label) if label else nxt
                if isinstance(target, int):
                    work.append((target, branch))
            continue

        if step.app_lower == "gotoif":
            condition, if_true, if_false = split_gotoif(step.data)
            kind = verdict_kind(condition)
            has_asked = state.asked is not None
            # A verdict check decides both branches; any other condition keeps what we know.
            true_allowed = {"allow": has_asked, "deny": False}.get(kind or "", state.allowed)
            false_allowed = {"allow": False, "deny": has_asked}.get(kind or "", state.allowed)
            for label, allowed in ((if_true, true_allowed), (if_false, false_allowed)):
                branch = dataclasses.replace(state, allowed=allowed, notice_ran=False)
                target = target_index(step, label) if label else nxt
                if isinstance(target, int):
                    work.append((target, branch))
            continue

        if step.app_lower == "goto":
            target = target_index(step, step.data)
            if isinstance(target, int):
                work.append((target, state))
            continue

        if step.app_lower in ENDING_APPS:
            continue
        work.append((nxt, state))
    return list(findings.values())


def _verdict_follows(ext: Extension, index: int) -> bool:
    """The step at ``index`` is the verdict check, or the failover check and then the verdict."""

    def condition_at(i: int) -> str | None:
        if i >= len(ext.steps) or ext.steps[i].app_lower != "gotoif":
            return None
        return split_gotoif(ext.steps[i].data)[0]

    first = condition_at(index)
    if first is not None and is_unanswered_check(first):
        first = condition_at(index + 1)
    return first is not None and verdict_kind(first) is not None


def is_notice_gosub(step: Step) -> bool:
    """``Gosub(callgate,notice,1)``: the shipped step that gives the notice."""
    args = [a.strip() for a in split_args(step.data)] if step.app_lower == "gosub" else []
    return args[:2] == ["callgate", "notice"] and len(args) == 3 and args[2].startswith("1")


def chanspy_arguments(data: str) -> tuple[str, str]:
    """A ``ChanSpy``'s channel and its option letters (an option's own ``(...)`` left out)."""
    args = split_args(data)
    return args[0], re.sub(r"\([^)]*\)", "", args[1] if len(args) > 1 else "")


def notice_chanspy_problems(data: str) -> list[str]:
    """The notice channel's ``ChanSpy``: barges (``B``) into exactly one call and nothing more."""
    channel, options = chanspy_arguments(data)
    problems: list[str] = []
    if not channel.strip():
        problems.append("notice ChanSpy without a channel (that is: every channel)")
    missing = [o for o in "BqEu" if o not in options]
    if missing:
        problems.append(f"notice ChanSpy options {options!r} lack {''.join(missing)}")
    extra = [o for o in "dwW" if o in options]
    if extra:
        problems.append(f"notice ChanSpy options {options!r} have {''.join(extra)}")
    return problems


def check_notice_includes(plan: Dialplan) -> list[Finding]:
    """Nothing dials into the notice channel's context: its ``spy`` barges."""
    return [
        Finding("notice", where, f"[{context}] includes {NOTICE_CONTEXT}: a phone could barge")
        for context, included, where in plan.includes
        if included.split(",")[0].strip() == NOTICE_CONTEXT
    ]


def chanspy_problems(data: str, asked: str | None) -> list[str]:
    channel, options = chanspy_arguments(data)
    problems: list[str] = []
    if not channel.strip():
        problems.append("ChanSpy without a channel (that is: every channel)")
    if "u" not in options:
        problems.append("ChanSpy without u: the channel would be a name prefix, not exact")
    if "d" in options or "B" in options:
        problems.append(f"ChanSpy options {options!r}: d (DTMF mode switch) or B (barge)")
    if asked == "eavesdrop" and ("w" in options or "W" in options):
        problems.append(f"listen ChanSpy options {options!r} let the listener talk (w/W)")
    if asked == "whisper" and "w" not in options:
        problems.append(f"whisper ChanSpy options {options!r} have no w")
    return problems


# ------------------------------------------------------------------------------ the rules


_AGI_ITEM = re.compile(
    r"^(?P<scheme>h?agi://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\])(?P<port>:[0-9]+)?$"
)


def agi_address_problems(value: str) -> list[str]:
    """What is wrong with a ``CALLGATE_AGI`` value (see ``agi-address``); empty is allowed."""
    if not value:
        return []
    problems: list[str] = []
    for item in value.split("&"):
        match = _AGI_ITEM.match(item)
        if not item:
            problems.append(f"empty item in {value!r}: the addresses after it are never tried")
        elif match is None:
            problems.append(
                f"{item!r} is not agi://HOST[:PORT], hagi://DOMAIN or HOST[:PORT]"
                " (no space, comma or path)"
            )
        elif match["scheme"] == "hagi://" and match["port"]:
            problems.append(f"{item!r}: a port after hagi:// disables the SRV lookup")
    return problems


def check_agi_address(plan: Dialplan) -> list[Finding]:
    if "CALLGATE_AGI" not in plan.globals:
        return []
    where = plan.globals_where.get("CALLGATE_AGI", Where(Path("extensions.conf"), 0))
    return [
        Finding("agi-address", where, problem)
        for problem in agi_address_problems(plan.globals["CALLGATE_AGI"])
    ]


def check_dialplan(plan: Dialplan) -> list[Finding]:
    findings = check_agi_address(plan) + check_notice_includes(plan)
    for ext in plan.extensions:
        findings += check_flow(ext)
        for step in ext.steps:
            findings += _check_step(ext, step)
    for context in sorted(plan.contexts - {"callgate"}):
        clients = tenant_clients(plan, context)
        if len(clients) > 1:
            where = next(s.where for e in plan.in_context(context) for s in e.steps)
            findings.append(
                Finding("tenant", where, f"[{context}] acts for several clients: {sorted(clients)}")
            )
    return findings


def gosub_client(step: Step) -> str | None:
    """The client a ``Gosub(callgate,<sub>,1(<client>,...))`` passes; None for other steps."""
    target = split_args(step.data) if step.app_lower == "gosub" else []
    if not target or target[0].strip() != "callgate":
        return None
    call = re.match(r"^\s*\w+\s*\((?P<args>.*)\)\s*$", ",".join(target[2:]))
    return split_args(call["args"])[0].strip() if call else ""


def tenant_clients(plan: Dialplan, context: str) -> set[str]:
    """The clients a tenant context passes to the ``[callgate]`` subroutines."""
    found = (gosub_client(step) for ext in plan.in_context(context) for step in ext.steps)
    return {client for client in found if client is not None}


_CALLER_ID_READ = re.compile(r"\$\{CALLERID(\(|NUM\b|NAME\b|\})", re.IGNORECASE)


def _check_step(ext: Extension, step: Step) -> list[Finding]:
    findings: list[Finding] = []
    if _CALLER_ID_READ.search(step.data):
        findings.append(Finding("caller-id", step.where, f"reads caller ID: {step.text}"))
    if is_fastagi(step):
        args = split_args(step.data)
        action = agi_action(step)
        if action not in ACTIONS:
            findings.append(Finding("agi-url", step.where, f"not <agi URL>/<action>: {args[0]!r}"))
        if len(args) < 3 or not args[1].strip() or not args[2].strip():
            findings.append(
                Finding("agi-url", step.where, "FastAGI without client and acting extension")
            )
        if action in ("pickup", "eavesdrop", "whisper", "replace") and len(args) < 4:
            findings.append(Finding("agi-url", step.where, f"{action} without the target"))
    if step.app_lower == "set" and "CHANNELS(" in step.data:
        for pattern in re.findall(r"CHANNELS\(([^)]*)\)", step.data):
            if not (pattern.startswith("^") and pattern.endswith("-[0-9a-f]+$")):
                findings.append(
                    Finding(
                        "exact-channel",
                        step.where,
                        f"CHANNELS({pattern}) is not anchored as ^...-[0-9a-f]+$",
                    )
                )
    client = gosub_client(step)
    # [callgate] passes its own ARG1 on; every other caller fixes the client.
    if (
        client is not None
        and ext.context != "callgate"
        and not re.fullmatch(r"[A-Za-z0-9_]+", client)
    ):
        findings.append(
            Finding(
                "tenant",
                step.where,
                f"callgate subroutine without a literal client: {step.text}",
            )
        )
    return findings


def check_features(sections: list[Section], plan: Dialplan | None = None) -> list[Finding]:
    general = [s for s in sections if s.name.lower() == "general"]
    where = general[0].where if general else Where(Path("features.conf"), 0)
    exten = value(general[0], "pickupexten") if general else None
    if exten is None:
        return [
            Finding(
                "pickupexten",
                where,
                "pickupexten not set: Asterisk's default *8 is "
                "picked up by PJSIP before the dialplan runs",
            )
        ]
    findings: list[Finding] = []
    if len(exten) < AST_MAX_EXTENSION:
        findings.append(
            Finding(
                "pickupexten",
                where,
                f"pickupexten {exten!r} is dialable: shorter than "
                f"{AST_MAX_EXTENSION} characters (empty matches an INVITE with no user)",
            )
        )
    if plan is not None and any(e.name == exten for e in plan.extensions):
        findings.append(Finding("pickupexten", where, f"pickupexten {exten!r} is a feature code"))
    return findings


def _classes(text: str | None) -> set[str]:
    return {c.strip().lower() for c in (text or "").split(",") if c.strip()}


def check_manager(sections: list[Section]) -> list[Finding]:
    findings: list[Finding] = []
    for section in sections:
        if section.template:
            continue
        if section.name.lower() == "general":
            if (value(section, "displayconnects") or "yes").lower() != "no":
                findings.append(Finding("manager", section.where, "displayconnects is not no"))
            continue
        too_much_read = _classes(value(section, "read")) - MANAGER_READ
        too_much_write = _classes(value(section, "write")) - MANAGER_WRITE
        if too_much_read:
            findings.append(
                Finding(
                    "manager",
                    section.where,
                    f"[{section.name}] reads {sorted(too_much_read)}: only call is needed",
                )
            )
        if too_much_write:
            findings.append(
                Finding(
                    "manager",
                    section.where,
                    f"[{section.name}] writes "
                    f"{sorted(too_much_write)}: only call,reporting,system needed",
                )
            )
        denies = {d.replace(" ", "") for d in values(section, "deny")}
        permits = {p.replace(" ", "") for p in values(section, "permit")}
        if "0.0.0.0/0.0.0.0" not in denies and "0.0.0.0/0" not in denies:
            findings.append(
                Finding(
                    "manager",
                    section.where,
                    f"[{section.name}] is not denied everywhere first (deny = 0.0.0.0/0.0.0.0)",
                )
            )
        if not permits or not permits <= LOOPBACK_PERMITS:
            findings.append(
                Finding(
                    "manager",
                    section.where,
                    f"[{section.name}] permits {sorted(permits) or 'nothing'}: loopback only",
                )
            )
    return findings


def check_endpoints(sections: list[Section], plan: Dialplan | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for section in sections:
        if section.template or (value(section, "type") or "").lower() != "endpoint":
            continue
        set_vars = dict(v.partition("=")[::2] for v in values(section, "set_var"))
        client = set_vars.get(variables.ENDPOINT_CLIENT, "").strip()
        ext = set_vars.get(variables.ENDPOINT_EXT, "").strip()

        def problem(message: str, s: Section = section) -> None:
            findings.append(Finding("endpoint", s.where, f"[{s.name}] {message}"))

        if not client or not ext:
            problem(f"has no set_var={variables.ENDPOINT_CLIENT} / {variables.ENDPOINT_EXT}")
            continue
        if "-" in section.name or section.name != f"{client}_{ext}":
            problem(f"is not named {client}_{ext} (<client>_<ext>, no '-')")
        for key in ("named_call_group", "named_pickup_group"):
            if value(section, key) != client:
                problem(f"{key} is not {client}")
        context = value(section, "context") or ""
        if plan is not None and context not in plan.contexts:
            problem(f"context {context!r} is not in the dialplan")
        elif plan is not None and tenant_clients(plan, context) != {client}:
            problem(f"context {context} does not act for client {client}")
    return findings


@dataclass(frozen=True, slots=True)
class ConfigSet:
    """The files of an ``asterisk-conf/``-shaped directory."""

    directory: Path

    def read(self, name: str) -> list[Section]:
        return read_conf(self.directory / name, self.directory)


def dialplan_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("extensions*.conf"))


def check_directory(directory: Path) -> list[Finding]:
    """Every rule on every file of ``directory`` (laid out like ``asterisk-conf/``)."""
    conf = ConfigSet(directory)
    sections: list[Section] = []
    # extensions.conf includes the others; the single-tenant file is an alternative to it.
    for path in dialplan_files(directory):
        if path.name == "extensions.conf":
            continue
        sections += read_conf(path, directory)
    plan = read_dialplan(sections)
    findings = check_dialplan(plan)
    if (directory / "extensions.conf").exists():
        # It must read cleanly; a CALLGATE_AGI it sets after its #includes is the one in force.
        complete = read_dialplan(conf.read("extensions.conf"))
        if (
            complete.globals_where.get("CALLGATE_AGI", Where(Path(), 0)).path.name
            == "extensions.conf"
        ):
            findings += check_agi_address(complete)
    findings += check_features(conf.read("features.conf"), plan)
    findings += check_manager(conf.read("manager.conf"))
    findings += check_endpoints(conf.read("pjsip.conf"), plan)
    return findings
