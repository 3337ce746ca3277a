"""The README's configuration table lists every setting with its environment variable, flag and
default, as the code has them (a new setting without a row fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callgate.cli import build_parser
from callgate.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def config_rows() -> dict[str, list[str]]:
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def serve_flags() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    serve = sub.choices["serve"]  # type: ignore[index]
    return {opt for action in serve._actions for opt in action.option_strings}


def test_every_setting_has_a_row_and_no_row_is_stale() -> None:
    assert set(config_rows()) == set(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_each_row_names_the_environment_variable_and_flag(name: str) -> None:
    _, flag, env, default, _ = config_rows()[name]
    assert env == f"`CALLGATE_{name.upper()}`"
    expected_flag = "--" + name.replace("_", "-")
    if expected_flag in serve_flags():
        assert flag.startswith(f"`{expected_flag}"), flag
    else:
        assert flag.startswith("none"), f"{name}: the README gives a flag the CLI lacks"
    field = Settings.model_fields[name]
    if field.default is not None and not callable(field.default_factory):
        assert re.search(rf"`{re.escape(str(field.default))}`", default), (name, default)
