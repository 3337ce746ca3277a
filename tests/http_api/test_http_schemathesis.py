"""schemathesis against the service's own ``/openapi.json``: no 5xx, every answer as documented.

A real ``callgate serve`` runs on loopback; schemathesis reads the description the service
publishes, generates requests for every documented operation (valid by the schema, with the
admin token), sends them, and checks each answer: not a server error, a documented status code,
the documented content type and headers, a body matching the documented schema. At least 1,000
requests in all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support import free_port

TOKEN = "schemathesis-admin-token"
MIN_REQUESTS = 1000
EXAMPLES_PER_OPERATION = 120
NEGATIVE_EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    port, agi_port = free_port(), free_port()
    env = {**os.environ, "CALLGATE_ADMIN_TOKEN": TOKEN, "CALLGATE_LOG_LEVEL": "WARNING"}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "callgate",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--http",
            f"127.0.0.1:{port}",
            "--agi",
            f"127.0.0.1:{agi_port}",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the service did not get ready"
            time.sleep(0.02)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
        server_log = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in server_log, server_log[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(service: str) -> None:
    document = requests.get(f"{service}/openapi.json", timeout=5).json()
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()

    def fuzz(strategy: SearchStrategy[schemathesis.Case], examples: int, checks: list[Any]) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=service, session=session, headers=headers, timeout=10)
            sent[f"{case.operation.label} ({'negative' if checks != CHECKS else 'positive'})"] += 1
            statuses[response.status_code] += 1
            case.validate_response(response, checks=checks, headers=headers)

        run()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        if operation.path in ("/docs", "/console"):
            continue  # HTML for people; their tests are test_http_browser.py and tests/console
        if operation.path.endswith("/live/events"):
            continue  # an event stream never ends: tests/http_api/test_console_routes.py reads it
        for mode, examples, checks in (
            (GenerationMode.POSITIVE, EXAMPLES_PER_OPERATION, CHECKS),
            # invalid by the schema: whatever the answer, never a server error
            (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES_PER_OPERATION, [not_a_server_error]),
        ):
            try:
                fuzz(operation.as_strategy(generation_mode=mode), examples, checks)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to break (no parameters)

    total = sum(sent.values())
    print(f"\nschemathesis: {total} requests, statuses {dict(sorted(statuses.items()))}")
    for label, count in sorted(sent.items()):
        print(f"  {count:5d}  {label}")
    positive = sum(n for label, n in sent.items() if label.endswith("(positive)"))
    assert positive >= MIN_REQUESTS
    assert not [status for status in statuses if status >= 500]
    assert statuses[200] > 0
