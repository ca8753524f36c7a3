"""The built-in components: factories of prompts, models (any provider, the fake), the tool agent, parsers, picks and
chat history, with their registry records (BUILTIN_COMPONENTS)."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping
from itertools import cycle
from typing import Annotated, Any, Literal

from langchain_core.runnables import Runnable, RunnablePassthrough
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from gitops_flow.components.base import FAKE_MODEL, BuildContext, Component, ComponentKind, ParamIssue
from gitops_flow.exceptions import BuildError
from gitops_flow.flow import prompts as templates

# the agent's built-in tools (gitops_flow/components/agent.py: calculator, current_date, fetch_url, web_search) are the
# AgentTool models below; fetch_url and web_search go out through the egress allowlist
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
FetchFormat = Literal["text", "html", "json"]
SearchDepth = Literal["basic", "advanced"]
SearchTopic = Literal["general", "news", "finance"]
SearchTimeRange = Literal["day", "week", "month", "year"]
MAX_FETCH_BYTES = (
    100 * 1024 * 1024
)  # a node's own max_bytes, at most (the operator's GITOPS_FLOW_EGRESS_MAX_BYTES rules)
MAX_FETCH_TIMEOUT = 600.0  # a node's own timeout, at most (the operator's GITOPS_FLOW_EGRESS_TIMEOUT rules)
Domain = Annotated[str, Field(min_length=1, max_length=253)]
MAX_LATENCY_MS = 60_000  # FakeChatModel's latency_ms: what it waits before an answer, at most
MAX_TOKEN_LATENCY_MS = 1_000  # and token_latency_ms, before each token (an answer waits 60 s in all at most)
MAX_TIMEOUT = 3600.0  # a model's timeout: seconds one call to its provider may take, at most (LangFlow's is 700)
MAX_RETRIES = 10  # a model's max_retries: the provider client's retries of one call, at most
MAX_FALLBACKS = 5  # a ChatModel's fallbacks: other models tried in order, at most


# -- built-in factories ----------------------------------------------------------------------------------------------
# langchain is imported inside each factory, so loading the registry (and validating without a dry-build) stays cheap.

MessageRole = Literal["system", "human", "user", "ai", "assistant", "placeholder"]
TemplateFormat = Literal["f-string", "mustache"]  # never jinja2: a template language is code


def passthrough(ctx: BuildContext) -> Runnable[Any, Any]:
    """Hands its input on unchanged: an explicit entry node for flows that fan out from the request."""
    return RunnablePassthrough()


def prompt_template(
    ctx: BuildContext, *, template: str, template_format: TemplateFormat = "f-string"
) -> Runnable[Any, Any]:
    """A text prompt; its ``{variables}`` are read from the node's input dict; a mustache section's key takes a list
    (flow/prompts.py)."""
    from langchain_core.prompts import PromptTemplate

    if template_format == "mustache" and templates.section_keys(template):
        from gitops_flow.components.sectioned_prompts import SectionedPromptTemplate

        return SectionedPromptTemplate.from_template(template, template_format="mustache")
    return PromptTemplate.from_template(template, template_format=template_format)


def chat_prompt_template(
    ctx: BuildContext,
    *,
    messages: Annotated[list[tuple[MessageRole, str]], Field(min_length=1)],
    template_format: TemplateFormat = "f-string",
) -> Runnable[Any, Any]:
    """A chat prompt from ``[role, template]`` pairs; ``["placeholder", "{history}"]`` inserts a message list."""
    from langchain_core.prompts import ChatPromptTemplate

    sections = frozenset().union(*(templates.section_keys(text) for _, text in messages))
    if template_format == "mustache" and sections:
        from gitops_flow.components.sectioned_prompts import SectionedChatPromptTemplate

        prompt = SectionedChatPromptTemplate.from_messages(list(messages), template_format="mustache")
        assert isinstance(prompt, SectionedChatPromptTemplate), "from_messages makes its own class"
        prompt.sections = sections
        return prompt
    return ChatPromptTemplate.from_messages(list(messages), template_format=template_format)


def _prompt_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """A PromptTemplate's template holds nothing that makes formatting costly or reaches into values."""
    why = templates.problem(params["template"], params.get("template_format", "f-string"))
    return [(("template",), "bad-template", why)] if why else []


def _chat_prompt_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """Each message template of a ChatPromptTemplate, as ``_prompt_check``."""
    template_format = params.get("template_format", "f-string")
    issues: list[ParamIssue] = []
    for index, (_, text) in enumerate(params["messages"]):
        why = templates.problem(text, template_format)
        if why:
            issues.append((("messages", index, 1), "bad-template", why))
    return issues


def chat_model(
    ctx: BuildContext,
    *,
    model: Annotated[str, Field(min_length=1)],
    model_provider: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None,
    max_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = None,
    fallbacks: Annotated[list[Annotated[str, Field(min_length=1)] | Fallback], Field(max_length=MAX_FALLBACKS)]
    | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model_kwargs: dict[str, JsonValue] | None = None,
) -> Runnable[Any, Any]:
    """Any chat model that ``langchain.chat_models.init_chat_model`` knows, when its provider package is installed.

    ``timeout`` (seconds) and ``max_retries`` go to the provider's client. ``fallbacks`` are other models tried in
    order when a call fails, as LangChain's ``with_fallbacks``: ``provider:model``, or an object (Fallback) that may
    also set its own ``base_url`` (allowed as the node's is), ``timeout``, ``max_retries``, ``temperature`` and
    ``max_tokens``. A fallback of the node's provider takes the node's settings and ``api_key`` (and its
    ``base_url`` unless it names its own); one of another provider takes only the plain settings (its key is read
    as the provider's client reads it). A provider whose client takes an httpx client calls through the endpoint's
    circuit breaker (breaker.py) when the build has ``breakers``, and one that can count a stream's tokens is asked
    to (``stream_usage``: OpenAI's ``stream_options.include_usage``)."""
    provider, name = provider_of(model, model_provider)
    given = {
        "temperature": temperature,
        "max_tokens": max_tokens,
        "top_p": top_p,
        "stop": stop,
        "timeout": timeout,
        "max_retries": max_retries,
        "base_url": base_url,
        "api_key": api_key,
    }
    kwargs: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if model_kwargs:
        kwargs["model_kwargs"] = dict(model_kwargs)
    primary = _one_model(ctx, provider, name, kwargs)
    if not fallbacks:
        return primary
    others = []
    for each in fallbacks:
        spec = each if isinstance(each, Fallback) else Fallback(model=each)
        other, other_name = provider_of(spec.model, spec.model_provider)
        own = kwargs if other == provider else {k: v for k, v in kwargs.items() if k not in _ENDPOINT}
        own = {**own, **spec.model_dump(exclude_none=True, exclude={"model", "model_provider"})}
        others.append(_one_model(ctx, other, other_name, own))
    return primary.with_fallbacks(others)


def _one_model(ctx: BuildContext, provider: str, name: str, kwargs: dict[str, Any]) -> Runnable[Any, Any]:
    from langchain.chat_models.base import init_chat_model

    from gitops_flow.components.provider_packages import package_of, provider_class

    package = package_of(provider)
    if not package.installed:
        if not ctx.dry_run:
            raise BuildError(
                f"model provider {provider!r} needs the package {package.distribution!r}, which is not installed "
                f"({package.install_hint()})",
                code="component-unavailable",
            )
        ctx.note(
            "provider-not-installed",
            f"{package.distribution} is not installed here, so model node {ctx.node_id!r} was checked by its "
            f"parameters only ({package.install_hint()} on the server)",
            severity="warning",
        )
        from gitops_flow.components.agent import fake_tool_model

        return fake_tool_model([""])  # a stand-in that can also be given tools, for an agent's dry-build
    fields = getattr(provider_class(provider), "model_fields", {})
    extra: dict[str, Any] = {}
    if "stream_usage" in fields:
        extra["stream_usage"] = True  # a custom base_url turns LangChain's default off; the budgets need the count
    if "http_async_client" in fields and ctx.breakers is not None and not ctx.dry_run:
        breaker = ctx.breakers.for_endpoint(f"{provider} {kwargs.get('base_url') or 'default'}")
        if breaker is not None:
            from gitops_flow.components.breaker import guarded_client

            extra["http_async_client"] = guarded_client(breaker)
    try:
        made = init_chat_model(name, model_provider=provider, **kwargs, **extra)
    except Exception as exc:  # a provider's client refusing to be made (no key in reach, say): its own classes
        if not ctx.dry_run:
            raise BuildError(
                f"the {provider} model could not be made: {type(exc).__name__}: {_first_line(exc)}",
                code="build-failed",
            ) from None
        ctx.note(
            "provider-not-configured",
            f"the {provider} client of model node {ctx.node_id!r} could not be made here ({type(exc).__name__}), "
            "so it was checked by its parameters only",
            severity="warning",
        )
        from gitops_flow.components.agent import fake_tool_model

        return fake_tool_model([""])
    return typing.cast("Runnable[Any, Any]", made)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


class Fallback(BaseModel):
    """One of a ChatModel's ``fallbacks`` written as an object: its model and what it sets of its own."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Annotated[str, Field(min_length=1)]
    model_provider: str | None = None
    base_url: str | None = None
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = None
    temperature: float | None = None
    max_tokens: int | None = None


_ENDPOINT = ("base_url", "api_key", "model_kwargs")  # what a fallback of another provider never takes from the node


def _chat_model_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """Each of a ChatModel's ``fallbacks`` names a model of a known provider, and no URL."""
    from gitops_flow.components.provider_packages import package_of

    issues: list[ParamIssue] = []
    for index, each in enumerate(params.get("fallbacks") or ()):
        model, model_provider = (each.model, each.model_provider) if isinstance(each, Fallback) else (each, None)
        where: tuple[str | int, ...] = ("fallbacks", index) + (("model",) if isinstance(each, Fallback) else ())
        if "://" in model:
            issues.append((where, "bad-param", "a fallback names a model ('provider:model'), never a URL"))
            continue
        try:
            package_of(provider_of(model, model_provider)[0])
        except BuildError as exc:
            issues.append((where, "bad-param", f"fallback {model!r}: {exc}"))
    return issues


def provider_of(model: str, model_provider: str | None) -> tuple[str, str]:
    """(provider, model name) as ``init_chat_model`` will see them; BuildError when the provider cannot be told."""
    if model_provider:
        return model_provider, model
    provider, sep, name = model.partition(":")
    if sep:
        return provider, name
    from gitops_flow.components import langchain_internals

    inferred = langchain_internals.inferred_provider(model)
    if inferred is None:
        raise BuildError(
            f"cannot tell the provider of model {model!r}; write it as 'provider:model' (e.g. 'openai:gpt-4o-mini')",
            code="bad-param",
        )
    return inferred, model


def fake_chat_model(
    ctx: BuildContext,
    *,
    responses: Annotated[list[str], Field(min_length=1)],
    latency_ms: Annotated[int, Field(ge=0, le=MAX_LATENCY_MS)] = 0,
    token_latency_ms: Annotated[int, Field(ge=0, le=MAX_TOKEN_LATENCY_MS)] = 0,
) -> Runnable[Any, Any]:
    """A chat model for demos and tests: answers ``responses`` in turn, streamed token by token; calls nothing.
    ``latency_ms`` passes before each answer and ``token_latency_ms`` before each token (a dry-build, which is what
    flow tests run, never waits: a test checks answers, not time)."""
    from gitops_flow.components.fake_model import FakeChatModel

    timed = not ctx.dry_run
    return FakeChatModel(
        messages=cycle(list(responses)),
        latency=latency_ms / 1000 if timed else 0.0,
        token_latency=token_latency_ms / 1000 if timed else 0.0,
    )


class CalculatorTool(BaseModel):
    """The agent's ``calculator`` tool (bounded arithmetic, calculator.py)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["calculator"]


class CurrentDateTool(BaseModel):
    """The agent's ``current_date`` tool."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["current_date"]


class FetchUrlTool(BaseModel):
    """The agent's ``fetch_url`` tool written as an object: how it reads what it fetches."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["fetch_url"]
    format: FetchFormat = "text"
    max_bytes: Annotated[int, Field(ge=1, le=MAX_FETCH_BYTES)] | None = None


class WebSearchTool(BaseModel):
    """The agent's ``web_search`` tool written as an object: the options of its searches (its key is the agent's
    ``search_api_key``)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["web_search"]
    max_results: Annotated[int, Field(ge=1, le=20)] = 5
    search_depth: SearchDepth = "basic"
    topic: SearchTopic = "general"
    include_domains: Annotated[list[Domain], Field(max_length=50)] | None = None
    exclude_domains: Annotated[list[Domain], Field(max_length=50)] | None = None
    time_range: SearchTimeRange | None = None


def _named_tool(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


# a tool of the agent's ``tools``: its name, or an object with its name and options
AgentTool = Annotated[
    Annotated[CalculatorTool | CurrentDateTool | FetchUrlTool | WebSearchTool, Field(discriminator="name")],
    BeforeValidator(_named_tool),
]


def tool_agent(
    ctx: BuildContext,
    *,
    model: Annotated[str, Field(min_length=1)],
    model_provider: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None,
    max_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model_kwargs: dict[str, JsonValue] | None = None,
    system_prompt: str = "",
    tools: Annotated[list[AgentTool], Field(max_length=10)] | None = None,
    search_api_key: str | None = None,
    max_iterations: Annotated[int, Field(ge=1, le=100)] = 15,
) -> Runnable[Any, Any]:
    """A chat model (as ``ChatModel``) that calls the built-in ``tools`` in a loop until it answers; takes and gives
    what a chat model does. Test ``fakes`` script its model, tool-call turns included (docs/components.md).
    ``fetch_url`` and ``web_search`` go out through the egress allowlist, their requests counted with the run's;
    ``search_api_key`` is web_search's key (Tavily's)."""
    from gitops_flow.components.agent import ToolAgent, fake_tool_model, make_tools, with_tools
    from gitops_flow.components.http_fetch import Fetcher
    from gitops_flow.security.egress import EgressPolicy

    fetcher = Fetcher(ctx.egress or EgressPolicy())
    made = make_tools(tools or [], fetcher=fetcher, search_key=search_api_key)
    if ctx.fake_responses is not None:
        llm: Runnable[Any, Any] = fake_tool_model(ctx.fake_responses)
    else:
        llm = chat_model(
            ctx,
            model=model,
            model_provider=model_provider,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            base_url=base_url,
            api_key=api_key,
            model_kwargs=model_kwargs,
        )
    try:
        bound = with_tools(llm, made)
    except (TypeError, NotImplementedError) as exc:
        raise BuildError(f"model {model!r} cannot call tools: {exc}", code="bad-param") from None
    return ToolAgent(bound, made, system_prompt=system_prompt, max_iterations=max_iterations, fetcher=fetcher)


def _agent_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """web_search needs the agent's search_api_key; a tool is named once."""
    issues: list[ParamIssue] = []
    names = [getattr(t, "name", t) for t in params.get("tools") or ()]
    for index, name in enumerate(names):
        if name in names[:index]:
            issues.append((("tools", index), "bad-param", f"the tool {name!r} is named twice"))
    if "web_search" in names and params.get("search_api_key") is None:
        issues.append(
            (("search_api_key",), "missing-param", 'web_search needs the search API\'s key: {"$env": "TAVILY_API_KEY"}')
        )
    return issues


def http_request(
    ctx: BuildContext,
    *,
    url: Annotated[str, Field(min_length=1, max_length=8192)] | None = None,
    method: HttpMethod = "GET",
    headers: dict[str, Annotated[str, Field(max_length=8192)]] | None = None,
    body: JsonValue | None = None,
    api_key: str | None = None,
    api_key_header: str = "Authorization",
    api_key_prefix: Annotated[str, Field(max_length=100)] = "Bearer ",
    format: FetchFormat = "text",
    max_bytes: Annotated[int, Field(ge=1, le=MAX_FETCH_BYTES)] | None = None,
    timeout: Annotated[float, Field(gt=0, le=MAX_FETCH_TIMEOUT)] | None = None,
) -> Runnable[Any, Any]:
    """Fetches a URL (``url``: a literal, or a template of the input such as ``https://api.example.com/items/{id}``;
    without it, the input is the URL) through the egress allowlist, and answers its body as ``text`` (HTML as its
    visible text), ``html`` or parsed ``json``. ``api_key`` (a secret) is sent in ``api_key_header`` after
    ``api_key_prefix``; ``max_bytes`` and ``timeout`` narrow the operator's bounds (http_request.py)."""
    from gitops_flow.components import http_request as found
    from gitops_flow.components.http_fetch import Fetcher
    from gitops_flow.security.egress import EgressPolicy

    if ctx.fake_responses is not None:  # a test's or --fake-models' answers: nothing is fetched
        return found.faked(ctx.fake_responses, format)
    return found.build(
        Fetcher(ctx.egress or EgressPolicy()),
        url=url,
        method=method,
        headers=headers or {},
        body=body,
        api_key=api_key,
        api_key_header=api_key_header,
        api_key_prefix=api_key_prefix,
        format=format,
        max_bytes=max_bytes,
        timeout=timeout,
    )


def _http_request_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    from gitops_flow.components.http_request import check

    return check(params)


def web_search(
    ctx: BuildContext,
    *,
    api_key: str,
    max_results: Annotated[int, Field(ge=1, le=20)] = 5,
    search_depth: SearchDepth = "basic",
    topic: SearchTopic = "general",
    include_domains: Annotated[list[Domain], Field(max_length=50)] | None = None,
    exclude_domains: Annotated[list[Domain], Field(max_length=50)] | None = None,
    time_range: SearchTimeRange | None = None,
) -> Runnable[Any, Any]:
    """The web pages Tavily finds for the query (its input: text, or an object's ``query``), as documents
    (``metadata.source`` the page's URL); asked at the operator's GITOPS_FLOW_WEB_SEARCH_URL through the egress
    allowlist, with ``api_key`` (a secret) as its key (web_search.py)."""
    from gitops_flow.components import web_search as found
    from gitops_flow.components.http_fetch import Fetcher
    from gitops_flow.security.egress import EgressPolicy

    if ctx.fake_responses is not None:  # a test's or --fake-models' answers: nothing is asked
        return found.faked(ctx.fake_responses, ctx.node_id)
    options = {
        "max_results": max_results,
        "search_depth": search_depth,
        "topic": topic,
        "include_domains": include_domains,
        "exclude_domains": exclude_domains,
        "time_range": time_range,
    }
    return found.build(Fetcher(ctx.egress or EgressPolicy()), api_key=api_key, options=options)


def text(
    ctx: BuildContext, *, key: str | None = None, template: str | None = None, separator: str = "\n"
) -> Runnable[Any, Any]:
    """Its input as text: a string as it is, a message's or a prompt's text, a list (of messages) one item a line.

    ``key`` reads that key of an object input first. ``template`` shapes each item: ``{text}``, ``{sender}``
    (User or Machine) and ``{sender_name}`` (User or AI) are replaced, ``{source}`` for a document (a Retriever's),
    and an object item's own keys too; nothing else in it is interpreted. A document is shown as ``[source] text``
    unless a template says otherwise.
    """
    from gitops_flow.components.textify import textify

    return textify(key=key, template=template, separator=separator)


def pick(ctx: BuildContext, *, key: Annotated[str, Field(min_length=1)]) -> Runnable[Any, Any]:
    """The value under ``key`` of its object input."""
    from langchain_core.runnables import RunnableLambda

    def read(value: Any) -> Any:
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"expected an object with the key {key!r}")
        return value[key]

    return RunnableLambda(read, name=f"pick_{key}")


def str_output_parser(ctx: BuildContext) -> Runnable[Any, Any]:
    """A model message (or its stream) as plain text."""
    from langchain_core.output_parsers import StrOutputParser

    return StrOutputParser()


def json_output_parser(ctx: BuildContext) -> Runnable[Any, Any]:
    """A model's text answer parsed as JSON (streams partial objects)."""
    from langchain_core.output_parsers import JsonOutputParser

    return JsonOutputParser()


def chat_history(
    ctx: BuildContext,
    *,
    input_key: str = "question",
    history_key: str = "history",
    max_messages: Annotated[int, Field(ge=1, le=10_000)] = 50,
) -> Runnable[Any, Any]:
    """The entry of a conversational flow: adds the session's past messages under ``history_key``.

    The flow builder wraps the whole flow in conversations.WithHistory, which reads the session's messages before the
    flow and saves each turn (``input_key`` and the answer) after it; the node itself hands its input on.
    """
    return RunnablePassthrough()


def retriever(
    ctx: BuildContext,
    *,
    paths: Annotated[list[str], Field(min_length=1)],
    embeddings: str = "hashing:256",
    k: Annotated[int, Field(ge=1, le=50)] = 4,
    chunk_size: Annotated[int, Field(ge=20, le=20_000)] = 1000,
    chunk_overlap: Annotated[int, Field(ge=0, le=10_000)] = 100,
    api_key: str | None = None,
) -> Runnable[Any, Any]:
    """The chunks of the repository's documents (``paths``: globs from its root) nearest the query text, as a list
    of documents (``metadata.source`` is ``path:line``); embedded by ``embeddings`` (``provider:model`` as
    ``init_embeddings`` takes it, or ``hashing:<dims>``), indexed when the flow is built (retriever.py)."""
    from gitops_flow.components import retriever as found

    return found.build(
        ctx,
        paths=paths,
        embeddings=embeddings,
        k=k,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        api_key=api_key,
    )


def _retriever_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    from gitops_flow.components.retriever import check

    return check(params)


def _builtin(
    name: str,
    factory: Callable[..., Any],
    kind: ComponentKind,
    description: str,
    secrets: Iterable[str] = (),
    check: Callable[[Mapping[str, Any]], list[ParamIssue]] | None = None,
) -> Component:
    return Component(name, factory, kind, description, takes_context=True, secrets=frozenset(secrets), check=check)


BUILTIN_COMPONENTS = (
    _builtin("Passthrough", passthrough, "input", "Hands its input on unchanged."),
    _builtin("PromptTemplate", prompt_template, "prompt", "A text prompt with {variables}.", check=_prompt_check),
    _builtin(
        "ChatPromptTemplate",
        chat_prompt_template,
        "prompt",
        "A chat prompt from [role, template] pairs.",
        check=_chat_prompt_check,
    ),
    _builtin(
        "ChatModel",
        chat_model,
        "model",
        "A chat model of any provider init_chat_model knows.",
        ["api_key"],
        check=_chat_model_check,
    ),
    _builtin(FAKE_MODEL, fake_chat_model, "model", "Answers the given responses in turn; for demos and tests."),
    _builtin(
        "Agent",
        tool_agent,
        "agent",
        "A chat model that calls built-in tools (calculator, current_date, fetch_url, web_search).",
        ["api_key", "search_api_key"],
        check=_agent_check,
    ),
    _builtin("StrOutputParser", str_output_parser, "parser", "A model message as text."),
    _builtin("Text", text, "parser", "Its input as text: strings, messages, prompts, lists of messages or documents."),
    _builtin("Pick", pick, "transform", "One key of its object input."),
    _builtin("JsonOutputParser", json_output_parser, "parser", "A model's answer parsed as JSON."),
    _builtin("ChatHistory", chat_history, "memory", "The conversation so far, kept per session in the state store."),
    _builtin(
        "Retriever",
        retriever,
        "transform",
        "The chunks of the repository's documents nearest the query, with their sources.",
        ["api_key"],
        check=_retriever_check,
    ),
    _builtin(
        "HttpRequest",
        http_request,
        "tool",
        "Fetches a URL the egress allowlist allows; its body as text, HTML or JSON.",
        ["api_key"],
        check=_http_request_check,
    ),
    _builtin(
        "WebSearch",
        web_search,
        "tool",
        "Web pages Tavily finds for the query, as documents with their URLs.",
        ["api_key"],
    ),
)
