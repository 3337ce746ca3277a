"""Several Asterisk servers in the settings: a ``[pbx.<name>]`` table each, ``--ami`` as the
one-server shorthand named ``default``, never both; credentials shared or per server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from callgate.config import PbxManager, load_settings
from callgate.daemon import known_pbxes

TWO_SERVERS = """
ami_user = "callgate"

[pbx.east]
ami = "10.0.0.5:5038"
ami_secret = "east-secret"

[pbx.west]
ami = "10.0.0.6"
ami_user = "west-user"
ami_secret = "west-secret"
"""


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callgate.toml"
    path.write_text(text)
    return path


def managers(managers: list[PbxManager]) -> list[tuple[str, str, int, str, str]]:
    return [(m.name, m.host, m.port, m.user, m.secret.get_secret_value()) for m in managers]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CALLGATE_CONFIG", "CALLGATE_AMI", "CALLGATE_AMI_USER", "CALLGATE_AMI_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_a_table_per_server_names_each_with_its_manager(tmp_path: Path) -> None:
    settings = load_settings({}, config(tmp_path, TWO_SERVERS))
    assert managers(settings.pbx_managers) == [
        ("east", "10.0.0.5", 5038, "callgate", "east-secret"),  # the top-level user
        ("west", "10.0.0.6", 5038, "west-user", "west-secret"),  # its own, default port
    ]
    assert known_pbxes(settings) == ["east", "west"]


def test_the_ami_flags_are_the_one_server_shorthand_named_default(tmp_path: Path) -> None:
    settings = load_settings(
        {"ami": "127.0.0.1:5039", "ami_user": "callgate", "ami_secret": "s3cret"}
    )
    assert managers(settings.pbx_managers) == [("default", "127.0.0.1", 5039, "callgate", "s3cret")]
    assert known_pbxes(settings) == ["default"]


def test_without_any_manager_the_only_pbx_is_default() -> None:
    settings = load_settings({})
    assert settings.pbx_managers == []
    assert known_pbxes(settings) == ["default"]


def test_ami_and_pbx_tables_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"--ami .* and \[pbx.<name>\] tables"):
        load_settings({"ami": "127.0.0.1:5038", "ami_secret": "x"}, config(tmp_path, TWO_SERVERS))


def test_a_secret_shared_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLGATE_AMI_SECRET", "from-env")
    text = '[pbx.east]\nami = "10.0.0.5"\nami_user = "cg"\n[pbx.west]\nami = "10.0.0.6"\n'
    text += 'ami_user = "cg"\n'
    settings = load_settings({}, config(tmp_path, text))
    assert [m.secret.get_secret_value() for m in settings.pbx_managers] == ["from-env"] * 2


def test_one_servers_secret_from_the_environment_merges_with_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLGATE_PBX__EAST__AMI_SECRET", "east-from-env")
    text = '[pbx.east]\nami = "10.0.0.5"\nami_user = "cg"\nami_secret = "in-file"\n'
    settings = load_settings({}, config(tmp_path, text))
    assert managers(settings.pbx_managers) == [("east", "10.0.0.5", 5038, "cg", "east-from-env")]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[pbx.east]\nami = "10.0.0.5"\nami_user = "cg"\n', r"\[pbx.east\] needs ami_user and"),
        ('[pbx.east]\nami_user = "cg"\nami_secret = "s"\n', "ami"),
        ('[pbx.east]\nami = "10.0.0.5:99999"\nami_user = "u"\nami_secret = "s"\n', "port"),
        ('[pbx.east]\nami = "h"\nami_user = "u"\nami_secret = "s"\nsecret = "typo"\n', "secret"),
        ('[pbx."east/1"]\nami = "h"\nami_user = "u"\nami_secret = "s"\n', "PBX name"),
        ('[pbx."-x"]\nami = "h"\nami_user = "u"\nami_secret = "s"\n', "PBX name"),
    ],
    ids=["no-secret", "no-address", "bad-port", "unknown-key", "bad-name", "leading-dash"],
)
def test_a_broken_table_is_a_located_configuration_error(
    tmp_path: Path, text: str, error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        load_settings({}, config(tmp_path, text))
