"""Configuration: per-environment defaults and the variables that override them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.settings import Settings

from conftest import make_settings


@pytest.mark.parametrize(
    ("environment", "rate", "level"),
    [("development", 1.0, "debug"), ("production", 0.1, "info"), ("test", 1.0, "debug")],
)
def test_per_environment_defaults(environment: str, rate: float, level: str) -> None:
    settings = make_settings(environment=environment)
    assert settings.trace_sample_rate == rate
    assert settings.effective_log_level == level


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("LOGFIRE_TRACE_SAMPLE_RATE", "0.5")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("TENANT_HEADER_ACCOUNT_ID", "X-Tenant")

    settings = Settings(_env_file=None)

    assert settings.trace_sample_rate == 0.5
    assert settings.effective_log_level == "warning"
    assert settings.tenant_headers["account_id"] == "X-Tenant"
    assert settings.port == {{ cookiecutter.http_port }}


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
