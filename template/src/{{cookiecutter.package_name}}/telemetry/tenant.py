"""Tenant context: which request headers carry the tenant ids, and which values are accepted.

Policy for invalid values (wrong characters, empty or too long): the value is DROPPED, the request
goes on without that attribute, and `tenant_header_rejections_total{header=...}` counts it. Tenant
headers are context for telemetry, not authentication, so a bad one must not fail the request; but
it never reaches a span, a log or a metric label either.

Who may set them (TENANT_TRUSTED_CALLERS): an internal service trusts its callers (`*`, the
default: only other services reach it); an edge service trusts its gateway's networks only, and
the gateway must overwrite or strip the headers its own clients send. Tenant headers from any other
caller are removed unread. The W3C `baggage` header is never read from anyone.

Accepted ids travel as OpenTelemetry baggage (the middleware sets it with `logfire.set_baggage`):
Logfire copies baggage onto every span and log started inside the request, and the JSON log lines
read it from there, in the thread pool and background tasks too (they copy the context).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address

from opentelemetry import baggage

# Attribute names on spans, logs and JSON lines (and the baggage keys that carry them).
TENANT_ATTRIBUTES = ("account_id", "agent_instance_id", "session_id", "llm_request_id")

# Letters, digits and `._:-`: enough for UUIDs, ULIDs and prefixed ids, nothing that can break a
# log line, a label or a query.
_ALLOWED = re.compile(rb"[A-Za-z0-9._:-]+")


@dataclass(frozen=True, slots=True)
class TenantHeaders:
    """Maps lower-cased ASCII header names (as ASGI delivers them) to tenant attribute names."""

    by_header: Mapping[bytes, str]
    max_length: int
    # None: any caller may set tenant ids; else only callers from these networks.
    trusted_callers: Sequence[IPv4Network | IPv6Network] | None = None

    @classmethod
    def from_names(
        cls,
        headers: Mapping[str, str],
        max_length: int,
        trusted_callers: Sequence[IPv4Network | IPv6Network] | None = None,
    ) -> TenantHeaders:
        """`headers` maps attribute name -> header name, e.g. `{"account_id": "X-Account-Id"}`."""
        by_header = {name.lower().encode("latin-1"): attr for attr, name in headers.items()}
        if len(by_header) != len(headers):
            raise ValueError(f"tenant header names must be distinct: {sorted(headers.values())}")
        return cls(by_header=by_header, max_length=max_length, trusted_callers=trusted_callers)

    def trusts(self, client: tuple[str, int] | None) -> bool:
        """Whether the caller (the ASGI scope's `client`) may set tenant ids."""
        if self.trusted_callers is None:
            return True
        if client is None:
            return False
        try:
            address = ip_address(client[0])
        except ValueError:  # not an IP address (a Unix socket, a test client)
            return False
        # A server listening on `::` sees IPv4 callers as ::ffff:a.b.c.d.
        address = getattr(address, "ipv4_mapped", None) or address
        return any(address in network for network in self.trusted_callers)

    def accept(self, value: bytes) -> str | None:
        """The id a header value carries, or None if it is not a valid one."""
        return value.decode("ascii") if _is_valid(value, self.max_length) else None


def is_tenant_id(value: str, max_length: int) -> bool:
    """Whether a request could carry `value` as a tenant id (for ids given in settings)."""
    return _is_valid(value.encode(), max_length)


def _is_valid(value: bytes, max_length: int) -> bool:
    return len(value) <= max_length and _ALLOWED.fullmatch(value) is not None


def current_tenant() -> dict[str, str]:
    """The tenant ids of the request being handled (empty outside a request)."""
    ids = baggage.get_all()
    return {name: str(ids[name]) for name in TENANT_ATTRIBUTES if name in ids}
