"""Probes for the orchestrator: liveness (`/healthz`) and readiness (`/readyz`).

Liveness asks nothing outside the process: a database outage must not get every pod restarted.
Readiness runs every dependency check in `app.state.readiness_checks` (name -> an async function
that raises when the dependency cannot serve) at once, each bounded by READINESS_TIMEOUT_SECONDS,
and answers 503 naming the checks that failed: the pod leaves the Service's endpoints until they
pass again, and its traffic goes to pods that can serve it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from prometheus_client import Counter
from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

ReadinessCheck = Callable[[], Awaitable[object]]
CheckResult = Literal["ok", "failed", "timeout"]

# Every probe's outcome per check: the dependency alerts (deploy/prometheus/rules.yml) read it.
READINESS_CHECKS = Counter(
    "readiness_checks",
    "Dependency checks run by /readyz, by check and result.",
    ["check", "result"],
)


class Readiness(BaseModel):
    status: Literal["ready", "starting", "unavailable"]
    checks: dict[str, CheckResult] = Field(default_factory=dict)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Readiness}})
async def readyz(request: Request, response: Response) -> Readiness:
    """Startup has finished, shutdown has not begun and every dependency answers: send traffic."""
    if not request.app.state.ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Readiness(status="starting")
    checks: Mapping[str, ReadinessCheck] = request.app.state.readiness_checks
    seconds: float = request.app.state.settings.readiness_timeout_seconds
    results = await asyncio.gather(
        *(run_check(name, check, seconds) for name, check in checks.items())
    )
    outcome = dict(zip(checks, results, strict=True))
    for name, result in outcome.items():
        READINESS_CHECKS.labels(name, result).inc()
    if any(result != "ok" for result in results):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Readiness(status="unavailable", checks=outcome)
    return Readiness(status="ready", checks=outcome)


async def run_check(name: str, check: ReadinessCheck, seconds: float) -> CheckResult:
    """One check's outcome. Why it failed goes to the log, not to the (unauthenticated) probe."""
    try:
        async with asyncio.timeout(seconds):
            await check()
    except TimeoutError:
        logger.warning(
            "readiness.check_timed_out", extra={"check": name, "timeout_seconds": seconds}
        )
        return "timeout"
    except Exception as error:  # noqa: BLE001 - whatever the dependency raised, it cannot serve
        reason = f"{type(error).__name__}: {error}"
        logger.warning("readiness.check_failed", extra={"check": name, "error": reason})
        return "failed"
    return "ok"
