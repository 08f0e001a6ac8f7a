"""The generated service, served as its console script serves it, plus the benchmark's deep route.

The runner sets SERVICE_PACKAGE (the service's import package) and the service's own settings
(ENVIRONMENT, HOST, PORT, sampling). `/deep` is a handler doing a little work the way the
service's README shows: three nested `logfire.span`s and two std-logging events.
"""

import importlib
import logging
import os

import logfire
import uvicorn

package = os.environ["SERVICE_PACKAGE"]
create_app = importlib.import_module(f"{package}.app").create_app
settings = importlib.import_module(f"{package}.settings").Settings()
logger = logging.getLogger("bench.deep")


async def deep() -> dict[str, int]:
    with logfire.span("deep.load"):
        with logfire.span("deep.compute"):
            logger.info("deep.computed", extra={"step": 1})
        with logfire.span("deep.render"):
            logger.info("deep.rendered", extra={"step": 2})
    return {"steps": 2}


app = create_app(settings)
app.add_api_route("/deep", deep)

if __name__ == "__main__":
    # The console script's options (the service's __main__.py).
    uvicorn.run(app, host=settings.host, port=settings.port, workers=1, log_config=None, access_log=False)
