"""OpenTelemetry traces, on when the operator names an OTLP endpoint with the standard ``OTEL_*`` variables and off
otherwise: then nothing here runs per request (no provider, no span, no SDK call).

The variables read (the OpenTelemetry SDK's own names and meanings): ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER``
(``otlp`` or ``console``; ``none`` turns traces off), ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``…_PROTOCOL``
(``http/protobuf``), ``…_HEADERS``, ``…_TIMEOUT`` (milliseconds), ``…_COMPRESSION``, ``…_CERTIFICATE``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``…_ARG``, and the batch
processor's ``OTEL_BSP_*``. They are read from the mapping given (the process environment, for `serve`), once.
W3C trace context (``traceparent``, ``tracestate``) is taken from each request, and the request's own span is
given back in a ``traceresponse`` header (W3C Trace Context Level 2), so a caller can find the trace of its call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gitops_flow import __version__
from gitops_flow.exceptions import ConfigError

SERVICE_NAME = "gitops-flow"
# attribute names: OpenTelemetry's semantic conventions where they have one, ours under gitops_flow.*
FLOW, VERSION, REF, ROUTE = "gitops_flow.flow", "gitops_flow.version", "gitops_flow.ref", "gitops_flow.route"
SESSION, USER, RUN_ID, CACHE = "gitops_flow.session", "gitops_flow.user", "gitops_flow.run_id", "gitops_flow.cache"
NODE, COMPONENT, LIMITED = "gitops_flow.node.id", "gitops_flow.node.component", "gitops_flow.limited"
INPUT_TOKENS, OUTPUT_TOKENS = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
MODEL, PROVIDER = "gen_ai.request.model", "gen_ai.provider.name"


class Tracing:
    """A tracer provider of the server's own (never the process-wide one), the W3C propagator, and helpers that
    start the server's spans. ``shutdown()`` sends what is still buffered."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("gitops_flow", __version__)
        self.propagator = TraceContextTextMapPropagator()

    def __repr__(self) -> str:
        return f"Tracing({self.provider.resource.attributes.get('service.name')!r})"

    @classmethod
    def exporting(cls, exporter: SpanExporter, *, batch: bool = False, sampler: Sampler | None = None) -> Tracing:
        """Traces sent to ``exporter`` (tests give the SDK's in-memory exporter)."""
        provider = TracerProvider(resource=Resource({"service.name": SERVICE_NAME}), sampler=sampler or ALWAYS_ON)
        processor: SpanProcessor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Tracing | None:
        """The tracing the ``OTEL_*`` variables ask for, or None when they ask for none (no endpoint, disabled, or
        the ``none`` exporter). Raises ConfigError naming a variable whose value cannot be used."""
        env = {k: v.strip() for k, v in environ.items() if k.startswith("OTEL_")}
        if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return None
        exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
        if not exporters or exporters == ["none"]:
            return None
        unknown = sorted(set(exporters) - {"otlp", "console", "none"})
        if unknown:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={','.join(unknown)} is not supported; use otlp, console or none")
        made: list[SpanExporter] = []
        if "otlp" in exporters:
            otlp = _otlp(env)
            if otlp is not None:
                made.append(otlp)
        if "console" in exporters:
            made.append(ConsoleSpanExporter(service_name=env.get("OTEL_SERVICE_NAME", SERVICE_NAME)))
        if not made:
            return None
        provider = TracerProvider(resource=_resource(env), sampler=_sampler(env))
        for exporter in made:
            provider.add_span_processor(BatchSpanProcessor(exporter, **_batch(env)))
        return cls(provider)

    def extract(self, headers: Iterable[tuple[bytes, bytes]]) -> Context:
        """The caller's trace context from a request's raw headers (``traceparent``, ``tracestate``)."""
        carrier: dict[str, str] = {}
        for name, value in headers:
            key = name.decode("latin-1").lower()
            if key in ("traceparent", "tracestate"):
                carrier[key] = value.decode("latin-1")
        return self.propagator.extract(carrier) if carrier else Context()

    def start_request(self, name: str, parent: Context, attributes: Mapping[str, Any]) -> Span:
        return self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)

    def start_child(self, name: str, parent: Span | None, attributes: Mapping[str, Any]) -> Span:
        context = trace.set_span_in_context(parent) if parent is not None else Context()
        return self.tracer.start_span(name, context=context, kind=SpanKind.INTERNAL, attributes=attributes)

    def shutdown(self) -> None:
        self.provider.shutdown()


def telemetry_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """The credentials telemetry is configured with, to scrub from everything the server writes: the OTLP headers'
    values (an API key of a tracing service) and LangSmith's API key."""
    found = {name: environ[name] for name in _KEYS if environ.get(name)}
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for item in environ.get(variable, "").split(","):
            key, sep, value = item.partition("=")
            if sep and value.strip():
                found[f"{variable}:{unquote(key.strip())}"] = unquote(value.strip())
    return found


_KEYS = ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")


def traceresponse(span: Span) -> str:
    """The ``traceresponse`` header of a request's span: ``00-<trace id>-<span id>-<flags>``."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def ids(span: Span) -> tuple[str, str]:
    """(trace id, span id) in hex, as log lines carry them."""
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def failed(span: Span, error: BaseException | None, description: str | None = None) -> None:
    """Mark ``span`` as failed: the error's type, never its message (it may quote an input or a secret)."""
    what = type(error).__name__ if error is not None else (description or "error")
    span.set_attribute("error.type", what)
    span.set_status(Status(StatusCode.ERROR, description or what))


def _otlp(env: Mapping[str, str]) -> SpanExporter | None:
    endpoint = _pick(env, "ENDPOINT")
    if not endpoint:
        return None  # otlp without an endpoint: the operator has not asked for traces
    if not env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"  # the base endpoint's signal path, as the SDK adds it
    protocol = _pick(env, "PROTOCOL") or "http/protobuf"
    if protocol != "http/protobuf":
        raise ConfigError(f"OTLP protocol {protocol!r} is not supported; gitops-flow sends http/protobuf")
    try:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ModuleNotFoundError:
        raise ConfigError("exporting traces needs the OTLP exporter: pip install 'gitops-flow[otel]'") from None
    compression = (_pick(env, "COMPRESSION") or "none").lower()
    if compression not in ("none", "gzip", "deflate"):
        raise ConfigError(f"OTLP compression {compression!r} is not supported; use gzip, deflate or none")
    return OTLPSpanExporter(
        endpoint=endpoint,
        headers=_pairs(_pick(env, "HEADERS"), "OTEL_EXPORTER_OTLP_HEADERS"),
        timeout=_number(env, _name(env, "TIMEOUT"), 10_000) / 1000.0,
        compression=Compression(compression),
        certificate_file=_pick(env, "CERTIFICATE") or None,
    )


def _name(env: Mapping[str, str], what: str) -> str:
    own = f"OTEL_EXPORTER_OTLP_TRACES_{what}"
    return own if env.get(own) else f"OTEL_EXPORTER_OTLP_{what}"


def _pick(env: Mapping[str, str], what: str) -> str:
    return env.get(_name(env, what), "")


def _pairs(text: str, variable: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` with URL-encoded values (the OTLP headers' and resource attributes' form)."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{variable}: {key.strip() or item!r} is not key=value")  # never the value: a credential
        found[unquote(key.strip())] = unquote(value.strip())
    return found


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={text!r} is negative")
    return value


def _resource(env: Mapping[str, str]) -> Resource:
    attributes: dict[str, Any] = {"service.version": __version__}
    attributes.update(_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES"))
    attributes["service.name"] = env.get("OTEL_SERVICE_NAME") or attributes.get("service.name") or SERVICE_NAME
    return Resource(attributes)


def _sampler(env: Mapping[str, str]) -> Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").lower()
    ratio = _number(env, "OTEL_TRACES_SAMPLER_ARG", 1.0)
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(min(ratio, 1.0)),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(TraceIdRatioBased(min(ratio, 1.0))),
    }
    if name not in samplers:
        raise ConfigError(f"OTEL_TRACES_SAMPLER={name!r} is not one of {', '.join(samplers)}")
    return samplers[name]


def _batch(env: Mapping[str, str]) -> dict[str, Any]:
    """The batch processor's settings (``OTEL_BSP_*``; times in milliseconds)."""
    options: dict[str, Any] = {}
    for variable, option, scale in (
        ("OTEL_BSP_SCHEDULE_DELAY", "schedule_delay_millis", 1),
        ("OTEL_BSP_EXPORT_TIMEOUT", "export_timeout_millis", 1),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "max_queue_size", 1),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "max_export_batch_size", 1),
    ):
        if env.get(variable):
            value = _number(env, variable, 0) * scale
            options[option] = value if option.endswith("millis") else max(1, int(value))
    if "max_export_batch_size" in options and "max_queue_size" in options:
        options["max_export_batch_size"] = min(options["max_export_batch_size"], options["max_queue_size"])
    return options
