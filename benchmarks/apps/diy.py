"""The do-it-yourself stack: what a team assembles from Logfire's and the instrumentator's docs.

Logfire's FastAPI instrumentation, prometheus-fastapi-instrumentator's RED metrics, the tenant
headers as baggage on every span and log, and the route logging the same event as the service.
The runner sets the sampling per mode: DIY_HEAD_SAMPLE_RATE (Logfire's head sampling), or
DIY_TAIL_SAMPLE_RATE (`SamplingOptions.level_or_duration`: every trace with an error or slower
than DIY_SLOW_SECONDS kept, that share of the others: the service's guarantee, the docs' way).
"""

import os

import logfire
from fastapi import FastAPI, HTTPException
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

TENANT_HEADERS = {
    b"x-account-id": "account_id",
    b"x-agent-instance-id": "agent_instance_id",
    b"x-session-id": "session_id",
    b"x-llm-request-id": "llm_request_id",
}


class TenantBaggage:
    """Pure ASGI: the request's tenant headers become baggage on everything it records."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ids = {
            TENANT_HEADERS[name]: value.decode("latin-1")
            for name, value in scope["headers"]
            if name in TENANT_HEADERS
        }
        with logfire.set_baggage(**ids):
            await self.app(scope, receive, send)


class Item(BaseModel):
    id: int
    name: str


ITEMS = {1: Item(id=1, name="hammer"), 2: Item(id=2, name="screwdriver")}

if "DIY_TAIL_SAMPLE_RATE" in os.environ:
    sampling = logfire.SamplingOptions.level_or_duration(
        level_threshold="error",
        duration_threshold=float(os.environ["DIY_SLOW_SECONDS"]),
        background_rate=float(os.environ["DIY_TAIL_SAMPLE_RATE"]),
    )
else:
    sampling = logfire.SamplingOptions(head=float(os.environ["DIY_HEAD_SAMPLE_RATE"]))
logfire.configure(send_to_logfire="if-token-present", service_name="bench-diy", sampling=sampling)
app = FastAPI()
app.add_middleware(TenantBaggage)
logfire.instrument_fastapi(app)
Instrumentator().instrument(app).expose(app)


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Item:
    item = ITEMS.get(item_id)
    if item is None:
        raise HTTPException(404, detail="item not found")
    logfire.info("item.fetched", item_id=item_id)
    return item


@app.get("/deep")
async def deep() -> dict[str, int]:
    with logfire.span("deep.load"):
        with logfire.span("deep.compute"):
            logfire.info("deep.computed", step=1)
        with logfire.span("deep.render"):
            logfire.info("deep.rendered", step=2)
    return {"steps": 2}
