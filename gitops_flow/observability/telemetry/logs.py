"""Structured logs: one JSON object a line, or text, and every line written while a request is handled carries its
run id, flow, version and ref (and its trace and span ids when it is traced).

The formatters only read and shape records; the server's secret scrubber (secretrefs.RedactSecrets, attached to
every handler by app.py) has already taken every known secret out of a record's message, arguments and traceback
by the time a formatter sees it, and a formatter uses the traceback text the scrubber left (``exc_text``).

An exception's message may quote what a request sent (a parser quoting the text it could not read, a library quoting
its input), which a log is no place for. Unless the operator asks for request text (GITOPS_FLOW_LOG_REQUEST_TEXT),
``WithheldMessages`` replaces every traceback by one that names each exception's class and where it was raised, and
never its message; and it drops the DEBUG records of the provider clients (openai, anthropic, httpx, ...), which
quote each request's options, its messages among them. A failed run writes one ERROR line naming its cause and run
id, and its traceback only as a DEBUG line of its own (server/failures.py).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Literal, TextIO

import orjson

from gitops_flow.observability.telemetry.context import current

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


WITHHELD = "(message withheld: it may quote the request; GITOPS_FLOW_LOG_REQUEST_TEXT=true shows it)"
_MAX_CHAIN = 10  # exceptions of one chain shown at most


# the libraries that send requests to providers and tools, whose DEBUG records quote what they send
CLIENT_LOGGERS = frozenset({"openai", "anthropic", "httpx", "httpcore", "groq", "mistralai", "ollama", "botocore"})


class WithheldMessages(logging.Filter):
    """A handler's filter: a record's traceback without any exception's message, and no provider client's DEBUG
    record (see the module's docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO and record.name.partition(".")[0] in CLIENT_LOGGERS:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = withheld(record.exc_info[1])
        return True


def withheld(exc: BaseException) -> str:
    """``exc``'s traceback, and its causes' and contexts', as Python prints them but with each message withheld."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < _MAX_CHAIN and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts: list[str] = []
    for index, item in enumerate(reversed(chain)):
        if index:
            parts.append("\nThe above exception led to the following one:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        kind = type(item)
        module = "" if kind.__module__ == "builtins" else kind.__module__ + "."
        parts.append(f"{module}{kind.__qualname__}: {WITHHELD}\n")
    return "".join(parts).rstrip("\n")


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
