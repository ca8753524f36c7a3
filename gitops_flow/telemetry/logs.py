"""Structured logs: one JSON object a line, or text, and every line written while a request is handled carries its
run id, flow, version and ref (and its trace and span ids when it is traced).

The formatters only read and shape records; the server's secret scrubber (secretrefs.RedactSecrets, attached to
every handler by app.py) has already taken every known secret out of a record's message, arguments and traceback
by the time a formatter sees it, and a formatter uses the traceback text the scrubber left (``exc_text``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal, TextIO

import orjson

from gitops_flow.telemetry.context import current

LogFormat = Literal["text", "json"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", [run_id, flow, version, ref, trace_id, span_id], [exception]}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = current()
        if context is not None:
            line.update(context.fields())
        trace = _traceback(self, record)
        if trace:
            line["exception"] = trace
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The text lines `serve` always wrote, with ``[run_id=… flow=… version=… ref=…]`` at the end of a request's."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = current()
        if context is None:
            return text
        fields = context.fields()
        if "version" in fields:
            fields["version"] = fields["version"][:12]
        fields.pop("span_id", None)
        if not fields:
            return text
        suffix = " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        head, sep, rest = text.partition("\n")  # after the message, before a traceback
        return head + suffix + sep + rest


def formatter(kind: LogFormat) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()


def configure(kind: LogFormat = "text", level: LogLevel = "info", stream: TextIO | None = None) -> logging.Handler:
    """One handler on the root logger, writing ``kind`` lines to ``stream`` (stderr) from ``level`` up; every other
    logger (uvicorn's too, when uvicorn is given no log config of its own) reaches it. Replaces the root's
    handlers, so calling it twice does not write each line twice."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"
