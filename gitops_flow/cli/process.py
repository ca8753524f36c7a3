"""What a server process sets for the whole process, and only its entry point (workers.py) sets: warnings, log
filters, the garbage collector's freeze."""

from __future__ import annotations

import gc
import logging

from gitops_flow.config import Settings
from gitops_flow.observability.telemetry.logs import WithheldMessages
from gitops_flow.security.references import RedactSecrets, Scrubber
from gitops_flow.server import langserve_api

_LOGGERS = ("gitops_flow.server", "gitops_flow.reconcile", "uvicorn.error")  # whose records may quote a secret


def set_up(settings: Settings, scrubber: Scrubber) -> None:
    """Quiet LangChain's deprecations that LangServe's clients set off, and put ``log_filters`` on the logs (call it
    once logging is configured: the handlers configured then get them)."""
    langserve_api.quiet_deprecations()
    add_log_filters(log_filters(settings, scrubber))


def add_log_filters(filters: list[logging.Filter]) -> None:
    """Put ``filters`` on every handler configured now and on the loggers whose records may quote a secret (which
    handlers added later see too)."""
    for log_filter in filters:
        for handler in _log_handlers():
            handler.addFilter(log_filter)
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(log_filter)


def remove_log_filters(filters: list[logging.Filter]) -> None:
    """Take ``filters`` off again, wherever ``add_log_filters`` put them."""
    for log_filter in filters:
        for handler in _log_handlers():
            handler.removeFilter(log_filter)
        for name in _LOGGERS:
            logging.getLogger(name).removeFilter(log_filter)


def log_filters(settings: Settings, scrubber: Scrubber) -> list[logging.Filter]:
    """What every log record of a server goes through: the scrubber, and the withholding of request text."""
    redact = RedactSecrets(scrubber)
    return [redact] if settings.log_request_text else [redact, WithheldMessages()]


def _log_handlers() -> list[logging.Handler]:
    """Every handler configured now (the root's, uvicorn's, ...): a filter on a handler sees the records of every
    logger that reaches it, where a logger's own filter sees only the records logged on that very logger."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found = [h for logger in loggers if isinstance(logger, logging.Logger) for h in logger.handlers]
    return list({id(h): h for h in found}.values())


def settle_heap() -> None:
    """After a deploy: collect once, then freeze what is left (imports, the built flows) out of the garbage
    collector's sight. Under load a full collection otherwise walks that whole heap every few hundred requests
    (what that cost is in docs/benchmarks.md); frozen objects are still freed by reference counting, and the next
    deploy unfreezes them, so a retired version's cycles are collected then."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
