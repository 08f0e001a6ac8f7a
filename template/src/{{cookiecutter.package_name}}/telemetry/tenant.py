"""Tenant context: which request headers carry the tenant ids, and which values are accepted.

Policy for invalid values (wrong characters, empty or too long): the value is DROPPED, the request
goes on without that attribute, and `tenant_header_rejections_total{header=...}` counts it. Tenant
headers are context for telemetry, not authentication, so a bad one must not fail the request; but
it never reaches a span, a log or a metric label either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import MappingProxyType

from opentelemetry import baggage, context

# Attribute names on spans, logs and JSON lines (and keys of the OTel baggage that carries them).
TENANT_ATTRIBUTES = ("account_id", "agent_instance_id", "session_id", "llm_request_id")

# Letters, digits and `._:-`: enough for UUIDs, ULIDs and prefixed ids, nothing that can break a
# log line, a label or a query.
_ALLOWED = re.compile(rb"[A-Za-z0-9._:-]+")
# Accepted ids remembered per TenantHeaders: account and agent ids repeat from request to request.
# Bounded: every request may bring a new one (session and LLM request ids).
_MAX_REMEMBERED_IDS = 4096


@dataclass(frozen=True, slots=True)
class TenantHeaders:
    """Maps lower-cased ASCII header names (as ASGI delivers them) to tenant attribute names."""

    by_header: Mapping[bytes, str]
    max_length: int
    _accepted: dict[bytes, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_names(cls, headers: Mapping[str, str], max_length: int) -> TenantHeaders:
        """`headers` maps attribute name -> header name, e.g. `{"account_id": "X-Account-Id"}`."""
        by_header = {name.lower().encode("latin-1"): attr for attr, name in headers.items()}
        if len(by_header) != len(headers):
            raise ValueError(f"tenant header names must be distinct: {sorted(headers.values())}")
        return cls(by_header=by_header, max_length=max_length)

    def accept(self, value: bytes) -> str | None:
        """The id a header value carries, or None if it is not a valid one."""
        accepted = self._accepted.get(value)
        if accepted is None and len(value) <= self.max_length and _ALLOWED.fullmatch(value):
            accepted = value.decode("ascii")
            if len(self._accepted) >= _MAX_REMEMBERED_IDS:
                self._accepted.clear()
            self._accepted[value] = accepted
        return accepted


# The tenant ids of the request being handled, set once by the middleware: one context variable
# is the cheapest place for the JSON log lines to read them from, sampled or not.
_REQUEST_TENANT: ContextVar[Mapping[str, str]] = ContextVar("request_tenant")
_NO_TENANT: Mapping[str, str] = MappingProxyType({})


def set_request_tenant(ids: Mapping[str, str]) -> Token[Mapping[str, str]]:
    """Make `ids` the current request's tenant ids (for this task and the tasks it starts)."""
    return _REQUEST_TENANT.set(ids)


def reset_request_tenant(token: Token[Mapping[str, str]]) -> None:
    _REQUEST_TENANT.reset(token)


def _find_baggage_key() -> str | None:
    """The context key OTel keeps baggage under, found through its public API (None if unsure).

    `baggage.set_baggage` copies the baggage and the whole context for every value it adds; with
    the key, the tenant ids go in with one copy of each.
    """
    probe = baggage.set_baggage("probe", "value", context.Context())
    keys = list(probe)
    if len(keys) == 1 and probe[keys[0]] == {"probe": "value"}:
        return keys[0]
    return None


BAGGAGE_KEY = _find_baggage_key()


def with_tenant_baggage(
    ids: Mapping[str, str], parent: context.Context | None = None
) -> context.Context:
    """A context whose baggage carries the tenant ids.

    Logfire copies baggage onto every span and log started inside that context (threadpool,
    `asyncio.to_thread` and BackgroundTasks included, since they copy the context).
    """
    ctx = parent if parent is not None else context.get_current()
    if BAGGAGE_KEY is None:
        for name, value in ids.items():
            ctx = baggage.set_baggage(name, value, ctx)
        return ctx
    # Usually there is no baggage yet (the middleware drops incoming `baggage` headers).
    existing = context.get_value(BAGGAGE_KEY, ctx)
    merged = {**existing, **ids} if isinstance(existing, dict) and existing else dict(ids)
    return context.set_value(BAGGAGE_KEY, merged, ctx)


def current_tenant() -> Mapping[str, str]:
    """The tenant ids of the current request (empty outside a request)."""
    return _REQUEST_TENANT.get(_NO_TENANT)
