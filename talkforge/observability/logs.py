"""Log lines as JSON objects (``LOG_FORMAT=json``) and the id of the request each line belongs to.

The request id comes from a context variable the middleware sets for the request: asgiref copies the
context into the thread a sync view runs in, so every line logged while serving a request carries it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# An id a proxy in front already gave the request is kept when it looks like one (no log injection).
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_for(incoming: str | None) -> str:
    """The request's id: the proxy's ``X-Request-ID`` when it is sane, else a new one."""
    if incoming and _GOOD_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` ("" outside a request) for the formatters. Django's own request log
    (``django.request``, "Not Found: …") is written after the middleware has finished, so it is taken from
    the request the record carries."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or getattr(
            getattr(record, "request", None), "request_id", ""
        )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id when serving a
    request, exception (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "") or request_id_var.get()  # set by RequestIdFilter
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
