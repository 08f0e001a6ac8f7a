"""LOGFIRE_TOKEN authenticates the export and appears nowhere else.

The booted service gets a (fake) write token and a Logfire base URL pointing at the local OTLP
receiver, so the token path really runs without reaching Logfire's cloud: spans must arrive with
the token in the Authorization header, and the token must not appear in the process output, any
span, resource attribute, or the /metrics page. Client credentials sent with the requests
(Authorization, Cookie, a query-string token) must not appear either.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from helpers.otlp_receiver import OtlpReceiver
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv

TOKEN = "pylf_v1_us_FakeWriteTokenForTheSecrecyTest0123456789"
CLIENT_SECRETS = {
    "Authorization": "Bearer client-bearer-4f1c",
    "Cookie": "session=client-cookie-9a2e",
}
QUERY_SECRET = "query-token-77d0"
TENANT = {"X-Account-Id": "acct-1", "X-Session-Id": "sess-1"}


@pytest.mark.xdist_group("env-copier-default")
def test_logfire_token_is_only_used_to_authenticate_the_export(
    project_env: Callable[[str, str], ProjectEnv],
) -> None:
    project = project_env("copier", "default")
    with OtlpReceiver() as receiver:
        port = free_port()
        env = service_env(
            project.env(),
            port=port,
            LOGFIRE_TOKEN=TOKEN,
            LOGFIRE_BASE_URL=receiver.endpoint,
        )
        with ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port) as service:
            service.wait_ready()
            headers = {**TENANT, **CLIENT_SECRETS}
            response = httpx.get(f"{service.url}/items/1?token={QUERY_SECRET}", headers=headers, timeout=10)
            assert response.status_code == 200
            metrics_page = httpx.get(f"{service.url}/metrics", timeout=10).text
            receiver.wait_for(lambda spans: any(s.kind == "SERVER" for s in spans), timeout=30)
            stopped = service.stop()

    # The token path was taken: the export authenticated with the token, at the configured URL.
    trace_posts = [headers for path, headers in receiver.requests if path == "/v1/traces"]
    assert trace_posts, receiver.requests
    assert all(TOKEN in headers.get("authorization", "") for headers in trace_posts)

    everything_emitted = "\n".join(
        [
            stopped.stdout,
            stopped.stderr,
            metrics_page,
            *(repr(span) for span in receiver.spans),
        ]
    )
    for secret in (TOKEN, QUERY_SECRET, *CLIENT_SECRETS.values()):
        assert secret not in everything_emitted, f"{secret!r} leaked"
