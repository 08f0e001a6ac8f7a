"""Service configuration, read from environment variables (and an optional `.env` file)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal, Self

from pydantic import {% if cookiecutter.with_httpx %}AnyHttpUrl, {% endif %}BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .telemetry.tenant import is_tenant_id

# How the process behaves (RUN_MODE); where it runs is ENVIRONMENT, a label of its own.
RunMode = Literal["development", "production", "test"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
# Where whole-trace sampling decisions are made (telemetry/sampling.py).
SamplingMode = Literal["service", "collector"]

# Share of ordinary traces exported per run mode when LOGFIRE_TRACE_SAMPLE_RATE is not set
# (failed and slow requests are always exported).
DEFAULT_SAMPLE_RATES: dict[RunMode, float] = {
    "development": 1.0,
    "production": 0.1,
    "test": 1.0,
}
DEFAULT_LOG_LEVELS: dict[RunMode, LogLevel] = {
    "development": "debug",
    "production": "info",
    "test": "debug",
}


def _split_commas(value: object) -> object:
    """`a,b` in the environment becomes ("a", "b"); a list given in code passes unchanged."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# A list setting written as `a,b` in the environment (pydantic-settings would expect JSON).
CommaSeparated = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]


class Settings(BaseSettings):
    """Every setting is an environment variable of the same name in upper case.

    LOGFIRE_TOKEN and the OTEL_* variables are deliberately absent: Logfire and OpenTelemetry read
    them themselves, so the token never sits in this object (or in its repr).
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Two settings, so that a staging cluster behaves like production and still says "staging".
    run_mode: RunMode = Field(
        default="development",
        description=(
            "How the process behaves: `development` (readable console, access log, every trace, "
            "debug logs), `production` (JSON lines on stdout, 10% of ordinary traces, info logs; "
            "what the image sets) or `test` (quiet). The variables below override each default."
        ),
    )
    environment: str = Field(
        default="local",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description=(
            "Where it runs, e.g. `dev`, `staging`, `production`: the `environment` of every span "
            "and log (OpenTelemetry's deployment.environment.name). A label: it changes nothing."
        ),
    )
    host: str = "127.0.0.1"
    port: int = Field(default={{ cookiecutter.http_port }}, ge=0, le=65535)
{%- if cookiecutter.metrics_separate_port %}
    metrics_port: int = Field(default={{ cookiecutter.metrics_port }}, ge=0, le=65535)
{%- endif %}
    log_level: LogLevel | None = Field(
        default=None, description="Defaults to info in the production run mode, debug otherwise."
    )
    logfire_trace_sample_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Share of ordinary traces exported; defaults to 1.0, or 0.1 in the production run "
            "mode. Failed and slow requests are always exported."
        ),
    )
    trace_sampling: SamplingMode = Field(
        default="service",
        description=(
            "`service`: this service keeps the sample rate's share of traces (the same ones in "
            "every service) and every failed or slow request. `collector`: it records and "
            "exports every trace, and an OpenTelemetry Collector's tail sampling decides."
        ),
    )
    slow_request_seconds: float = Field(
        default={{ cookiecutter.slo_latency_threshold_seconds }},
        gt=0.0,
        description="A request slower than this is always traced (the latency SLO threshold).",
    )
    access_log: bool | None = Field(
        default=None,
        description="One log line per request; defaults to on in the development run mode only.",
    )
    distributed_tracing: bool = Field(
        default=True,
        description="Continue traces from an incoming W3C `traceparent` header.",
    )
    shutdown_flush_timeout_seconds: float = Field(default=5.0, gt=0.0)

    tenant_header_account_id: str = "X-Account-Id"
    tenant_header_agent_instance_id: str = "X-Agent-Instance-Id"
    tenant_header_session_id: str = "X-Session-Id"
    tenant_header_llm_request_id: str = "X-LLM-Request-Id"
    tenant_id_max_length: int = Field(default=128, ge=1, le=1024)
    tenant_metrics_accounts: CommaSeparated = Field(
        default=(),
        description=(
            "Accounts counted under their own id in tenant_requests_total (say, your largest "
            "customers); any other account is `~other`. Empty: no account id on /metrics."
        ),
    )
    tenant_trusted_callers: CommaSeparated = Field(
        default=("*",),
        description=(
            "Callers whose tenant headers are accepted: `*` (any caller: an internal service) or "
            "networks, e.g. an edge service's gateway `10.0.0.0/8`. Others get no tenant ids."
        ),
    )
{%- if cookiecutter.with_httpx %}
    tenant_forward_hosts: CommaSeparated = Field(
        default=("localhost", "127.0.0.1", "::1", ".svc.cluster.local"),
        description=(
            "Hosts the HTTP client sends the tenant headers to: a name, or a suffix starting "
            "with a dot (`.svc.cluster.local`). Never list a third party."
        ),
    )
    upstream_url: AnyHttpUrl | None = Field(
        default=None, description="Base URL of the service the example /upstream routes call."
    )
{%- endif %}
{%- if cookiecutter.with_sqlalchemy %}

    database_url: str = Field(
        default="sqlite+aiosqlite:///./data.sqlite3",
        repr=False,  # it may carry a password
        description="SQLAlchemy async URL, e.g. postgresql+asyncpg://user:password@host:5432/db.",
    )
    database_timeout_seconds: float = Field(
        default=5.0,
        gt=0.0,
        description=(
            "Connecting, waiting for a pooled connection or one statement: longer, and the "
            "request fails with a 503."
        ),
    )
{%- endif %}
{%- if cookiecutter.with_redis %}

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        repr=False,  # it may carry a password
        description="Redis URL, e.g. redis://:password@host:6379/0 (rediss:// for TLS).",
    )
    redis_timeout_seconds: float = Field(
        default=5.0,
        gt=0.0,
        description="Connecting or one command: longer, and the request fails with a 503.",
    )
{%- endif %}

    # /readyz: each dependency check gets this long before it counts as failed. Shorter than the
    # readiness probe's timeoutSeconds (2 s), so the kubelet reads which check failed.
    readiness_timeout_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
{%- if cookiecutter.with_pydantic_ai %}

    ai_model: str = Field(
        default="test",
        description="PydanticAI model name, e.g. `openai:gpt-4o`; `test` answers offline.",
    )
{%- endif %}

    @model_validator(mode="after")
    def _metric_accounts_are_tenant_ids(self) -> Self:
        for account in self.tenant_metrics_accounts:
            if not is_tenant_id(account, self.tenant_id_max_length):
                raise ValueError(
                    f"tenant_metrics_accounts: {account!r} is not an account id a request can "
                    f"carry (letters, digits and ._:- up to {self.tenant_id_max_length})"
                )
        return self

    @field_validator("tenant_trusted_callers")
    @classmethod
    def _networks_or_any(cls, callers: tuple[str, ...]) -> tuple[str, ...]:
        if callers != ("*",):
            for caller in callers:
                ip_network(caller, strict=False)  # a ValueError names the bad entry
        return callers
{%- if cookiecutter.with_httpx %}

    @field_validator("tenant_forward_hosts")
    @classmethod
    def _host_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            if "*" in host or "/" in host:
                raise ValueError(f"{host!r}: give a host name, or a suffix like .svc.cluster.local")
        return tuple(host.lower() for host in hosts)
{%- endif %}

    @property
    def trace_sample_rate(self) -> float:
        if self.logfire_trace_sample_rate is not None:
            return self.logfire_trace_sample_rate
        return DEFAULT_SAMPLE_RATES[self.run_mode]

    @property
    def effective_access_log(self) -> bool:
        if self.access_log is not None:
            return self.access_log
        return self.run_mode == "development"

    @property
    def effective_log_level(self) -> LogLevel:
        return self.log_level or DEFAULT_LOG_LEVELS[self.run_mode]

    @property
    def tenant_headers(self) -> dict[str, str]:
        """Tenant attribute name -> request header name."""
        return {
            "account_id": self.tenant_header_account_id,
            "agent_instance_id": self.tenant_header_agent_instance_id,
            "session_id": self.tenant_header_session_id,
            "llm_request_id": self.tenant_header_llm_request_id,
        }

    @property
    def tenant_caller_networks(self) -> tuple[IPv4Network | IPv6Network, ...] | None:
        """The networks allowed to set tenant ids; None when any caller may."""
        if self.tenant_trusted_callers == ("*",):
            return None
        return tuple(ip_network(caller, strict=False) for caller in self.tenant_trusted_callers)
