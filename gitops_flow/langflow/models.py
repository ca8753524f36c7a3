"""The chat model a LangFlow model or agent node describes, as ``ChatModel`` params; its key as an ``$env`` reference.

LangFlow has named models several ways: ``model_name`` on provider components (OpenAIModel, AnthropicModel),
``provider`` + ``model_name`` on LanguageModelComponent (1.2 to 1.6), ``agent_llm`` + ``model_name`` on the Agent
(1.1 to 1.6), and one ``model`` field holding the selected option(s) ``{"name", "provider", ...}`` from 1.7 on,
where ``model_name``/``provider`` became overrides. Keys are ``api_key`` fields: a ``load_from_db`` field's value
is the name of a LangFlow global variable, which becomes an environment variable of the same (normalised) name;
so does a value that is an environment variable's name (``OPENAI_API_KEY``) without ``load_from_db``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gitops_flow.langflow.export import LfNode
from gitops_flow.problems import Problem
from gitops_flow.security.providers import PROVIDER_KEYS

DEFAULT_MODEL = "openai:gpt-4o-mini"
_VARIABLE_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")

# LangFlow's provider names -> (init_chat_model provider, the environment variable its key is read from)
PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("openai", "OPENAI_API_KEY"),
    "anthropic": ("anthropic", "ANTHROPIC_API_KEY"),
    "azure openai": ("azure_openai", "AZURE_OPENAI_API_KEY"),
    "google": ("google_genai", "GOOGLE_API_KEY"),
    "google generative ai": ("google_genai", "GOOGLE_API_KEY"),
    "gemini": ("google_genai", "GOOGLE_API_KEY"),
    "groq": ("groq", "GROQ_API_KEY"),
    "mistral": ("mistralai", "MISTRAL_API_KEY"),
    "mistralai": ("mistralai", "MISTRAL_API_KEY"),
    "ollama": ("ollama", ""),
    "deepseek": ("deepseek", "DEEPSEEK_API_KEY"),
    "xai": ("xai", "XAI_API_KEY"),
    "perplexity": ("perplexity", "PPLX_API_KEY"),
    "cohere": ("cohere", "COHERE_API_KEY"),
    "nvidia": ("nvidia", "NVIDIA_API_KEY"),
    "openrouter": ("openrouter", "OPENROUTER_API_KEY"),
}
# component types that fix their provider
TYPE_PROVIDERS: dict[str, str] = {
    "OpenAIModel": "openai",
    "AnthropicModel": "anthropic",
    "AzureOpenAIModel": "azure openai",
    "GoogleGenerativeAIModel": "google",
    "GroqModel": "groq",
    "MistralModel": "mistral",
    "OllamaModel": "ollama",
    "DeepSeekModelComponent": "deepseek",
    "xAIModel": "xai",
    "PerplexityModel": "perplexity",
    "CohereModel": "cohere",
    "NVIDIAModelComponent": "nvidia",
    "OpenRouterComponent": "openrouter",
    "HuggingFaceModel": "huggingface",
    "AmazonBedrockModel": "bedrock",
    "AmazonBedrockConverseModel": "bedrock_converse",
    "VertexAiModel": "google_vertexai",
    "WatsonxAIComponent": "ibm",
    "IBMwatsonxModel": "ibm",
    "NovitaModel": "novita",
    "SambaNovaModel": "sambanova",
    "LMStudioModel": "lmstudio",
    "MaritalkModel": "maritalk",
    "QianfanChatEndpoint": "qianfan",
    "CohereModelComponent": "cohere",
}
_MODEL_NAME_FIELDS = ("model_name", "model", "model_id")
_BASE_URL_FIELDS = ("openai_api_base", "base_url", "anthropic_api_url", "api_base")
PROVIDER_ENDPOINTS = frozenset({"https://api.anthropic.com", "https://api.openai.com", "https://api.openai.com/v1"})
_ENV_INVALID = re.compile(r"[^A-Z0-9_]+")


@dataclass(slots=True)
class ModelChoice:
    """ChatModel params for a node, the node fields each came from, and what could not be carried over."""

    params: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)  # param -> LangFlow field
    problems: list[Problem] = field(default_factory=list)


def is_variable_name(text: str) -> bool:
    """An environment variable's name written where a key goes (``OPENAI_API_KEY``, as LangFlow's starter projects
    of 1.2 ship it without ``load_from_db``): upper-case words joined by underscores, which no provider's key is."""
    return _VARIABLE_NAME.fullmatch(text.strip()) is not None


def env_name(text: str) -> str:
    """A LangFlow variable name as an environment variable name: ``My OpenAI key`` -> ``MY_OPENAI_KEY``."""
    name = _ENV_INVALID.sub("_", text.strip().upper()).strip("_")
    return name if name and not name[0].isdigit() else f"LANGFLOW_{name}"


def model_choice(node: LfNode) -> ModelChoice:
    """The model ``node`` runs (a model component or an agent's embedded model)."""
    choice = ModelChoice()
    provider_label, name, where = _selected(node)
    if not name:
        choice.problems.append(
            Problem(
                code="langflow-default-model",
                message=f"node {node.id!r} has no model selected; the converted flow uses {DEFAULT_MODEL}: "
                "select one in LangFlow, or set it in the converted document",
                path=node.path,
                severity="warning",
            )
        )
        provider_label, name, where = "openai", DEFAULT_MODEL.partition(":")[2], ""
    known = PROVIDERS.get(provider_label.lower()) or _init_provider(provider_label)
    if known is None:
        choice.problems.append(
            Problem(
                code="langflow-unsupported",
                message=f"{node.label()}: langchain's init_chat_model knows no model provider {provider_label!r} "
                f"(it knows {', '.join(sorted(PROVIDER_KEYS))}), so ChatModel cannot run it",
                path=node.field_path(where) if where else node.path,
            )
        )
        return choice
    provider, key_env = known
    choice.params["model"] = f"{provider}:{name}"
    if where:
        choice.fields["model"] = where
    _numbers(node, choice)
    _base_url(node, choice)
    _extra_kwargs(node, choice)
    _api_key(node, choice, key_env)
    return choice


def _init_provider(label: str) -> tuple[str, str] | None:
    """A provider of ``init_chat_model`` named as LangFlow names it (``Google Vertex AI`` -> ``google_vertexai``),
    with the variable its key is read from; None for one it does not know."""
    name = _ENV_INVALID.sub("_", label.strip().upper()).strip("_").lower()
    for candidate in (name, name.replace("_", "")):
        if candidate in PROVIDER_KEYS:
            keys = PROVIDER_KEYS[candidate]
            return candidate, keys[0] if keys else ""
    return None


def _selected(node: LfNode) -> tuple[str, str, str]:
    """(provider label, model name, the field the name came from); an empty name when none is selected."""
    provider = TYPE_PROVIDERS.get(node.type, "")
    for label_field in ("provider", "agent_llm"):
        label = node.text(label_field)
        if label and label.lower() != "custom":
            provider = label
    chosen = node.value("model")
    if isinstance(chosen, list) and chosen and isinstance(chosen[0], dict):
        chosen = chosen[0]
    if isinstance(chosen, dict):  # LangFlow 1.7 on: the selected option; model_name/provider override it
        override = node.text("model_name")
        provider = node.text("provider") or str(chosen.get("provider") or provider)
        return provider, override or str(chosen.get("name") or ""), "model_name" if override else "model"
    for name_field in _MODEL_NAME_FIELDS:
        name = node.text(name_field)
        if name:
            return provider or "openai", name, name_field
    return provider or "openai", "", ""


def _numbers(node: LfNode, choice: ModelChoice) -> None:
    temperature = node.number("temperature")
    if temperature is not None:
        choice.params["temperature"] = temperature
        choice.fields["temperature"] = "temperature"
    for param, source in (("max_tokens", "max_tokens"), ("max_retries", "max_retries"), ("timeout", "timeout")):
        number = node.number(source)
        if number is not None and number > 0:
            choice.params[param] = int(number) if param != "timeout" else number
            choice.fields[param] = source


def _base_url(node: LfNode, choice: ModelChoice) -> None:
    """The base URL a node points its model at; none when it is the provider's own public endpoint (LangFlow's
    Anthropic component shows ``https://api.anthropic.com``), which the client reaches by itself."""
    for source in _BASE_URL_FIELDS:
        url = node.text(source)
        if url.strip().rstrip("/") in PROVIDER_ENDPOINTS:
            return
        if url:
            choice.params["base_url"] = url
            choice.fields["base_url"] = source
            return


def _extra_kwargs(node: LfNode, choice: ModelChoice) -> None:
    kwargs: dict[str, Any] = {}
    given = node.value("model_kwargs")
    if isinstance(given, dict):
        kwargs.update(given)
    if node.flag("json_mode"):
        kwargs["response_format"] = {"type": "json_object"}  # what LangFlow's OpenAI component binds for it
    if kwargs:
        choice.params["model_kwargs"] = kwargs
        choice.fields["model_kwargs"] = "model_kwargs"


def _api_key(node: LfNode, choice: ModelChoice, default_env: str) -> None:
    """Always a reference: the named LangFlow variable, or the provider's usual variable; never a literal."""
    key_field = next((f for f in ("api_key", "openai_api_key", "anthropic_api_key") if node.has(f)), None)
    spec = node.spec(key_field) if key_field else {}
    value = spec.get("value")
    name = default_env
    if isinstance(value, str) and value.strip():
        if spec.get("load_from_db") is True or is_variable_name(value):
            name = env_name(value)
        else:
            choice.problems.append(
                Problem(
                    code="literal-secret",
                    message=f"{node.label()} holds a literal API key; it is never copied: store it as a LangFlow "
                    "global variable (or leave it empty) and set the environment variable on the server",
                    path=node.field_path(str(key_field)),
                )
            )
            return
    if name:
        choice.params["api_key"] = {"$env": name}
        if key_field:
            choice.fields["api_key"] = key_field


def key_reference(node: LfNode, default_env: str) -> tuple[dict[str, str] | None, list[Problem]]:
    """A node's API key as an ``$env`` reference (as a model's is; ``literal-secret`` for a literal key), and the
    problems found; None when the field is empty and there is no default variable."""
    choice = ModelChoice()
    _api_key(node, choice, default_env)
    reference = choice.params.get("api_key")
    return (reference if isinstance(reference, dict) else None), choice.problems
