"""The ``callgate`` command: ``serve`` runs the daemon, ``check`` answers one decision,
``check-conf`` checks an Asterisk configuration directory."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from callgate import __version__
from callgate.policy import (
    PolicyDocument,
    PolicyValidationError,
    compile_policy,
    decide,
    parse_document,
)

if TYPE_CHECKING:
    from callgate.domain import StoredSupervision


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the FastAGI, HTTP and Manager services",
        description=(
            "Run callgate. Every option can also be set as CALLGATE_<NAME> in the environment or"
            " in a TOML file (--config / CALLGATE_CONFIG); flags win over the environment, the"
            " environment over the file. The admin token comes from CALLGATE_ADMIN_TOKEN only."
        ),
    )
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--agi", metavar="HOST:PORT", help="FastAGI listener (default 127.0.0.1:4573)")
    p.add_argument("--http", metavar="HOST:PORT", help="HTTP API listener (default 127.0.0.1:8080)")
    p.add_argument(
        "--db",
        metavar="URL_OR_PATH",
        help="a SQLite path (default in the data dir) or a postgresql:// URL",
    )
    p.add_argument("--data-dir", type=Path, help="data directory (default ~/.local/share/callgate)")
    p.add_argument("--ami", metavar="HOST:PORT", help="Asterisk Manager address")
    p.add_argument("--ami-user", help="Asterisk Manager user")
    p.add_argument(
        "--ami-secret",
        help="Asterisk Manager secret (prefer CALLGATE_AMI_SECRET: flags show in `ps`)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")


def _run_serve(args: argparse.Namespace) -> int:
    from callgate.config import load_settings
    from callgate.daemon import configure_logging, run

    overrides = {
        "agi": args.agi,
        "http": args.http,
        "db": args.db,
        "data_dir": args.data_dir,
        "ami": args.ami,
        "ami_user": args.ami_user,
        "ami_secret": args.ami_secret,
        "log_level": args.log_level,
    }
    try:
        settings = load_settings(overrides, args.config)
    except (ValueError, ValidationError) as exc:
        print(f"callgate: bad configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    run_event_loop(run(settings))
    return 0


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's loop.

    The loop runs outside the ``except ImportError``: run inside it, every exception the daemon
    later logs would carry "During handling of the above exception... No module named
    'uvloop'" as its context."""
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(main)


def _check_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="answer one decision, as the FastAGI service would",
        description=(
            "Print the decision for ACTION by EXT on TARGET (omit TARGET for the group forms) as"
            ' one JSON line {"decision", "reason", "targets"}; exit 0, a denial included. An'
            " invalid document prints its located errors and exits 2."
        ),
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--policy", type=Path, metavar="FILE", help="a policy document (JSON)")
    source.add_argument(
        "--db",
        metavar="URL_OR_PATH",
        help="the store to read --client's policy from (default: CALLGATE_DB, else the data dir's)",
    )
    p.add_argument("--client", metavar="ID", help="the client whose stored policy decides")
    p.add_argument("action", metavar="ACTION", help="pickup, eavesdrop, whisper, replace, restore")
    p.add_argument("ext", metavar="EXT", help="the extension the phone acts as")
    p.add_argument("target", metavar="TARGET", nargs="?", help="the target extension")


_MAX_POLICY_FILE = 16 * 1024 * 1024


def _run_check(args: argparse.Namespace) -> int:
    if args.policy is None:
        return _run_check_stored(args)
    if args.client is not None:
        print("callgate check: --client goes with --db, not with --policy", file=sys.stderr)
        return 2
    path: Path = args.policy
    try:
        with path.open("rb") as file:
            text = file.read(_MAX_POLICY_FILE + 1)
    except OSError as exc:
        print(f"callgate check: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if len(text) > _MAX_POLICY_FILE:
        print(f"callgate check: {path} is larger than 16 MiB", file=sys.stderr)
        return 2
    try:
        document = parse_document(text)
    except PolicyValidationError as exc:
        if exc.malformed_json:
            print(f"callgate check: {path}: {exc.errors[0].message}", file=sys.stderr)
        else:
            _print_invalid(str(path), exc)
        return 2
    return _print_decision(document, args)


def _run_check_stored(args: argparse.Namespace) -> int:
    """Decide by the client's policy in the store, as the running service would."""
    from callgate.config import load_settings
    from callgate.policy import is_valid_client_id
    from callgate.store import StoreError

    if args.client is None:
        print("callgate check: give --policy FILE, or --client ID (with --db)", file=sys.stderr)
        return 2
    if not is_valid_client_id(args.client):
        print(f"callgate check: {args.client!r} is not a valid client id", file=sys.stderr)
        return 2
    try:
        target = args.db or load_settings({}).db_target
    except (ValueError, ValidationError) as exc:
        print(f"callgate check: bad configuration: {exc}", file=sys.stderr)
        return 2
    if "://" not in target and not Path(target).is_file():
        print(f"callgate check: no store at {target}", file=sys.stderr)
        return 2
    try:
        document, version, supervision = asyncio.run(_stored_document(target, args.client))
    except StoreError as exc:
        print(f"callgate check: {target}: {exc}", file=sys.stderr)
        return 2
    print(
        f"callgate check: client {args.client!r}, policy version {version}"
        f"{f', settings and grants version {supervision.version}' if supervision else ''}",
        file=sys.stderr,
    )
    return _print_decision(document, args, supervision)


async def _stored_document(
    target: str, client_id: str
) -> tuple[PolicyDocument, int, StoredSupervision | None]:
    """The client's document, its version, and its settings and grants (None: none stored)."""
    from callgate.store import open_store

    store = await open_store(target)
    try:
        stored = await store.policies.current(client_id)
        supervision = await store.supervision.current(client_id)
    finally:
        await store.close()
    if stored is None:
        return PolicyDocument(), 0, supervision
    return stored.document, stored.version, supervision


def _print_invalid(source: str, error: PolicyValidationError) -> None:
    """Human lines on stderr; the same errors as one JSON line on stdout, for scripts."""
    for issue in error.errors:
        print(f"{source}: {issue}", file=sys.stderr)
    print(json.dumps({"errors": [issue.to_json() for issue in error.errors]}))


def _print_decision(
    document: PolicyDocument,
    args: argparse.Namespace,
    stored: StoredSupervision | None = None,
) -> int:
    """Decide as the service would now: with the client's protected extensions and grants."""
    from callgate.policy.supervision import compile_supervision

    supervision = None
    if stored is not None:
        supervision = compile_supervision(stored.settings, stored.live_grants(), document)
    decision = decide(
        compile_policy(document),
        args.action,
        args.ext,
        args.target,
        now=datetime.now(UTC),
        supervision=supervision,
    )
    print(json.dumps(decision.to_json()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"callgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _check_parser(sub)
    _check_conf_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    match args.command:
        case "serve":
            return _run_serve(args)
        case "check":
            return _run_check(args)
        case "check-conf":
            return _run_check_conf(args)
    return 2  # unreachable: argparse rejects unknown commands


_SHIPPED_CONF = Path("asterisk-conf")


def _check_conf_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-conf",
        help="check an Asterisk configuration directory against callgate's rules",
        description=(
            "Read DIR (laid out like the shipped asterisk-conf/: extensions*.conf, features.conf,"
            " manager.conf, pjsip.conf) as Asterisk does and check the rules the dialplan, the"
            " pickup feature, the Manager user and the phones must keep. Prints one line per"
            " finding, each naming its rule, then the count; exits 0 without findings, 1 with"
            " some, 2 if DIR cannot be read as Asterisk configuration."
        ),
    )
    p.add_argument(
        "directory",
        metavar="DIR",
        type=Path,
        nargs="?",
        help="the directory to check (default: ./asterisk-conf, if there is one)",
    )


def _run_check_conf(args: argparse.Namespace) -> int:
    from callgate.asterisk_conf import ConfError, check_directory

    directory: Path | None = args.directory
    if directory is None:
        # An installed package carries no asterisk-conf/: only a checkout (or a copy) has one.
        if not _SHIPPED_CONF.is_dir():
            print("callgate check-conf: give DIR (there is no ./asterisk-conf)", file=sys.stderr)
            return 2
        directory = _SHIPPED_CONF
    if not directory.is_dir():
        print(f"callgate check-conf: {directory} is not a directory", file=sys.stderr)
        return 2
    try:
        findings = check_directory(directory)
    except ConfError as exc:
        print(f"callgate check-conf: {exc}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    print(f"{len(findings)} finding(s) in {directory}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
