"""Tenant context: which request headers carry the tenant ids, and which values are accepted.

Policy for invalid values (wrong characters, empty or too long): the value is DROPPED, the request
goes on without that attribute, and `tenant_header_rejections_total{header=...}` counts it. Tenant
headers are context for telemetry, not authentication, so a bad one must not fail the request; but
it never reaches a span, a log or a metric label either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry import baggage, context

# Attribute names on spans, logs and JSON lines (and keys of the OTel baggage that carries them).
TENANT_ATTRIBUTES = ("account_id", "agent_instance_id", "session_id", "llm_request_id")

# Letters, digits and `._:-`: enough for UUIDs, ULIDs and prefixed ids, nothing that can break a
# log line, a label or a query.
_ALLOWED = re.compile(rb"[A-Za-z0-9._:-]+")


@dataclass(frozen=True, slots=True)
class TenantHeaders:
    """Maps lower-cased ASCII header names (as ASGI delivers them) to tenant attribute names."""

    by_header: Mapping[bytes, str]
    max_length: int

    @classmethod
    def from_names(cls, headers: Mapping[str, str], max_length: int) -> TenantHeaders:
        """`headers` maps attribute name -> header name, e.g. `{"account_id": "X-Account-Id"}`."""
        by_header = {name.lower().encode("latin-1"): attr for attr, name in headers.items()}
        if len(by_header) != len(headers):
            raise ValueError(f"tenant header names must be distinct: {sorted(headers.values())}")
        return cls(by_header=by_header, max_length=max_length)

    def is_valid(self, value: bytes) -> bool:
        return len(value) <= self.max_length and _ALLOWED.fullmatch(value) is not None


def with_tenant_baggage(
    values: Iterable[tuple[str, str]], parent: context.Context | None = None
) -> context.Context:
    """A context whose baggage carries the tenant ids.

    Logfire copies baggage onto every span and log started inside that context (threadpool,
    `asyncio.to_thread` and BackgroundTasks included, since they copy the context).
    """
    ctx = parent if parent is not None else context.get_current()
    for name, value in values:
        ctx = baggage.set_baggage(name, value, ctx)
    return ctx


def current_tenant() -> dict[str, str]:
    """The tenant ids of the current request (empty outside a request)."""
    return {k: str(v) for k, v in baggage.get_all().items() if k in TENANT_ATTRIBUTES}
