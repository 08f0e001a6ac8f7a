"""One scrubbing policy: a JSON line on stdout and the exported log redact exactly the same things.

Both go through Logfire's scrubber (telemetry/logs.py hands it the line's fields), with the
callback that keeps the request's tenant ids. The corpus is what services have leaked before:
credentials by name, by value, in free text, and under a tenant id's name (`session_id`), each
logged inside a request and outside any.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging

from conftest import TENANT_ATTRIBUTES, TENANT_HEADERS, logs_named, make_settings

# Field -> value a record carries; every value here must be redacted on both ways out.
SECRETS: dict[str, Any] = {
    "password": "hunter2-pw",
    "passphrase": "correct horse battery",
    "hmac_key": "hmac-0xdeadbeef",
    "signing_key": "sig-0xfeedface",
    "api_key": "ak-live-123",
    "x_api_key": "ak-live-456",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "ssn": "123-45-6789",
    "social_security_number": "987-65-4321",
    "credit_card": "4111 1111 1111 1111",
    "logfire_token": "pylf_v1_us_0123456789abcdef",
    "authorization": "Bearer header-secret",
    "cookie": "sid=cookie-secret",
    "note": "my password is hunter3",
    # Credentials recognised by their value alone.
    "deploy_value": "pylf_v2_eu_fedcba9876543210",
    "nested": {"db": {"password": "nested-pw"}},
    # A tenant id's name is no exemption: only the request's own id is kept.
    "session_id": "web-cookie-5f2a9c",
}
# Fields that must come through unchanged on both ways out.
KEPT: dict[str, Any] = {"item_id": 7, "user": "ann", "authors": "Ann and Bob"}
LOGGER = logging.getLogger("tests.scrubbing")


@dataclass(frozen=True)
class Outputs:
    """Per record, its JSON line and its exported log's attributes."""

    in_request: bool
    records: dict[str, tuple[dict[str, Any], dict[str, Any]]]


def capture(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str], *, in_request: bool
) -> Outputs:
    """Two records: `probe.secrets` carries SECRETS and KEPT, `probe.ordinary` only KEPT; both
    logged in a request with the four tenant headers, or outside any request."""
    app = create_app(
        make_settings(run_mode="production", logfire_trace_sample_rate=1.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )

    def leak() -> None:
        LOGGER.warning("probe.secrets", extra={**SECRETS, **KEPT})
        LOGGER.warning("probe.ordinary", extra=KEPT)

    async def leak_in_request() -> dict[str, str]:
        leak()
        return {}

    app.add_api_route("/leak", leak_in_request)
    try:
        with TestClient(app) as client:
            if in_request:
                assert client.get("/leak", headers=TENANT_HEADERS).status_code == 200
            else:
                leak()
    finally:
        configure_logging("debug", json_lines=False)

    out = capsys.readouterr().out
    lines = [json.loads(text) for text in out.splitlines() if text.startswith("{")]
    records = {}
    for message in ("probe.secrets", "probe.ordinary"):
        [line] = [line for line in lines if line["message"] == message]
        [log] = logs_named(capfire, message)
        records[message] = line, dict(log.attributes or {})
    return Outputs(in_request, records)


@pytest.fixture(params=[True, False], ids=["in-a-request", "outside-a-request"])
def outputs(
    request: pytest.FixtureRequest, capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> Outputs:
    return capture(capfire, capsys, in_request=request.param)


def as_exported(value: Any) -> Any:
    """Logfire exports a nested value as JSON text; compare it as data."""
    return json.loads(value) if isinstance(value, str) and value.startswith("{") else value


@pytest.mark.parametrize("field", sorted(SECRETS))
def test_secret_is_redacted_the_same_way_on_stdout_and_in_the_exported_log(
    outputs: Outputs, field: str
) -> None:
    line, exported = outputs.records["probe.secrets"]
    assert line[field] == as_exported(exported[field])
    shown = json.dumps(line[field])
    assert "[Scrubbed due to" in shown
    for secret in json.dumps(SECRETS[field]).strip('"').split('"'):
        if len(secret) > 4 and secret not in ("password",):
            assert secret not in shown, (field, secret)


def test_ordinary_fields_and_tenant_ids_are_kept_on_both(outputs: Outputs) -> None:
    line, exported = outputs.records["probe.ordinary"]
    for field, value in KEPT.items():
        assert line[field] == exported[field] == value
    # `session_id` looks like a credential to Logfire; the request's tenant ids are validated ids.
    expected = TENANT_ATTRIBUTES if outputs.in_request else {}
    assert {k: line[k] for k in TENANT_ATTRIBUTES if k in line} == expected
    assert {k: exported[k] for k in TENANT_ATTRIBUTES if k in exported} == expected


def test_the_requests_session_id_is_kept_beside_a_redacted_field_of_that_name(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    line, exported = capture(capfire, capsys, in_request=True).records["probe.secrets"]
    session_id = TENANT_ATTRIBUTES["session_id"]
    on_stdout = {k for k, v in line.items() if v == session_id}
    in_export = {k for k, v in exported.items() if v == session_id}
    assert on_stdout == in_export != set()
