"""One settings object for the whole daemon.

Sources, strongest first: command-line flags (passed in as ``overrides``), the environment
(``CALLGATE_<NAME>``), an optional TOML file (``--config`` or ``CALLGATE_CONFIG``), then the
defaults below. The admin token is read from the environment only: a flag would show it in the
process list, and a config file is too easy to leave world-readable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "callgate"


def split_host_port(value: str, *, default_port: int) -> tuple[str, int]:
    """``"127.0.0.1:4573"``, ``"[::1]:4573"`` or ``"host"`` -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if not host:
        raise ValueError(f"{value!r}: expected HOST:PORT")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    return host, int(port)


PBX_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
"""What a PBX may be named (a ``[pbx.<name>]`` table, the dialplan's ``CALLGATE_PBX``)."""

SHORTHAND_PBX: Final = "default"
"""The name of the one PBX that ``--ami`` configures (``callgate.pbx.DEFAULT_PBX``)."""


class PbxSettings(BaseModel):
    """One Asterisk server's Manager connection: a ``[pbx.<name>]`` table of the TOML file.

    ``ami_user`` and ``ami_secret`` default to the top-level ``ami_user``/``ami_secret`` (one
    Manager account on every server, its secret in ``CALLGATE_AMI_SECRET``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ami: str
    ami_user: str | None = None
    ami_secret: SecretStr | None = None

    @field_validator("ami")
    @classmethod
    def _check_ami(cls, value: str) -> str:
        split_host_port(value, default_port=5038)
        return value


@dataclass(frozen=True, slots=True)
class PbxManager:
    """A PBX's Manager connection as the daemon makes it: address and credentials resolved."""

    name: str
    host: str
    port: int
    user: str
    secret: SecretStr


class Settings(BaseSettings):
    # ``__`` reaches into the PBX tables: CALLGATE_PBX__EAST__AMI_SECRET=...
    model_config = SettingsConfigDict(
        env_prefix="CALLGATE_", extra="forbid", env_nested_delimiter="__"
    )

    agi: str = "127.0.0.1:4573"
    http: str = "127.0.0.1:8080"
    data_dir: Path = Field(default_factory=default_data_dir)
    db: str | None = None
    """A SQLite path, or a postgresql:// URL. Default: ``<data_dir>/callgate.sqlite3``."""
    ami: str | None = None
    ami_user: str | None = None
    ami_secret: SecretStr | None = None
    admin_token: SecretStr | None = None
    log_level: str = "INFO"

    # Several Asterisk servers, and which instance enforces on each (callgate.ami.leases)
    pbx: dict[str, PbxSettings] = Field(default_factory=dict)
    """The Asterisk servers by name, each with its Manager (``[pbx.east] ami = "10.0.0.5:5038"``,
    ``ami_user``, ``ami_secret``); the dialplan names its server in ``CALLGATE_PBX``. ``--ami``
    is the one-server shorthand (named ``default``); giving both is refused."""
    enforce_lock_interval: float = Field(default=2.0, gt=0, le=60)
    """With PostgreSQL: seconds between an instance's attempts to take a PBX's enforcement lock
    that another instance holds (the takeover time after that one dies), and between the
    holder's checks that its lock connection is still alive."""

    # FastAGI bounds
    agi_max_sessions: int = Field(default=2000, ge=1)
    agi_env_timeout: float = Field(default=5.0, gt=0)
    agi_reply_timeout: float = Field(default=10.0, gt=0)
    agi_max_line: int = Field(default=8192, ge=256)
    agi_max_env: int = Field(default=65536, ge=1024)
    shutdown_grace: float = Field(default=10.0, ge=0)

    # Phone replace: wrong PINs before a lockout, within what window, and for how long
    replace_max_failures: int = Field(default=5, ge=1)
    replace_window_seconds: float = Field(default=900.0, gt=0)
    replace_lock_seconds: float = Field(default=900.0, gt=0)

    # Phone replace: PIN hashing (scrypt) — checks during calls never wait behind PIN writes
    replace_pin_verify_threads: int = Field(default=2, ge=1, le=64)
    """Threads that check PINs typed during replace calls, used by nothing else (each running
    check takes about 32 MiB); clients take turns when more calls wait."""
    replace_pin_write_threads: int = Field(default=1, ge=1, le=64)
    """Threads that hash PINs written over HTTP, shared by all clients in turn (32 MiB each)."""
    replace_pin_write_rate: float = Field(default=2.0, gt=0)
    """PIN writes per second a client may make on average; over it, 429 with Retry-After."""
    replace_pin_write_burst: int = Field(default=20, ge=1)
    """PIN writes a client may make in a row after a pause (the token bucket's size)."""
    replace_pin_write_concurrency: int = Field(default=4, ge=1)
    """PIN writes of one client in progress at once (waiting for or being hashed); over it, 429."""

    # Live enforcement over the Asterisk Manager (only with `ami`)
    ami_ping_interval: float = Field(default=5.0, gt=0)
    """Seconds between watchdog Pings; no answer within ``ami_ping_timeout`` = reconnect."""
    ami_ping_timeout: float = Field(default=3.0, gt=0)
    ami_action_timeout: float = Field(default=5.0, gt=0)
    ami_backoff_max: float = Field(default=30.0, gt=0)
    """Longest wait between reconnection attempts (exponential backoff with jitter)."""
    ami_auth_retry: float = Field(default=60.0, ge=1)
    """Wait after Asterisk refused the credentials before trying again."""
    ami_reconcile_interval: float = Field(default=60.0, gt=0)
    """Seconds between checks of the tracked sessions against CoreShowChannels."""

    # Policy history and policy writes (isolation between clients)
    policy_history_keep: int = Field(default=100, ge=1)
    """Versions of a client's policy kept, the current one included; older ones are pruned
    when the client next saves."""
    policy_history_max_age_days: float = Field(default=0.0, ge=0)
    """Also prune versions older than this many days (never the current one); 0: no age limit."""
    policy_history_page_bytes: int = Field(default=4 * 1024 * 1024, ge=65536)
    """A history page stops before its documents pass this many bytes (one always fits)."""
    policy_write_rate: float = Field(default=5.0, gt=0)
    """Policy writes (PUT, DELETE) a second per client, on average; past it: 429."""
    policy_write_burst: int = Field(default=20, ge=1)
    """Policy writes a client may make at once before ``policy_write_rate`` applies."""
    policy_write_concurrency: int = Field(default=1, ge=1)
    """Policy writes of one client in flight at the same time; past it: 429."""
    policy_offload_bytes: int = Field(default=65536, ge=0)
    """PUT bodies of this size or more are decoded and validated in a worker process."""
    policy_workers: int = Field(default=1, ge=1)
    """Worker processes validating large policy documents (shared by every client)."""
    # HTTP connection bounds and the file-descriptor budget (callgate.http.listener)
    http_header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a connection has to send complete request headers, from its opening or from the
    first byte after a response; then it is closed (408 if it had sent part of them)."""
    http_keepalive_timeout: float = Field(default=15.0, gt=0)
    """Seconds an HTTP connection may stay idle between two requests before it is closed."""
    http_max_connections: int = Field(default=1000, ge=1)
    """Most HTTP connections open at once; over it the longest-idle one is closed (or, if each
    has a request in progress, the new one). Lowered at start to what the descriptor limit
    leaves after ``agi_max_sessions`` and ``fd_reserve`` (but never below 8)."""
    fd_reserve: int = Field(default=64, ge=0)
    """File descriptors kept out of HTTP's reach beyond FastAGI's ``agi_max_sessions``: the
    store, the listeners, the Manager connection, logs."""
    # What callers can make the daemon keep: remembered answers, the audit log's size
    agi_answer_cache_size: int = Field(default=8192, ge=0)
    """FastAGI answers remembered, all clients together (only well-formed requests of clients
    with a stored policy); when full, the client with the most is forgotten. 0: none."""
    audit_max_age_days: float = Field(default=365.0, ge=0)
    """Audit events older than this many days are deleted. 0: kept whatever their age."""
    audit_max_rows: int = Field(default=10_000_000, ge=0)
    """At most this many audit events are kept, all clients together; the oldest go first.
    0: no limit."""
    audit_prune_interval: float = Field(default=60.0, gt=0)
    """Seconds between two prunings of the audit log (each deletes in small transactions)."""

    # --- operator console (/console and its routes: matrix, preview, live) ---
    console_matrix_max_extensions: int = Field(default=300, ge=2, le=2000)
    """The permission matrix route answers for clients with at most this many extensions; past
    it: 409 ``matrix_too_large`` (the group summary and one extension's view still answer)."""
    console_live_max_streams: int = Field(default=4, ge=1, le=100)
    """Live event streams (``/client/{id}/live/events``) one client may hold open; past it: 429."""
    console_live_poll_seconds: float = Field(default=0.25, gt=0, le=10)
    """How often a live event stream looks for a change to send."""
    console_live_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    """A live event stream with nothing new sends a comment this often (proxies keep it open)."""
    # Grants that expire (POST /client/{id}/grants): limits per client
    grants_max_per_client: int = Field(default=100, ge=1, le=10_000)
    """Grants a client may have active or still to come at once; past it, 422 (ended ones do
    not count)."""
    grants_max_duration_hours: float = Field(default=720.0, gt=0, le=87_600)
    """The longest a grant may last, from ``from`` to ``until``, in hours; past it, 422."""
    grants_keep_ended_days: float = Field(default=7.0, ge=0)
    """Days an ended grant (expired or ended early) stays in the client's grant list; the
    settings history keeps it as long as it keeps versions (``policy_history_keep``)."""

    @field_validator("agi", "http")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_host_port(value, default_port=1)
        return value

    @field_validator("ami")
    @classmethod
    def _check_ami(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value, default_port=5038)
        return value

    @field_validator("pbx")
    @classmethod
    def _check_pbx_names(cls, value: dict[str, PbxSettings]) -> dict[str, PbxSettings]:
        for name in value:
            if PBX_NAME.fullmatch(name) is None:
                raise ValueError(
                    f"PBX name {name!r}: 1 to 32 letters, digits, '_' or '-', not starting with"
                    " '_' or '-'"
                )
        return value

    @model_validator(mode="after")
    def _ami_needs_credentials(self) -> Settings:
        if self.ami and self.pbx:
            raise ValueError(
                "--ami (one Asterisk server) and [pbx.<name>] tables (several) exclude each"
                " other: name every server in a [pbx.<name>] table, or use --ami alone"
            )
        if self.ami and not (self.ami_user and self.ami_secret):
            raise ValueError(
                "--ami needs --ami-user and a secret (CALLGATE_AMI_SECRET or the config file)"
            )
        for name, table in self.pbx.items():
            if not ((table.ami_user or self.ami_user) and (table.ami_secret or self.ami_secret)):
                raise ValueError(
                    f"[pbx.{name}] needs ami_user and ami_secret (in its table, or the top-level"
                    " ami_user / CALLGATE_AMI_SECRET shared by every server)"
                )
        return self

    @property
    def pbx_managers(self) -> list[PbxManager]:
        """Every configured Manager connection, by PBX name (``[]``: no live enforcement)."""
        if self.ami:
            host, port = split_host_port(self.ami, default_port=5038)
            assert self.ami_user is not None  # checked above
            assert self.ami_secret is not None
            return [PbxManager(SHORTHAND_PBX, host, port, self.ami_user, self.ami_secret)]
        managers = []
        for name, table in sorted(self.pbx.items()):
            host, port = split_host_port(table.ami, default_port=5038)
            user, secret = table.ami_user or self.ami_user, table.ami_secret or self.ami_secret
            assert user is not None  # checked above
            assert secret is not None
            managers.append(PbxManager(name, host, port, user, secret))
        return managers

    @property
    def agi_address(self) -> tuple[str, int]:
        return split_host_port(self.agi, default_port=4573)

    @property
    def http_address(self) -> tuple[str, int]:
        return split_host_port(self.http, default_port=8080)

    @property
    def db_target(self) -> str:
        return self.db or str(self.data_dir / "callgate.sqlite3")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags > environment > TOML file > defaults
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(overrides: dict[str, Any], config_file: Path | None = None) -> Settings:
    """Build the settings from flags (``overrides``, ``None`` values ignored), env and file."""
    if "admin_token" in overrides:
        raise ValueError("the admin token is read from CALLGATE_ADMIN_TOKEN only")
    path = config_file or (Path(p) if (p := os.environ.get("CALLGATE_CONFIG")) else None)
    flags = {k: v for k, v in overrides.items() if v is not None}
    if path is None:
        return Settings(**flags)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(env_prefix="CALLGATE_", extra="forbid", toml_file=path)

    return FileSettings(**flags)
