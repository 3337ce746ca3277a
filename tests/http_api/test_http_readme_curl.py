"""Every curl example in the README that sends a body says it is JSON: the API answers 415 to a
body without ``Content-Type: application/json``, and ``curl -d`` alone sends a form type."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_BODY_FLAG = re.compile(r"(?:^|\s)(?:-d|--data(?:-raw|-binary)?|--json)\s")


def curl_commands() -> list[str]:
    """Each curl command, its continuation lines (ending in a backslash) joined."""
    commands, current = [], ""
    for line in README.read_text().splitlines():
        if current or line.lstrip().startswith("curl "):
            current += " " + line.rstrip().removesuffix("\\")
            if not line.rstrip().endswith("\\"):
                commands.append(current.strip())
                current = ""
    return commands


def test_every_curl_example_with_a_body_sends_json() -> None:
    with_body = [c for c in curl_commands() if _BODY_FLAG.search(c)]
    assert len(with_body) >= 5  # the policy, PIN and token examples
    missing = [
        c for c in with_body if "Content-Type: application/json" not in c and "--json" not in c
    ]
    assert missing == []
