"""What a failed run answers, in one place: a model provider's failure as the status it is, anything else 500
``flow-failed``; and the one log line a failed request writes (its class and run id; the traceback only at debug).

    provider unreachable or failing (5xx)   502 provider-unavailable   Retry-After: the provider's, or 5 s
    its endpoint's circuit open             503 provider-circuit-open  Retry-After: until it is tried again
    no answer within the model's timeout    504 provider-timeout       Retry-After: 5 s
    rate limited by the provider (429)      429 provider-rate-limited  Retry-After: the provider's, or 5 s
    a request the provider refused (4xx)    500 provider-rejected      (the flow's fault: naming the error's class)
    a tool's request the egress allowlist   403 egress-refused         (naming the host and why, never the URL)
      refuses (security/egress.py)
    a tool's allowed request that failed    502 egress-failed          Retry-After: 5 s (naming the host)
    anything else                           500 flow-failed
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field

from gitops_flow.components.provider_errors import describe, translated
from gitops_flow.exceptions import (
    CircuitOpen,
    EgressFailed,
    EgressRefused,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

log = logging.getLogger("gitops_flow.server")

DEFAULT_RETRY_AFTER = 5  # seconds a 502, 504 or 429 asks a client to wait when the provider did not say
STATUSES: tuple[tuple[type[ProviderError], int, str], ...] = (  # the first class that matches wins
    (CircuitOpen, 503, "provider-circuit-open"),
    (ProviderTimeout, 504, "provider-timeout"),
    (ProviderUnavailable, 502, "provider-unavailable"),
    (ProviderRateLimited, 429, "provider-rate-limited"),
    (ProviderRejected, 500, "provider-rejected"),
)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed run as the client is told: status, code, message (with the run id), headers; and ``cause``, the
    short name of why (provider_errors.cause_of) that the log line and the canary guard record."""

    status: int
    code: str
    message: str
    cause: str
    headers: dict[str, str] = field(default_factory=dict)


def status_of(exc: ProviderError) -> tuple[int, str, dict[str, str]]:
    """The status, code and headers a provider's failure answers."""
    status, code = next(((s, c) for kind, s, c in STATUSES if isinstance(exc, kind)), (500, "provider-rejected"))
    if not exc.retryable:
        return status, code, {}
    wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER
    return status, code, {"retry-after": str(max(1, math.ceil(wait)))}


def of_provider(exc: BaseException) -> bool:
    """Whether ``exc`` is a model provider's failure (answered with its own status)."""
    return translated(exc) is not None


def has_status(exc: BaseException) -> bool:
    """Whether ``exc`` answers a status of its own (a provider's failure, a tool's refused or failed request), rather
    than a stream's error event after a 200."""
    return isinstance(exc, EgressRefused | EgressFailed) or of_provider(exc)


def failure(exc: BaseException, run_id: uuid.UUID) -> Failure:
    """What a run that raised ``exc`` answers (see the module's docstring)."""
    if isinstance(exc, EgressRefused):
        return Failure(403, "egress-refused", f"{exc} (run {run_id})", "EgressRefused")
    if isinstance(exc, EgressFailed):
        wait = {"retry-after": str(DEFAULT_RETRY_AFTER)}
        return Failure(502, "egress-failed", f"{exc} (run {run_id})", "EgressFailed", wait)
    found = translated(exc)
    if found is None:
        return Failure(500, "flow-failed", f"the flow failed while running (run {run_id})", type(exc).__name__)
    status, code, headers = status_of(found)
    return Failure(status, code, f"{found} (run {run_id})", describe(found), headers)


def reported(flow: str, run_id: uuid.UUID, exc: BaseException) -> Failure:
    """``failure``, logged: one ERROR line naming the flow, the run id and the cause; the traceback at DEBUG."""
    said = failure(exc, run_id)
    log.error("flow %s run %s failed: %s", flow, run_id, said.cause)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("flow %s run %s failed: the traceback", flow, run_id, exc_info=exc)
    return said
