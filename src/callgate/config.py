"""One settings object for the whole daemon.

Sources, strongest first: command-line flags (passed in as ``overrides``), the environment
(``CALLGATE_<NAME>``), an optional TOML file (``--config`` or ``CALLGATE_CONFIG``), then the
defaults below. The admin token is read from the environment only: a flag would show it in the
process list, and a config file is too easy to leave world-readable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLGATE_", extra="forbid")

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

    @model_validator(mode="after")
    def _ami_needs_credentials(self) -> Settings:
        if self.ami and not (self.ami_user and self.ami_secret):
            raise ValueError(
                "--ami needs --ami-user and a secret (CALLGATE_AMI_SECRET or the config file)"
            )
        return self

    @property
    def ami_address(self) -> tuple[str, int] | None:
        """The Manager's (host, port), or None when live enforcement is not configured."""
        return split_host_port(self.ami, default_port=5038) if self.ami else None

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
