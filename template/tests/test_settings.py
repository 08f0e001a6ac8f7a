"""Configuration: defaults per run mode, the environment label, the variables that override them."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging

from conftest import make_settings, server_spans


@pytest.mark.parametrize(
    ("run_mode", "rate", "level", "access_log"),
    [
        ("development", 1.0, "debug", True),
        ("production", 0.1, "info", False),
        ("test", 1.0, "debug", False),
    ],
)
def test_per_run_mode_defaults(run_mode: str, rate: float, level: str, access_log: bool) -> None:
    settings = make_settings(run_mode=run_mode)
    assert settings.trace_sample_rate == rate
    assert settings.effective_log_level == level
    assert settings.effective_access_log is access_log


def test_a_laptop_runs_in_development_labelled_local(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUN_MODE", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert (settings.run_mode, settings.environment) == ("development", "local")


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUN_MODE", "production")
    monkeypatch.setenv("ENVIRONMENT", "eu-staging")
    monkeypatch.setenv("LOGFIRE_TRACE_SAMPLE_RATE", "0.5")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("TENANT_HEADER_ACCOUNT_ID", "X-Tenant")

    settings = Settings(_env_file=None)

    assert settings.run_mode == "production"
    assert settings.environment == "eu-staging"
    assert settings.trace_sample_rate == 0.5
    assert settings.effective_log_level == "warning"
    assert settings.tenant_headers["account_id"] == "X-Tenant"
    assert settings.port == {{ cookiecutter.http_port }}


@pytest.mark.parametrize("label", ["staging", "prod-eu-1", "qa.2"])
def test_the_environment_label_changes_no_behaviour(label: str) -> None:
    assert make_settings(run_mode="production", environment=label).trace_sample_rate == 0.1
    assert make_settings(run_mode="development", environment=label).trace_sample_rate == 1.0


@pytest.mark.parametrize("label", ["", "prod env", "-dev", "staging/eu", "x" * 64])
def test_the_environment_label_is_a_plain_name(label: str) -> None:
    with pytest.raises(ValidationError, match="environment"):
        make_settings(environment=label)


def test_a_staging_deployment_behaves_like_production_and_says_staging(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(run_mode="production", environment="staging", logfire_trace_sample_rate=1.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    try:
        with TestClient(app) as client:
            assert client.get("/items/1").status_code == 200
    finally:
        configure_logging("debug", json_lines=False)

    [server] = server_spans(capfire)
    assert server.resource.attributes["deployment.environment.name"] == "staging"
    # Production behaviour: JSON lines on stdout, the startup line naming both settings.
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [started] = [line for line in lines if line["message"] == "service.started"]
    assert (started["environment"], started["run_mode"]) == ("staging", "production")


def test_sample_rate_must_be_a_fraction() -> None:
    with pytest.raises(ValidationError):
        make_settings(logfire_trace_sample_rate=1.5)


def test_token_is_never_part_of_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGFIRE_TOKEN", "pylf_v1_secret_token")
    settings = Settings(_env_file=None)
    assert "pylf_v1_secret_token" not in repr(settings)
    assert "pylf_v1_secret_token" not in settings.model_dump_json()


def test_trusted_callers_are_any_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_settings().tenant_caller_networks is None
    monkeypatch.setenv("TENANT_TRUSTED_CALLERS", "10.0.0.0/8, fd00::/8")
    networks = Settings(_env_file=None).tenant_caller_networks
    assert [str(network) for network in networks or ()] == ["10.0.0.0/8", "fd00::/8"]
    with pytest.raises(ValidationError, match="tenant_trusted_callers"):
        make_settings(tenant_trusted_callers="*,gateway.internal")


@pytest.mark.parametrize("accounts", ["acct-1;acct-2", "acct 1", "~other", "a" * 129])
def test_metric_accounts_must_be_account_ids(accounts: str) -> None:
    with pytest.raises(ValidationError, match="tenant_metrics_accounts"):
        make_settings(tenant_metrics_accounts=accounts)


def test_metric_accounts_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_settings().tenant_metrics_accounts == ()
    monkeypatch.setenv("TENANT_METRICS_ACCOUNTS", "acct-1, acct-2")
    assert Settings(_env_file=None).tenant_metrics_accounts == ("acct-1", "acct-2")
