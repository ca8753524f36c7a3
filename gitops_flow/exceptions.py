"""The whole error hierarchy of gitops-flow.

    GitOpsFlowError                 base; ``retryable`` says whether trying again can help
    ├── FlowError                   the flow document itself is wrong; retrying won't help
    │   ├── SpecError               carries every Problem found, not just the first
    │   └── BuildError              component not allowlisted, bad params, construction failed
    ├── ConfigError                 operator configuration (components file, settings) is wrong
    ├── SourceError  (retryable)    clone/fetch/auth/network; messages never carry credentials
    ├── StoreError   (retryable)    state backend unreachable or conflicting
    ├── Busy         (retryable)    the server is rebuilding as many old versions as it allows; try again soon
    ├── PinsDisabled                this server takes no explicit version pins
    ├── UsageError                  the command line names what is not there, or the server it asks refuses (exit 2)
    ├── Limited      (retryable)    a flow's limit refuses the request now; ``retry_after`` says when to come back
    ├── BadInput                    a request's input does not match the flow's input schema
    │   └── TurnTooLarge            a conversational request's text is larger than a kept turn
    ├── WebhookError                a webhook delivery the server will not act on
    │   ├── SignatureMismatch       missing or wrong signature (X-Hub-Signature-256, X-Gitlab-Token, ...)
    │   └── MalformedDelivery       signed, but not a delivery the Git host would send
    ├── HostError    (retryable)    an outbound call (the Git host's API, a notification receiver) did not succeed
    │   ├── HostUnavailable (retryable)  unreachable, timed out, 5xx, rate limited: trying later may work
    │   └── HostRejected            the host refused the request (401, 403, 404, 422): retrying won't help
    ├── ProviderError               a model provider's call failed (components/provider_errors.py translates them)
    │   ├── ProviderUnavailable (retryable)  unreachable, or it failed (5xx): trying later may work
    │   │   ├── ProviderTimeout (retryable)  it did not answer in the model's ``timeout``
    │   │   └── CircuitOpen (retryable)      its endpoint failed so often lately that calls are refused for now
    │   ├── ProviderRateLimited (retryable)  it limited the rate (429); ``retry_after`` is its own
    │   └── ProviderRejected        it refused the request the flow made (unknown model, bad params)
    └── LookupFailed                something named by a request does not exist
        ├── UnknownFlow
        ├── UnknownVersion
        │   └── NotServable         the version is known, but failed validation or was retired
        ├── NothingServable         no ref of a flow's route can serve it now (503, Retry-After)
        └── NoReadyVersion          nothing can be served yet (503 until a good version is loaded)

    ToolError                       a tool's outbound request failed while a flow ran: the run's failure
    ├── EgressRefused               the egress allowlist refuses it (security/egress.py)
    └── EgressFailed (retryable)    an allowed request that failed: unreachable, timed out, an error status

Domain code raises these; only the composition roots (``cli``, ``app``) map them to exit codes and HTTP statuses.
A ToolError is no GitOpsFlowError: it is a flow's run failing, like any exception a node raises (a canary's is
retried on its primary and counted), answered by server/failures.py, not one of the server's own refusals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from gitops_flow.problems import Problem


class GitOpsFlowError(Exception):
    """Base class of every error gitops-flow raises on purpose."""

    retryable: ClassVar[bool] = False


class UsageError(GitOpsFlowError):
    """The command line names something that is not there, or the running server it asks cannot or will not answer."""


class FlowError(GitOpsFlowError):
    """A flow document is wrong at this commit; the same input will fail the same way."""


class SpecError(FlowError):
    """A flow document failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0].describe() if self.problems else "invalid flow document"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more)


class BuildError(FlowError):
    """A node could not be turned into a runnable: unknown component, bad params or a failing constructor."""

    def __init__(self, message: str, *, path: str = "$", code: str = "build-failed") -> None:
        super().__init__(message)
        self.path = path
        self.code = code


class ConfigError(GitOpsFlowError):
    """The operator's configuration (settings, components file) is wrong."""


class SourceError(GitOpsFlowError):
    """Reading the Git source failed; the message has been redacted of credentials."""

    retryable = True


class StoreError(GitOpsFlowError):
    """The state backend is unreachable or refused a write."""

    retryable = True


class Busy(GitOpsFlowError):
    """The server is already rebuilding as many old versions as it allows at once; the request may be retried."""

    retryable = True


class PinsDisabled(GitOpsFlowError):
    """The operator turned explicit version pins off."""


class Limited(GitOpsFlowError):
    """A limit of the routing file refuses a request: too many requests or runs at once, or the token budget is
    spent. ``code`` names the limit (rate-limited, too-many-runs, token-budget-exhausted), ``retry_after`` the
    seconds after which trying again can succeed."""

    retryable = True

    def __init__(self, message: str, *, code: str, retry_after: float) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class BadInput(GitOpsFlowError):
    """An input does not match the flow's input schema; the message names the fields, never their values."""


class TurnTooLarge(BadInput):
    """A conversational flow's input text is larger than the server keeps as one turn of a conversation."""


class TooManyItems(BadInput):
    """A Map node was given a longer list than its max_items, and was not told to truncate it."""


class WebhookError(GitOpsFlowError):
    """A webhook delivery the server will not act on; it changes nothing."""


class SignatureMismatch(WebhookError):
    """The delivery's signature is missing or does not match its body under the configured secret."""


class MalformedDelivery(WebhookError):
    """The delivery is signed but lacks what GitHub always sends (event, delivery id, a JSON object body)."""


class HostError(GitOpsFlowError):
    """An outbound call to the Git host's API or a notification receiver did not succeed; the message names the
    host and the reason, never a token, a signing secret or a receiver's secret URL path."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HostUnavailable(HostError):
    """The host could not be reached, timed out, failed (5xx) or limited the rate; ``retry_after`` is how long it
    asked to wait, in seconds, when it said."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class HostRejected(HostError):
    """The host answered that the request is wrong or not allowed (a bad token, no access, invalid fields)."""

    retryable = False


class ProviderError(GitOpsFlowError):
    """A model provider's call failed. ``provider`` names the provider (``openai``, ``anthropic``, or the client
    library's name when it cannot be told), ``kind`` the client library's class of the error (``APIConnectionError``,
    ``NotFoundError``), ``status`` the provider's HTTP status when it answered and ``code`` its error code
    (``model_not_found``) when it is a plain identifier; the message never quotes the provider's answer or the
    request (either may hold what a user wrote)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        kind: str,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.code = code


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, or it failed (5xx); ``retry_after`` is how long it asked to wait, if it
    said."""

    retryable = True


class ProviderTimeout(ProviderUnavailable):
    """The provider did not answer within the model's ``timeout`` (its retries included)."""


class CircuitOpen(ProviderUnavailable):
    """The provider's endpoint failed so often lately that calls to it are refused at once, without trying, until
    ``retry_after`` seconds have passed (components/breaker.py)."""


class ProviderRateLimited(ProviderError):
    """The provider limited the rate (429); ``retry_after`` is the wait it asked for, when it said."""

    retryable = True


class ProviderRejected(ProviderError):
    """The provider refused the request the flow made (an unknown model, a bad parameter, a key it does not take):
    the flow at this version is wrong for the provider, and retrying won't help."""


class LookupFailed(GitOpsFlowError):
    """Something a request names does not exist."""


class UnknownFlow(LookupFailed):
    """No live version serves a flow of that name."""


class UnknownVersion(LookupFailed):
    """No version matches the requested sha, short sha or ref."""


class NotServable(UnknownVersion):
    """The version is known but cannot serve: it failed validation, or it was retired to free memory."""


class NotAbortable(GitOpsFlowError):
    """An operator asked to abort a canary that serves its primary's build: it would only move its weight to that
    same build (409)."""


class NothingServable(LookupFailed):
    """No ref of a flow's route can serve it now (each aborted, yanked, failed or missing): 503 until one can."""

    retryable = True


class NoReadyVersion(LookupFailed):
    """No good version has been loaded yet, so there is nothing to serve."""


class UnknownRun(LookupFailed):
    """Feedback names a run this server did not answer within the feedback window, or one of another flow or user."""


class BadFeedback(GitOpsFlowError):
    """A feedback body that is not LangServe's shape, or whose key or score is out of bounds; ``code`` names what."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class FeedbackRefused(GitOpsFlowError):
    """The flow has its maximum of feedback keys and the feedback names a new one."""


class ToolError(Exception):
    """A tool's outbound request (HttpRequest, WebSearch, an agent's fetch_url or web_search) failed while a flow
    ran. ``host`` is the host asked (the message names it too, never the whole URL, a header or a key)."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class EgressRefused(ToolError):
    """The egress policy refuses the request: a URL or an address the operator does not allow, a redirect off the
    allowlist, a run's requests spent."""


class EgressFailed(ToolError):
    """An allowed request gave no usable answer: the host unreachable, no answer in time, an error status, too many
    redirects."""

    retryable = True
