"""One scrubbing policy: a JSON line on stdout and the exported log redact exactly the same things.

Both go through Logfire's scrubber (telemetry/logs.py hands it the line's fields), with the
callback that keeps the tenant ids. The corpus is what services have leaked before: credentials by
name, by value, and in free text.
"""

from __future__ import annotations

import json
import logging
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
}
# Fields that must come through unchanged on both ways out.
KEPT: dict[str, Any] = {"item_id": 7, "user": "ann", "authors": "Ann and Bob"}
LOGGER = logging.getLogger("tests.scrubbing")


@pytest.fixture
def outputs(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON line and the exported log's attributes of one record logged inside a request."""
    app = create_app(
        make_settings(environment="production", logfire_trace_sample_rate=1.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )

    async def leak() -> dict[str, str]:
        LOGGER.warning("probe.secrets", extra={**SECRETS, **KEPT})
        return {}

    app.add_api_route("/leak", leak)
    try:
        with TestClient(app) as client:
            assert client.get("/leak", headers=TENANT_HEADERS).status_code == 200
    finally:
        configure_logging("debug", json_lines=False)

    [line] = [
        json.loads(text)
        for text in capsys.readouterr().out.splitlines()
        if text.startswith("{") and '"probe.secrets"' in text
    ]
    [log] = logs_named(capfire, "probe.secrets")
    return line, dict(log.attributes or {})


def as_exported(value: Any) -> Any:
    """Logfire exports a nested value as JSON text; compare it as data."""
    return json.loads(value) if isinstance(value, str) and value.startswith("{") else value


@pytest.mark.parametrize("field", sorted(SECRETS))
def test_secret_is_redacted_the_same_way_on_stdout_and_in_the_exported_log(
    outputs: tuple[dict[str, Any], dict[str, Any]], field: str
) -> None:
    line, exported = outputs
    assert line[field] == as_exported(exported[field])
    shown = json.dumps(line[field])
    assert "[Scrubbed due to" in shown
    for secret in json.dumps(SECRETS[field]).strip('"').split('"'):
        if len(secret) > 4 and secret not in ("password",):
            assert secret not in shown, (field, secret)


def test_ordinary_fields_and_tenant_ids_are_kept_on_both(
    outputs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    line, exported = outputs
    for field, value in KEPT.items():
        assert line[field] == exported[field] == value
    # `session_id` looks like a credential to Logfire; the tenant ids are validated ids.
    assert {k: line[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    assert {k: exported[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
