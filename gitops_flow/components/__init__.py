"""What a node can be: the allowlist, built-ins, the agent, fakes; the only names of LangChain's models."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = [
    "base",
    "breaker",
    "credentials",
    "documents",
    "fake_answers",
    "knowledge",
    "model_calls",
    "outbound",
    "provider_errors",
    "provider_packages",
    "registry",
    "sectioned_prompts",
    "textify",
]
