"""What a purpose-built span path would cost: evidence for the next step of issue 7.

    uv run --with opentelemetry-exporter-otlp-proto-common --with opentelemetry-sdk \\
        python benchmarks/span_path_probe.py [--out results.json]

The benchmark notes conclude that only a span path of the service's own could meet the
every-request-traced target. That path would build the request's SERVER span and its log record
as plain records, and encode OTLP protobuf directly. This probe measures what those two steps cost
per request and compares them with what the same two spans cost in the stock OpenTelemetry SDK:
span objects plus `encode_spans`. Logfire's processing comes on top of the SDK figures.

It is a measurement, not a component: nothing in the template uses it. The hand-written encoder
caches encoded attributes by (key, type, value), bounded, because a service repeats the same
pairs (methods, routes, tenant ids, span types) in span after span. To show that the
hand-written bytes are real OTLP, it decodes them with opentelemetry-proto and compares every
field with the spans the SDK built from the same data, before timing anything.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

SERVICE = {
    "service.name": "my-service",
    "service.version": "0.1.0",
    "deployment.environment.name": "production",
}
TENANT = {
    "account_id": "acct-bench",
    "agent_instance_id": "agent-bench",
    "session_id": "sess-bench",
    "llm_request_id": "llmreq-bench",
}
SCOPE = "my_service"


# --- Hand-written OTLP protobuf (opentelemetry/proto/trace/v1/trace.proto field numbers) --------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag byte(s), length, payload."""
    return tag + _varint(len(payload)) + payload


_KEYS: dict[str, bytes] = {}
# Encoded attributes by (key, value): a service sends the same few thousand pairs (methods,
# routes, tenant ids, span types) over and over. Bounded, so unique values cannot grow it.
_PAIRS: dict[tuple[str, type, object], bytes] = {}
_MAX_PAIRS = 4096


def _attribute(key: str, value: object) -> bytes:
    pair = (key, type(value), value)  # the type too: 1 == True, but they encode differently
    encoded = _PAIRS.get(pair)
    if encoded is None:
        encoded = _encode_attribute(key, value)
        if len(_PAIRS) < _MAX_PAIRS:
            _PAIRS[pair] = encoded
    return encoded


def _encode_attribute(key: str, value: object) -> bytes:
    """One `KeyValue` (Span.attributes is field 9; AnyValue: string 1, bool 2, int 3, double 4)."""
    prefix = _KEYS.get(key)
    if prefix is None:
        prefix = _KEYS[key] = _field(b"\x0a", key.encode())
    if type(value) is str:
        any_value = _field(b"\x0a", value.encode())
    elif type(value) is bool:
        any_value = b"\x10\x01" if value else b"\x10\x00"
    elif type(value) is int:
        any_value = b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    else:
        any_value = b"\x21" + struct.pack("<d", float(value))  # type: ignore[arg-type]
    return _field(b"\x4a", prefix + _field(b"\x12", any_value))


def encode_span(record: tuple[Any, ...]) -> bytes:
    trace_id, span_id, parent_id, name, kind, start, end, attributes, error = record
    body = b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big")
    if parent_id:
        body += b"\x22\x08" + parent_id.to_bytes(8, "big")
    body += _field(b"\x2a", name.encode()) + b"\x30" + _varint(kind)
    body += b"\x39" + struct.pack("<Q", start) + b"\x41" + struct.pack("<Q", end)
    body += b"".join([_attribute(key, value) for key, value in attributes.items()])
    if error:
        body += _field(b"\x7a", b"\x18\x02")  # Status.code = ERROR
    body += b"\x85\x01" + struct.pack("<I", 0x101 if parent_id else 0x100)  # flags: has/is remote
    return _field(b"\x12", body)  # ScopeSpans.spans


def encode_request(records: list[tuple[Any, ...]]) -> bytes:
    """A whole `ExportTraceServiceRequest`: one resource, one scope, the records as spans."""
    resource = _field(b"\x0a", b"".join([_resource_attribute(k, v) for k, v in SERVICE.items()]))
    scope = _field(b"\x0a", _field(b"\x0a", SCOPE.encode()))
    scope_spans = _field(b"\x12", scope + b"".join([encode_span(r) for r in records]))
    return _field(b"\x0a", resource + scope_spans)


def _resource_attribute(key: str, value: str) -> bytes:
    """A string `KeyValue` as Resource.attributes (field 1)."""
    return _field(b"\x0a", _field(b"\x0a", key.encode()) + _field(b"\x12", _field(b"\x0a", value.encode())))


# --- The request's two spans, as the middleware and the log handler would record them ---------


def request_records(rng: random.Random) -> list[tuple[Any, ...]]:
    trace_id, server_id, log_id = rng.getrandbits(128), rng.getrandbits(64), rng.getrandbits(64)
    start = time.time_ns()
    server = {
        "logfire.span_type": "span",
        "logfire.msg": "GET /items/{item_id}",
        "http.request.method": "GET",
        "http.route": "/items/{item_id}",
        "url.path": "/items/1",
        "url.scheme": "http",
        "http.response.status_code": 200,
        **TENANT,
    }
    log = {
        "logfire.span_type": "log",
        "logfire.level_num": 9,
        "logfire.msg_template": "item.fetched",
        "logfire.msg": "item.fetched",
        "code.filepath": "src/my_service/api/items.py",
        "code.lineno": 32,
        "code.function": "get_item",
        "item_id": 1,
        **TENANT,
    }
    return [
        (trace_id, log_id, server_id, "item.fetched", 1, start + 1000, start + 1000, log, False),
        (trace_id, server_id, 0, "GET /items/{item_id}", 2, start, start + 50_000, server, False),
    ]


def sdk_spans(records: list[tuple[Any, ...]]) -> list[ReadableSpan]:
    """The same records as the SDK's finished spans (what its exporters receive)."""
    resource = Resource.create(SERVICE)
    scope = InstrumentationScope(SCOPE)
    spans = []
    for trace_id, span_id, parent_id, name, kind, start, end, attributes, _ in records:
        parent = SpanContext(trace_id, parent_id, is_remote=False) if parent_id else None
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
        spans.append(
            ReadableSpan(
                name=name,
                context=context,
                parent=parent,
                resource=resource,
                attributes=attributes,
                kind=SpanKind(kind - 1),
                start_time=start,
                end_time=end,
                instrumentation_scope=scope,
            )
        )
    return spans


def check_same_spans(records: list[tuple[Any, ...]]) -> None:
    """The hand-written bytes decode to what the SDK's encoder produces for the same spans."""
    mine = ExportTraceServiceRequest.FromString(encode_request(records))
    theirs = ExportTraceServiceRequest.FromString(encode_spans(sdk_spans(records)).SerializeToString())
    [mine_spans] = [list(s.spans) for r in mine.resource_spans for s in r.scope_spans]
    [their_spans] = [list(s.spans) for r in theirs.resource_spans for s in r.scope_spans]
    assert len(mine_spans) == len(their_spans) == len(records)
    for a, b in zip(mine_spans, their_spans, strict=True):
        for name in ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_unix_nano"):
            assert getattr(a, name) == getattr(b, name), name
        assert a.end_time_unix_nano == b.end_time_unix_nano
        assert list(a.attributes) == list(b.attributes), a.name
    [resource] = [r.resource for r in mine.resource_spans]
    assert {kv.key: kv.value.string_value for kv in resource.attributes}.items() >= SERVICE.items()


def per_request_us(work: Any, requests: int) -> float:
    """Best of 5 runs, CPU time per request."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        work(requests)
        best = min(best, (time.process_time() - started) / requests)
    return best * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    rng = random.Random(7)
    check_same_spans(request_records(rng))

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    finished = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(SERVICE))
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer(SCOPE)
    batch = 32  # requests per export batch: 64 spans, the service's OTEL_BSP_MAX_EXPORT_BATCH_SIZE

    def own_path(requests: int) -> None:
        for _ in range(requests // batch):
            records = [r for _ in range(batch) for r in request_records(rng)]
            encode_request(records)

    def sdk_path(requests: int) -> None:
        for _ in range(requests // batch):
            for _ in range(batch):
                for _, _, _, name, kind, _, _, attributes, _ in request_records(rng):
                    tracer.start_span(name, kind=SpanKind(kind - 1), attributes=attributes).end()
            encode_spans(finished.get_finished_spans()).SerializeToString()
            finished.clear()

    def records_only(requests: int) -> None:
        for _ in range(requests):
            request_records(rng)

    requests = 3200
    figures = {
        "records_only_us": per_request_us(records_only, requests),
        "own_path_us": per_request_us(own_path, requests),
        "sdk_path_us": per_request_us(sdk_path, requests),
    }
    figures["python"] = sys.version.split()[0]
    print(f"building the two records alone:           {figures['records_only_us']:6.1f} us per request")
    print(f"records + hand-written OTLP (batches of 64): {figures['own_path_us']:6.1f} us per request")
    print(f"SDK spans + encode_spans (batches of 64):    {figures['sdk_path_us']:6.1f} us per request")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
