"""What the operator console reads: the permission picture, a change's impact, what is live.

- ``GET  /client/{client_id}/call_control_group/matrix[?actions=a,b]``: every ordered pair of
  the policy's extensions, per action, as legend codes (``callgate.policy.matrix``); 409
  ``matrix_too_large`` past ``console_matrix_max_extensions``.
- ``GET  .../matrix/summary``: group by group, how many pairs each action allows.
- ``GET  .../matrix/extension/{ext}``: one extension's row and column.
- ``POST .../preview``: a candidate document (the PUT body forms), not stored: the decisions
  that would flip, and the live sessions and replacements it would end.

The pictures decide as FastAGI does now: with the client's protected extensions and grants (the
registry's compiled ``Supervision``) at the current time (the supervision service's clock), and
carry them (``supervision``: the protected extensions, the grants active or to come, and
``valid_until``, the next instant a grant starts or ends: the picture holds until then). A
cached picture is keyed by both versions and by that instant, so none is served past it. The
preview judges both sides at one instant: the current document with the supervision in force,
the candidate with the client's settings and grants compiled against it (a grant's groups are
the candidate's).
- ``GET  /client/{client_id}/live`` and ``.../live/events`` (server-sent events): the listen and
  whisper sessions in progress and the replacements in force.
- ``POST /client/{client_id}/live/{pbx}/{uniqueid}/end``: hang up that listener over the
  Manager, audited with ``end_reason`` ``operator`` and ``ended_by`` the token's name.

Every decision comes from ``decide()``. State is read through the few functions at the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from aiohttp import web

from callgate.ami.client import ManagerError
from callgate.ami.service import LiveEnforcement
from callgate.ami.tracker import SpySession
from callgate.config import Settings
from callgate.domain import GrantState, Replacement, live_grants
from callgate.http.api import AMI_STATUS, POLICIES, REPLACE, SUPERVISION, Api, principal
from callgate.http.auth import Access
from callgate.http.body import is_json_media_type, unsupported_media_type
from callgate.http.errors import ApiError, JsonDetail, not_found, unprocessable
from callgate.http.openapi import JsonObject, error_response, json_response, ref
from callgate.http.policy_routes import BASE, POLICY_WRITES
from callgate.http.query import QueryReader
from callgate.http.replace_routes import replacement_json
from callgate.http.supervision_routes import grant_json
from callgate.pbx import ChannelRef, PbxName
from callgate.policy import Action, PolicyDocument, compile_policy, decide, is_valid_extension
from callgate.policy.matrix import (
    ACTIONS,
    SummaryTooLargeError,
    extension_view,
    extensions_of,
    group_summary,
    impact,
    permission_matrix,
)
from callgate.policy.supervision import compile_supervision
from callgate.policy.syntax import EXTENSION_RULE, PBX_NAME_PATTERN, UNIQUEID_PATTERN
from callgate.registry import ClientPolicy

_TAG = "console"


@dataclass(frozen=True, slots=True)
class InsightConfig:
    """The console routes' settings (set by daemon.py as ``app[INSIGHT_CONFIG]``)."""

    matrix_max_extensions: int = 300
    live_max_streams: int = 4
    live_poll_seconds: float = 0.25
    live_heartbeat_seconds: float = 15.0


def insight_config(settings: Settings) -> InsightConfig:
    return InsightConfig(
        matrix_max_extensions=settings.console_matrix_max_extensions,
        live_max_streams=settings.console_live_max_streams,
        live_poll_seconds=settings.console_live_poll_seconds,
        live_heartbeat_seconds=settings.console_live_heartbeat_seconds,
    )


INSIGHT_CONFIG = web.AppKey("insight_config", InsightConfig)
LIVE_ENFORCEMENT = web.AppKey("live_enforcement", LiveEnforcement)
_STREAMS = web.AppKey("live_streams", dict[str, int])
_CLOSING = web.AppKey("live_closing", asyncio.Event)
_PictureKey = tuple[str, int, int, int, datetime | None, str]
_PICTURES = web.AppKey("pictures", dict[_PictureKey, bytes])
_MAKING = web.AppKey("pictures_in_the_making", dict[_PictureKey, "asyncio.Future[bytes]"])
PICTURE_WORKER = web.AppKey("picture_worker", ThreadPoolExecutor)
"""The one thread the console's pictures and previews are computed on (never the loop)."""
_T = TypeVar("_T")


# --- reading state (the few places that know where it lives) -------------------------------


def _config(request: web.Request) -> InsightConfig:
    return request.app.get(INSIGHT_CONFIG, InsightConfig())


def _policy(request: web.Request, client_id: str) -> ClientPolicy:
    return request.app[POLICIES].in_force(client_id)


def _now(request: web.Request) -> datetime:
    """The instant grants are judged at: the supervision service's clock (a test injects one)."""
    return request.app[SUPERVISION].now()


def _live(request: web.Request) -> LiveEnforcement | None:
    return request.app.get(LIVE_ENFORCEMENT)


def _sessions(request: web.Request, client_id: str) -> list[SpySession]:
    live = _live(request)
    if live is None:
        return []
    return sorted((s for s in live.sessions() if s.client_id == client_id), key=lambda s: s.started)


async def _replacements(request: web.Request, client_id: str) -> Sequence[Replacement]:
    return await request.app[REPLACE].replacements(client_id)


async def _candidate(request: web.Request) -> PolicyDocument:
    """The body as PUT reads it (same forms, same 4xx answers), validated, never stored."""
    header = request.headers.get("Content-Type")
    if not is_json_media_type(header):
        raise unsupported_media_type(header)
    document, _ = await request.app[POLICY_WRITES].preparer.prepare(await request.read())
    return document


# --- handlers ----------------------------------------------------------------------------------


def _actions(request: web.Request) -> list[str]:
    query = QueryReader(request.query)
    text = query.text("actions")
    chosen = list(ACTIONS) if text is None else [a for a in text.split(",") if a]
    unknown = [a for a in chosen if a not in ACTIONS]
    if unknown or not chosen:
        query.add_error("actions", f"a comma-separated list of {', '.join(ACTIONS)}")
    query.raise_if_invalid("The picture's actions are not valid.")
    return list(dict.fromkeys(chosen))


def _too_large(code: str, message: str, **facts: int) -> ApiError:
    return ApiError(409, code, message, [dict(facts)])


_CACHE_SIZE = 16


async def _off_loop(request: web.Request, work: Callable[[], _T]) -> _T:
    """``work()`` on the console's one worker thread, never on the event loop.

    A picture of the largest document costs tens of milliseconds of pure Python: on the loop it
    would hold every client's FastAGI answers that long. On the worker the loop takes the GIL
    back within the interpreter's switch interval (5 ms), and one thread keeps the console to
    one core's share however many tabs ask at once. (Sharing the compiled policy with the loop
    is safe: its lazily made tables are published whole, ``policy/compiled.py``.)
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[PICTURE_WORKER], work)


def _keep(cache: dict[_PictureKey, bytes], key: _PictureKey, body: bytes) -> None:
    cache.pop(key, None)
    while len(cache) >= _CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = body


def _supervision_json(
    policy: ClientPolicy, now: datetime, valid_until: datetime | None
) -> dict[str, object]:
    """What the picture was decided with beside the document (the ``PictureSupervision``)."""
    shown = sorted(
        (r for r in policy.grants if r.state(now) is not GrantState.ENDED),
        key=lambda r: (r.grant.from_, r.id),
    )
    return {
        "version": policy.supervision_version,
        "protected_extensions": list(policy.settings.protected_extensions),
        "grants": [grant_json(record, now) for record in shown],
        "valid_until": None if valid_until is None else valid_until.isoformat(),
    }


async def _cached(
    request: web.Request,
    policy: ClientPolicy,
    now: datetime,
    kind: str,
    make: Callable[[], dict[str, object]],
) -> web.Response:
    """A picture is fixed by the policy and supervision versions and, with grants, by the span
    between two instants a grant starts or ends (in one span every grant is as active as in any
    other instant of it): the last few are kept, encoded, per app, keyed by all three, so a
    picture is never served past the instant it changes at.

    Made (and encoded) off the loop; requests for one picture while it is being made wait for
    that one making, and a request that goes away leaves it to finish into the cache.
    """
    app = request.app
    supervision = policy.supervision
    valid_until = None if supervision is None else supervision.next_change_after(now)
    key = (
        policy.client_id,
        policy.version,
        policy.supervision_version,
        id(policy.compiled),
        valid_until,
        kind,
    )
    body = app[_PICTURES].get(key)
    if body is not None:
        _keep(app[_PICTURES], key, body)  # most recently used last
        return web.Response(body=body, content_type="application/json")
    making = app[_MAKING]
    future = making.get(key)
    if future is None:

        def work() -> bytes:
            body = {
                "policy_version": policy.version,
                "supervision": _supervision_json(policy, now, valid_until),
                **make(),
            }
            return json.dumps(body).encode()

        future = making[key] = asyncio.ensure_future(_off_loop(request, work))

        def done(made: asyncio.Future[bytes]) -> None:
            del making[key]
            if not made.cancelled() and made.exception() is None:
                _keep(app[_PICTURES], key, made.result())

        future.add_done_callback(done)
    body = await asyncio.shield(future)
    return web.Response(body=body, content_type="application/json")


async def get_matrix(request: web.Request) -> web.Response:
    client_id = request.match_info["client_id"]
    actions = _actions(request)
    policy = _policy(request, client_id)
    now = _now(request)
    supervision = policy.supervision
    limit = _config(request).matrix_max_extensions

    def make() -> dict[str, object]:
        count = len(extensions_of(policy.document, supervision, now))
        if count > limit:
            raise _too_large(
                "matrix_too_large",
                f"The policy names {count} extensions, more than the {limit} one matrix shows:"
                " ask for the group summary (matrix/summary) or one extension"
                " (matrix/extension/{ext}).",
                extensions=count,
                limit=limit,
            )
        return permission_matrix(
            policy.document, policy.compiled, actions, now=now, supervision=supervision
        )

    return await _cached(request, policy, now, f"matrix:{limit}:" + ",".join(actions), make)


async def get_summary(request: web.Request) -> web.Response:
    client_id = request.match_info["client_id"]
    actions = _actions(request)
    policy = _policy(request, client_id)
    now = _now(request)

    def make() -> dict[str, object]:
        return group_summary(
            policy.document, policy.compiled, actions, now=now, supervision=policy.supervision
        )

    try:
        return await _cached(request, policy, now, "summary:" + ",".join(actions), make)
    except SummaryTooLargeError as exc:
        raise _too_large(
            "summary_too_large",
            f"{exc.classes} kinds of extension are too many to summarize: ask for one"
            " extension (matrix/extension/{ext}).",
            kinds=exc.classes,
        ) from None


async def get_extension(request: web.Request) -> web.Response:
    client_id = request.match_info["client_id"]
    ext = request.match_info["ext"]
    if not is_valid_extension(ext):
        raise unprocessable(
            "invalid_extension",
            f"An extension is {EXTENSION_RULE}.",
            [{"loc": ["path", "ext"], "message": "not a valid extension"}],
        )
    actions = _actions(request)
    policy = _policy(request, client_id)
    now = _now(request)

    def make() -> dict[str, object]:
        return extension_view(
            policy.document, policy.compiled, ext, actions, now=now, supervision=policy.supervision
        )

    return await _cached(request, policy, now, f"extension:{ext}:" + ",".join(actions), make)


def session_json(session: SpySession) -> dict[str, object]:
    grant = session.grant
    return {
        "pbx": session.pbx,
        "uniqueid": session.uniqueid,
        "action": str(grant.action),
        "listener": grant.ext,
        "target": grant.target,
        "since": session.started.isoformat(),
        "policy_version": grant.policy_version,
        "channel": session.spyer_channel,
        "target_channel": session.spyee_channel,
        "ending": session.revocation is not None or session.ended_by is not None,
    }


async def preview(request: web.Request) -> web.Response:
    client_id = request.match_info["client_id"]
    candidate = await _candidate(request)
    current = _policy(request, client_id)
    now = _now(request)
    # Read on the loop, where they change; only the decisions are made on the worker.
    sessions = [(session_json(s), s.grant) for s in _sessions(request, client_id)]
    replacements = [(replacement_json(r), r) for r in await _replacements(request, client_id)]

    def work() -> dict[str, object]:
        compiled = compile_policy(candidate)
        # What the follower would install with the candidate: the same settings and grants,
        # their groups resolved against the candidate's.
        supervision = compile_supervision(current.settings, live_grants(current.grants), candidate)
        try:
            changes = impact(
                current.document,
                current.compiled,
                candidate,
                compiled,
                now=now,
                old_supervision=current.supervision,
                new_supervision=supervision,
            )
        except SummaryTooLargeError as exc:
            raise _too_large(
                "preview_too_large",
                f"{exc.classes} kinds of extension are too many to compare pair by pair.",
                kinds=exc.classes,
            ) from None

        def denied(action: str, ext: str, target: str) -> str | None:
            d = decide(compiled, action, ext, target, now=now, supervision=supervision)
            return None if d.allowed else str(d.reason)

        ended = [
            {**shown, "reason": reason}
            for shown, grant in sessions
            if (reason := denied(grant.action, grant.ext, grant.target)) is not None
        ]
        undone = [
            {**shown, "reason": reason}
            for shown, r in replacements
            if (reason := denied(Action.REPLACE, r.from_ext, r.to_ext)) is not None
        ]
        return {
            "base_version": current.version,
            "supervision_version": current.supervision_version,
            **changes.to_json(),
            "sessions_ended": ended,
            "replacements_ended": undone,
        }

    return web.json_response(await _off_loop(request, work))


async def _live_body(request: web.Request, client_id: str) -> dict[str, object]:
    return {
        "policy_version": _policy(request, client_id).version,
        "ami": str(request.app[AMI_STATUS]()),
        "sessions": [session_json(s) for s in _sessions(request, client_id)],
        "replacements": [replacement_json(r) for r in await _replacements(request, client_id)],
    }


async def get_live(request: web.Request) -> web.Response:
    return web.json_response(await _live_body(request, request.match_info["client_id"]))


async def live_events(request: web.Request) -> web.StreamResponse:
    """A snapshot now and on every change; a comment line when quiet (proxies keep it open)."""
    client_id = request.match_info["client_id"]
    config = _config(request)
    streams = request.app[_STREAMS]
    if streams.get(client_id, 0) >= config.live_max_streams:
        raise ApiError(
            429,
            "too_many_streams",
            f"Client {client_id} already holds {config.live_max_streams} live streams open.",
            headers=[("Retry-After", "5")],
        )
    streams[client_id] = streams.get(client_id, 0) + 1
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        closing = request.app[_CLOSING]
        last = ""
        quiet = 0.0
        with contextlib.suppress(ConnectionResetError):
            while not closing.is_set():
                snapshot = json.dumps(await _live_body(request, client_id), sort_keys=True)
                if snapshot != last:
                    await response.write(f"event: snapshot\ndata: {snapshot}\n\n".encode())
                    last, quiet = snapshot, 0.0
                elif quiet >= config.live_heartbeat_seconds:
                    await response.write(b": keep-alive\n\n")
                    quiet = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), config.live_poll_seconds)
                quiet += config.live_poll_seconds
        return response
    finally:
        streams[client_id] -= 1
        if not streams[client_id]:
            del streams[client_id]


_PBX_RE = re.compile(PBX_NAME_PATTERN)
_UNIQUEID_RE = re.compile(UNIQUEID_PATTERN)


async def end_session(request: web.Request) -> web.Response:
    client_id = request.match_info["client_id"]
    pbx, uniqueid = request.match_info["pbx"], request.match_info["uniqueid"]
    bad: list[JsonDetail] = [
        {"loc": ["path", name], "message": "not a valid " + name}
        for name, value, pattern in (("pbx", pbx, _PBX_RE), ("uniqueid", uniqueid, _UNIQUEID_RE))
        if pattern.fullmatch(value) is None
    ]
    if bad:
        raise unprocessable("invalid_session", "No session can have that name.", bad)
    live = _live(request)
    spyer = ChannelRef(PbxName(pbx), uniqueid)
    # Without a Manager no session is ever tracked, so there is none to end (404, not 503).
    session = live.session(spyer) if live is not None else None
    if live is None or session is None or session.client_id != client_id:
        # Another client's session is answered like none: a token learns nothing beyond its own.
        raise not_found("no_such_session", f"No listen/whisper session {pbx}/{uniqueid}.")
    try:
        ended = await live.end_session(spyer, principal(request).name)
    except ManagerError as exc:
        raise ApiError(
            503, "ami_unavailable", f"The Manager of PBX {pbx} could not hang up: {exc}"
        ) from None
    if ended is None:
        raise not_found("no_such_session", f"No listen/whisper session {pbx}/{uniqueid}.")
    if not ended:
        raise ApiError(503, "ami_unavailable", "That listener's channel cannot be hung up by name.")
    return web.Response(status=204)


# --- lifecycle and OpenAPI ---------------------------------------------------------------------


async def _close_streams(app: web.Application) -> None:
    app[_CLOSING].set()


async def _stop_worker(app: web.Application) -> None:
    app[PICTURE_WORKER].shutdown(wait=False, cancel_futures=True)


_CELLS: JsonObject = {
    "type": "object",
    "description": "action -> one string per row: `width` alphabet digits per column",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
_LEGEND: JsonObject = {
    "type": "array",
    "description": "the distinct cells; a cell's digits are its index here (base 64)",
    "items": {
        "type": "object",
        "required": ["allowed", "reason", "group"],
        "properties": {
            "allowed": {"type": "boolean"},
            "reason": {
                "type": "string",
                "description": "the decision's reason code (`protected`: the target is a"
                " protected extension; `temporary_grant`: allowed by a grant alone)",
            },
            "group": {"type": ["string", "null"], "description": "the group that granted it"},
            "grant_ids": {
                "type": "array",
                "items": {"type": "string"},
                "description": "only when grants allowed it (reason `temporary_grant`): the"
                " grant the decision names, the one lasting longest",
            },
            "until": {
                "type": "string",
                "format": "date-time",
                "description": "with `grant_ids`: when that grant ends (the cell is then denied"
                " unless another right holds)",
            },
        },
    },
}
_PICTURE_SUPERVISION: JsonObject = {
    "type": "object",
    "description": "What the picture was decided with beside the document, at the current time",
    "required": ["version", "protected_extensions", "grants", "valid_until"],
    "properties": {
        "version": {
            "type": "integer",
            "minimum": 0,
            "description": "the settings-and-grants version in force (0: none stored)",
        },
        "protected_extensions": {
            "type": "array",
            "items": {"type": "string"},
            "description": "nobody may listen or whisper to them (cells `protected`)",
        },
        "grants": {
            "type": "array",
            "items": ref("GrantRecord"),
            "description": "the grants active or to come (state `active` or `scheduled`),"
            " by `from` then id",
        },
        "valid_until": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "the next instant a grant starts or ends: the picture holds until"
            " then (null: no such instant is left)",
        },
    },
}
_ACTION_LIST: JsonObject = {"type": "array", "items": {"type": "string", "enum": list(ACTIONS)}}
_STRINGS: JsonObject = {"type": "array", "items": {"type": "string"}}
_MATRIX: JsonObject = {
    "type": "object",
    "required": [
        "policy_version",
        "supervision",
        "extensions",
        "actions",
        "legend",
        "width",
        "alphabet",
    ],
    "properties": {
        "policy_version": {"type": "integer", "minimum": 0},
        "supervision": ref("PictureSupervision"),
        "extensions": {
            **_STRINGS,
            "description": "the document's extensions and those the supervision names"
            " (protected, and the holders and extensions of the grants not over), sorted",
        },
        "actions": _ACTION_LIST,
        "legend": _LEGEND,
        "width": {"type": "integer", "minimum": 1},
        "alphabet": {"type": "string"},
        "cells": _CELLS,
    },
}
_COUNTS: JsonObject = {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}
_SUMMARY: JsonObject = {
    "type": "object",
    "required": ["policy_version", "supervision", "groups", "actions", "pairs", "allowed"],
    "properties": {
        "policy_version": {"type": "integer", "minimum": 0},
        "supervision": ref("PictureSupervision"),
        "groups": _STRINGS,
        "actions": _ACTION_LIST,
        "pairs": {**_COUNTS, "description": "pairs[i][j]: pairs (a in i, b in j, a != b)"},
        "allowed": {
            "type": "object",
            "description": "action -> allowed[i][j]: how many of those pairs it allows",
            "additionalProperties": _COUNTS,
        },
    },
}
_EXTENSION_VIEW: JsonObject = {
    "type": "object",
    "required": [
        "policy_version",
        "supervision",
        "extension",
        "known",
        "others",
        "legend",
        "row",
        "column",
    ],
    "properties": {
        "policy_version": {"type": "integer", "minimum": 0},
        "supervision": ref("PictureSupervision"),
        "extension": {"type": "string"},
        "known": {
            "type": "boolean",
            "description": "the policy, a protection or a grant not over names it",
        },
        "others": _STRINGS,
        "actions": _ACTION_LIST,
        "legend": _LEGEND,
        "width": {"type": "integer", "minimum": 1},
        "alphabet": {"type": "string"},
        "row": {"type": "object", "description": "action -> what it may do to each of others"},
        "column": {"type": "object", "description": "action -> what each of others may do to it"},
    },
}
_LIVE_SESSION: JsonObject = {
    "type": "object",
    "required": ["pbx", "uniqueid", "action", "listener", "target", "since", "policy_version"],
    "properties": {
        "pbx": {"type": "string"},
        "uniqueid": {"type": "string", "description": "the listener's channel uniqueid"},
        "action": {"type": "string", "enum": ["eavesdrop", "whisper"]},
        "listener": {"type": "string"},
        "target": {"type": "string"},
        "since": {"type": "string", "format": "date-time"},
        "policy_version": {"type": "integer", "description": "the version that allowed it"},
        "channel": {"type": "string"},
        "target_channel": {"type": ["string", "null"]},
        "ending": {"type": "boolean", "description": "a Hangup of it is on its way"},
        "reason": {
            "type": "string",
            "description": "preview: why the candidate, with the client's protected extensions"
            " and grants at the current time, denies it",
        },
    },
}
_LIVE: JsonObject = {
    "type": "object",
    "required": ["policy_version", "ami", "sessions", "replacements"],
    "properties": {
        "policy_version": {"type": "integer", "minimum": 0},
        "ami": {"type": "string"},
        "sessions": {"type": "array", "items": ref("LiveSession")},
        "replacements": {"type": "array", "items": ref("Replacement")},
    },
}
_CHANGE_SIDE: JsonObject = {
    "type": "object",
    "properties": {
        "allowed": {"type": "boolean"},
        "reason": {"type": "string"},
        "grant_ids": {
            "type": "array",
            "items": {"type": "string"},
            "description": "only when grants allowed it (reason `temporary_grant`)",
        },
    },
}
_PREVIEW: JsonObject = {
    "type": "object",
    "required": [
        "base_version",
        "supervision_version",
        "became_allowed",
        "became_denied",
        "changes",
        "truncated",
        "sessions_ended",
        "replacements_ended",
    ],
    "properties": {
        "base_version": {"type": "integer", "description": "the version compared with"},
        "supervision_version": {
            "type": "integer",
            "description": "the settings-and-grants version both sides were judged with (the"
            " candidate's side: those settings and grants, their groups the candidate's)",
        },
        "became_allowed": {"type": "object", "additionalProperties": {"type": "integer"}},
        "became_denied": {"type": "object", "additionalProperties": {"type": "integer"}},
        "changes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "action": {"type": "string"},
                    "ext": {"type": "string"},
                    "target": {"type": "string"},
                    "before": _CHANGE_SIDE,
                    "after": _CHANGE_SIDE,
                },
            },
        },
        "truncated": {"type": "boolean", "description": "more changes than listed (500)"},
        "sessions_ended": {"type": "array", "items": ref("LiveSession")},
        "replacements_ended": {"type": "array", "items": {"type": "object"}},
    },
}
_ACTIONS_PARAM: JsonObject = {
    "name": "actions",
    "in": "query",
    "required": False,
    "description": f"comma-separated, of {', '.join(ACTIONS)} (default: all)",
    "schema": {"type": "string"},
}


def register(api: Api) -> None:
    api.app[_STREAMS] = {}
    api.app[_CLOSING] = asyncio.Event()
    api.app[_PICTURES] = {}
    api.app[_MAKING] = {}
    api.app[PICTURE_WORKER] = ThreadPoolExecutor(1, thread_name_prefix="callgate-console")
    api.app.on_shutdown.append(_close_streams)
    api.app.on_cleanup.append(_stop_worker)
    spec = api.openapi
    spec.add_tag(_TAG, "The operator console's views: permission picture, impact, live")
    spec.add_path_param("pbx", {"type": "string", "pattern": _PBX_RE.pattern})
    spec.add_path_param("uniqueid", {"type": "string", "pattern": _UNIQUEID_RE.pattern})
    spec.add_schema("PictureSupervision", _PICTURE_SUPERVISION)
    spec.add_schema("PermissionMatrix", _MATRIX)
    spec.add_schema("GroupSummary", _SUMMARY)
    spec.add_schema("ExtensionView", _EXTENSION_VIEW)
    spec.add_schema("LiveSession", _LIVE_SESSION)
    spec.add_schema("Live", _LIVE)
    spec.add_schema("Preview", _PREVIEW)
    bad_actions = error_response(400, "invalid_query: actions is not a list of picture actions")
    api.route(
        "GET",
        BASE + "matrix",
        get_matrix,
        access=Access.CLIENT,
        operation={
            "operationId": "getPermissionMatrix",
            "summary": "What each extension may do to each other one, per action",
            "tags": [_TAG],
            "parameters": [_ACTIONS_PARAM],
            "responses": {
                "200": json_response("The picture", ref("PermissionMatrix")),
                "400": bad_actions,
                "409": error_response(409, "matrix_too_large: use the summary or one extension"),
            },
        },
    )
    api.route(
        "GET",
        BASE + "matrix/summary",
        get_summary,
        access=Access.CLIENT,
        operation={
            "operationId": "getPermissionSummary",
            "summary": "Group by group: how many pairs each action allows",
            "tags": [_TAG],
            "parameters": [_ACTIONS_PARAM],
            "responses": {
                "200": json_response("The summary", ref("GroupSummary")),
                "400": bad_actions,
                "409": error_response(409, "summary_too_large: use one extension"),
            },
        },
    )
    api.route(
        "GET",
        BASE + "matrix/extension/{ext}",
        get_extension,
        access=Access.CLIENT,
        operation={
            "operationId": "getExtensionPermissions",
            "summary": "One extension's row (what it may do) and column (who may do what to it)",
            "tags": [_TAG],
            "parameters": [_ACTIONS_PARAM],
            "responses": {
                "200": json_response("Its row and column", ref("ExtensionView")),
                "400": bad_actions,
                "422": error_response(422, "invalid_extension"),
            },
        },
    )
    api.route(
        "POST",
        BASE + "preview",
        preview,
        access=Access.CLIENT,
        operation={
            "operationId": "previewPolicy",
            "summary": "What a candidate document would change (nothing is stored)",
            "tags": [_TAG],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("PolicyBody")}},
            },
            "responses": {
                "200": json_response("The impact", ref("Preview")),
                "400": error_response(400),
                "409": error_response(409, "preview_too_large"),
                "413": error_response(413),
                "422": error_response(422, "invalid_policy: details locate each error"),
            },
        },
    )
    api.route(
        "GET",
        "/client/{client_id}/live",
        get_live,
        access=Access.CLIENT,
        operation={
            "operationId": "getLive",
            "summary": "Listen/whisper sessions in progress and replacements in force",
            "tags": [_TAG],
            "responses": {"200": json_response("What is live", ref("Live"))},
        },
    )
    api.route(
        "GET",
        "/client/{client_id}/live/events",
        live_events,
        access=Access.CLIENT,
        operation={
            "operationId": "streamLive",
            "summary": "Server-sent events: a `snapshot` (the Live body) now and on each change",
            "tags": [_TAG],
            "responses": {
                "200": {
                    "description": "text/event-stream; `: keep-alive` comments when quiet",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "429": error_response(429, "too_many_streams: the client's streams are open"),
            },
        },
    )
    api.route(
        "POST",
        "/client/{client_id}/live/{pbx}/{uniqueid}/end",
        end_session,
        access=Access.CLIENT,
        operation={
            "operationId": "endLiveSession",
            "summary": "Hang up that listener (audited: end_reason operator, ended_by)",
            "tags": [_TAG],
            "responses": {
                "204": {"description": "Hung up"},
                "404": error_response(404, "no_such_session"),
                "422": error_response(422, "invalid_session: not a pbx/uniqueid"),
                "503": error_response(503, "ami_unavailable: its PBX's Manager cannot hang up now"),
            },
        },
    )
