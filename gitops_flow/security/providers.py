"""The model providers of ``init_chat_model``: the package each needs and the credential each reads (the secret
names flows may use by default).

Every provider in langchain's (private) ``_BUILTIN_PROVIDERS`` has an entry in both tables, with the same package
(tests/test_secretpolicy.py keeps them equal), so a langchain upgrade that adds a provider fails the tests until
someone decides which variable, if any, is its key; the server itself reads only these tables. A provider
whose credentials are a cloud's own credential chain (AWS, Google Cloud, Azure AD), a file, or any provider's keys
at once (LiteLLM) has none: no flow may hand it a secret unless the operator binds one to it by name.
"""

from __future__ import annotations

# provider -> the environment variables its API key is read from (its own name for the key, then any alias)
PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "anthropic_bedrock": (),  # AWS credentials
    "azure_ai": (),  # Azure credentials (a token credential or a key), with an endpoint of their own
    "azure_openai": ("AZURE_OPENAI_API_KEY",),
    "baseten": ("BASETEN_API_KEY",),
    "bedrock": (),  # AWS credentials
    "bedrock_converse": (),  # AWS credentials
    "bedrock_mantle_anthropic": (),  # AWS credentials
    "bedrock_mantle_openai": (),  # AWS credentials
    "cohere": ("COHERE_API_KEY", "CO_API_KEY"),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "fireworks": ("FIREWORKS_API_KEY",),
    "google_anthropic_vertex": (),  # Google Cloud credentials
    "google_genai": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "google_vertexai": (),  # Google Cloud credentials
    "groq": ("GROQ_API_KEY",),
    "huggingface": ("HUGGINGFACEHUB_API_TOKEN",),
    "ibm": (),  # watsonx: an IBM Cloud key together with a URL and a project
    "langsmith": ("LANGSMITH_GATEWAY_API_KEY", "LANGSMITH_API_KEY"),
    "litellm": (),  # reads every provider's key itself: a key given to it could go to any provider
    "meta": ("LLAMA_API_KEY",),
    "mistralai": ("MISTRAL_API_KEY",),
    "nvidia": ("NVIDIA_API_KEY",),
    "ollama": (),  # a local server: no key
    "openai": ("OPENAI_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "perplexity": ("PPLX_API_KEY", "PERPLEXITY_API_KEY"),
    "together": ("TOGETHER_API_KEY",),
    "upstage": ("UPSTAGE_API_KEY",),
    "xai": ("XAI_API_KEY",),
}


# provider -> the module init_chat_model imports for it (its distribution is the name with "-" for "_"; the extras
# of pyproject.toml install the common ones: `pip install 'gitops-flow[openai]'`)
PROVIDER_MODULES: dict[str, str] = {
    "anthropic": "langchain_anthropic",
    "anthropic_bedrock": "langchain_aws",
    "azure_ai": "langchain_azure_ai",
    "azure_openai": "langchain_openai",
    "baseten": "langchain_baseten",
    "bedrock": "langchain_aws",
    "bedrock_converse": "langchain_aws",
    "bedrock_mantle_anthropic": "langchain_aws",
    "bedrock_mantle_openai": "langchain_aws",
    "cohere": "langchain_cohere",
    "deepseek": "langchain_deepseek",
    "fireworks": "langchain_fireworks",
    "google_anthropic_vertex": "langchain_google_vertexai",
    "google_genai": "langchain_google_genai",
    "google_vertexai": "langchain_google_vertexai",
    "groq": "langchain_groq",
    "huggingface": "langchain_huggingface",
    "ibm": "langchain_ibm",
    "langsmith": "langchain_openai",
    "litellm": "langchain_litellm",
    "meta": "langchain_meta",
    "mistralai": "langchain_mistralai",
    "nvidia": "langchain_nvidia_ai_endpoints",
    "ollama": "langchain_ollama",
    "openai": "langchain_openai",
    "openrouter": "langchain_openrouter",
    "perplexity": "langchain_perplexity",
    "together": "langchain_together",
    "upstage": "langchain_upstage",
    "xai": "langchain_xai",
}


def default_secret_names() -> tuple[str, ...]:
    """Every provider key name above, once, in order: what flows may reference when the operator says nothing."""
    return tuple(dict.fromkeys(name for names in PROVIDER_KEYS.values() for name in names))


def providers_reading(name: str) -> frozenset[str]:
    """The providers whose key ``name`` is (empty for a name no provider reads)."""
    return frozenset(provider for provider, names in PROVIDER_KEYS.items() if name in names)
