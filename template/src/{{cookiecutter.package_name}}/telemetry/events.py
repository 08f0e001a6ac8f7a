"""The service's own events: a `category.action` name and fields, one call per event.

    events = EventLog(__name__)
    events.info("item.fetched", item_id=item_id)

An event reaches the same places, in the same shape, as the standard-logging record
`logging.getLogger(__name__).info("item.fetched", extra={"item_id": item_id})`: a JSON line on
stdout in production, a Logfire log in a traced request (the direct path's log span, see
spans.py), the console in development. What it skips is the record: a `LogRecord` with its
caller lookup and handler chain cost more than the rest of the request's telemetry together
(bench/run.py, `production-quiet`), and the example endpoint logs once per request.

Standard logging{% if cookiecutter.with_loguru %} and loguru{% endif %} stay the way out for libraries and anything else. An event
takes that way too, as an ordinary record, whenever writing it directly could differ from it:
outside a request, when Logfire's own path handles the request, or when someone added a handler
or filter (to the root logger or on the way to it), so nothing listening there misses an event.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, cast

from opentelemetry import trace
from opentelemetry.trace import TraceFlags

from .json_lines import RECORD_ATTRIBUTES
from .logs import event_route
from .spans import LOG_SPAN_ATTRIBUTES, PLAIN_VALUES
from .tenant import current_tenant

if TYPE_CHECKING:
    from collections.abc import Mapping

# Field names an event leaves to a record: a record's own attributes and Logfire's on a log.
_RECORD_ONLY_NAMES = RECORD_ATTRIBUTES | LOG_SPAN_ATTRIBUTES
_LEVEL_NAMES = {level: logging.getLevelName(level).lower() for level in (10, 20, 30, 40, 50)}
_ROOT = logging.getLogger()


class EventLog:
    """Events from one module (its `__name__`, as the logger name everywhere they appear)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger = logging.getLogger(name)

    def debug(self, event: str, /, **fields: object) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, /, **fields: object) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, /, **fields: object) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, /, **fields: object) -> None:
        self._emit(logging.ERROR, event, fields)

    def _emit(self, level: int, event: str, fields: dict[str, object]) -> None:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        route = event_route()
        span_context = trace.get_current_span().get_span_context()
        sampled = bool(span_context.trace_flags & TraceFlags.SAMPLED)
        if (
            route is None
            or not span_context.is_valid
            or (sampled and route.request_spans is None)
            or _ROOT.handlers != route.handlers
            or not self._nothing_else_listens(level, route.json_lines)
            or not fields.keys().isdisjoint(_RECORD_ONLY_NAMES)
            or (sampled and not PLAIN_VALUES.issuperset(map(type, fields.values())))
        ):
            # As a record: Logfire's handler takes it (outside a request, Logfire's path, fields
            # it must serialise or names it sets itself), and so does anything else listening. A
            # field named like a record attribute raises the same KeyError as in standard logging.
            logger.log(level, event, extra=fields or None, stacklevel=3)
            return
        created = time.time()
        if route.json_lines is not None:
            level_name = _LEVEL_NAMES[level]
            tenant = current_tenant()
            route.json_lines.write_event(
                (created, level_name, self.name, event, fields, span_context, tenant)
            )
        if sampled and route.request_spans is not None:
            caller = sys._getframe(2)  # the caller's location, as a record has it
            code = caller.f_code
            # False only below Logfire's minimum level, where its handler would drop it too.
            route.request_spans.log_event(
                level,
                event,
                cast("Mapping[str, str | int | float | bool]", fields),  # plain: checked above
                parent=span_context,
                logger=self.name,
                created=created,
                filepath=code.co_filename,
                lineno=caller.f_lineno,
                function=code.co_name,
            )

    def _nothing_else_listens(self, level: int, json_lines: logging.Handler | None) -> bool:
        """No handler or filter between this logger and the root, and the JSON handler takes it."""
        logger: logging.Logger | None = self._logger
        while logger is not None and logger is not _ROOT:
            if logger.handlers or logger.filters or not logger.propagate:
                return False
            logger = logger.parent
        if _ROOT.filters:
            return False
        return json_lines is None or (not json_lines.filters and level >= json_lines.level)
