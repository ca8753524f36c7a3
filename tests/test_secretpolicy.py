"""policy.py, providers.py: the variables flows may read, the provider of each key, the allowed base URLs."""

from __future__ import annotations

import io

import pytest
from langchain.chat_models.base import _BUILTIN_PROVIDERS
from pydantic import ValidationError

from gitops_flow.cli import main as cli
from gitops_flow.config import Settings
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.providers import PROVIDER_KEYS, PROVIDER_MODULES, default_secret_names, providers_reading


def test_every_provider_of_init_chat_model_is_classified() -> None:
    """A langchain upgrade that adds a provider fails here until someone decides which variable is its key."""
    assert set(PROVIDER_KEYS) == set(_BUILTIN_PROVIDERS)
    assert PROVIDER_MODULES == {p: spec[0].split(".")[0] for p, spec in _BUILTIN_PROVIDERS.items()}


def test_the_default_names_are_provider_keys_and_nothing_of_the_machine() -> None:
    names = default_secret_names()
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "MISTRAL_API_KEY"} <= set(names)
    assert len(names) == len(set(names))
    for name in names:
        assert name.endswith(("_API_KEY", "_API_TOKEN")), name
        assert not name.startswith(("AWS_", "GITOPS_FLOW_", "AZURE_CLIENT", "GOOGLE_APPLICATION")), name
        assert providers_reading(name), name
    assert Settings().secret_policy() == SecretPolicy(names)


def test_names_prefixes_and_bindings() -> None:
    policy = SecretPolicy(["OPENAI_API_KEY", "TEAM_*=openai", "SEARCH_TOKEN", "GROQ_API_KEY=openai"])
    assert policy.allows("OPENAI_API_KEY") and policy.allows("TEAM_GPT") and policy.allows("SEARCH_TOKEN")
    assert not policy.allows("ANTHROPIC_API_KEY") and not policy.allows("TEAM") and not policy.allows("OPENAI_API")
    assert policy.providers_for("OPENAI_API_KEY") == {"openai"}  # the provider that reads it by that name
    assert policy.providers_for("TEAM_GPT") == {"openai"}  # bound by the operator
    assert policy.providers_for("GROQ_API_KEY") == {"openai"}  # an operator's binding replaces the table's
    assert policy.providers_for("SEARCH_TOKEN") == frozenset()  # bound to no provider: operator components only
    environ = {"OPENAI_API_KEY": "a", "TEAM_GPT": "b", "AWS_SECRET_ACCESS_KEY": "c", "GITOPS_FLOW_ADMIN_TOKEN": "d"}
    assert policy.select(environ) == {"OPENAI_API_KEY": "a", "TEAM_GPT": "b"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("*", "is not NAME, PREFIX_\\* or either with =provider"),
        ("OPENAI-KEY", "is not NAME"),
        ("A*B", "is not NAME"),
        ("GITOPS_FLOW_ADMIN_TOKEN", "the server's own"),
        ("GITOPS_*", "the server's own"),
        ("TEAM_KEY=acme", "unknown provider 'acme'"),
    ],
    ids=["everything", "dash", "inner-star", "own-setting", "prefix-of-own", "unknown-provider"],
)
def test_entries_that_are_refused(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecretPolicy([entry])


def test_the_servers_own_settings_are_never_allowed() -> None:
    policy = SecretPolicy(["G_*"])  # a prefix that does not cover them
    assert not policy.allows("GITOPS_FLOW_ADMIN_TOKEN")
    assert policy.select({"GITOPS_FLOW_WEBHOOK_SECRET": "x", "G_KEY": "y"}) == {"G_KEY": "y"}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://gw.example.com/v1", True),
        ("https://gw.example.com/v1/", True),
        ("https://gw.example.com/v1/chat", True),
        ("https://GW.Example.com:443/v1", True),
        ("https://gw.example.com./v1", True),
        ("https://gw.example.com/v10", False),
        ("https://gw.example.com/", False),
        ("https://gw.example.com.evil.net/v1", False),
        ("https://evil.net/gw.example.com/v1", False),
        ("https://gw.example.com@evil.net/v1", False),
        ("https://user:pw@gw.example.com/v1", False),
        ("http://gw.example.com/v1", False),
        ("https://gw.example.com:8443/v1", False),
        ("https://gw.example.com/v1?to=evil.net", False),
        ("ftp://gw.example.com/v1", False),
        ("not a url", False),
        ("http://127.0.0.1:11434", True),
        ("http://127.0.0.1:11434/api", True),
        ("http://127.0.0.1:11435", False),
        # the review's reproduction: a string prefix let this reach /internal-admin with the key
        ("https://gw.example.com/v1/gateway/../../internal-admin", False),
        ("https://gw.example.com/v1/./chat", False),
        ("https://gw.example.com/v1/..", False),
        ("https://gw.example.com/v1/%2e%2e/internal-admin", False),
        ("https://gw.example.com/v1%2F..%2Finternal-admin", False),
        ("https://gw.example.com/v1/%2F/internal-admin", False),
        ("https://gw.example.com/v1\\..\\internal-admin", False),
    ],
)
def test_base_urls_are_compared_in_normal_form(url: str, allowed: bool) -> None:
    policy = SecretPolicy([], ["openai=https://gw.example.com/v1", "openai=http://127.0.0.1:11434"])
    assert policy.allows_base_url(url, "openai") is allowed


def test_a_base_url_is_allowed_for_its_own_provider_only() -> None:
    """Any allowed URL took any provider's key: a gateway allowed for Ollama got OPENAI_API_KEY."""
    policy = SecretPolicy(None, ["ollama=http://127.0.0.1:11434", "openai=https://gw.example.com/v1"])
    assert policy.allows_base_url("http://127.0.0.1:11434", "ollama")
    assert not policy.allows_base_url("http://127.0.0.1:11434", "openai")
    assert not policy.allows_base_url("https://gw.example.com/v1", "anthropic")
    assert not policy.allows_base_url("https://gw.example.com/v1", None)


def test_no_base_url_is_allowed_by_default() -> None:
    assert not SecretPolicy().allows_base_url("https://api.openai.com/v1", "openai")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("openai=ftp://x", "is not an http(s) URL"),
        ("openai=https://user:pw@x/v1", "without credentials"),
        ("openai=https://x/v1?q=1", "query"),
        ("openai=/v1", "with a host"),
        ("openai=https://x/v1/../admin", "dot segments"),
        ("openai=https://x/v1%2fadmin", "encoded slashes"),
        ("https://gw.example.com/v1", "bound to no provider: write PROVIDER=URL"),
        ("opnai=https://gw.example.com/v1", "unknown provider 'opnai'"),
    ],
    ids=["scheme", "userinfo", "query", "path", "dots", "encoded", "unbound", "unknown-provider"],
)
def test_base_url_settings_that_are_refused(url: str, says: str) -> None:
    with pytest.raises(ValidationError, match="allowed_base_urls") as info:
        Settings(allowed_base_urls=(url,))
    assert says in str(info.value)


def test_settings_read_comma_separated_lists_from_the_environment() -> None:
    environ = {
        "GITOPS_FLOW_SECRETS": " OPENAI_API_KEY , TEAM_*=anthropic,",
        "GITOPS_FLOW_ALLOWED_BASE_URLS": "openai=https://gw.example.com/v1, ollama=http://127.0.0.1:11434",
    }
    policy = Settings.from_env(environ).secret_policy()
    assert policy == SecretPolicy(
        ["OPENAI_API_KEY", "TEAM_*=anthropic"], ["openai=https://gw.example.com/v1", "ollama=http://127.0.0.1:11434"]
    )
    assert policy.providers_for("TEAM_CLAUDE") == {"anthropic"}


def test_a_wrong_setting_is_a_usage_error_naming_the_entry() -> None:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stderr", err)
        code = cli.main(["validate", "."], environ={"GITOPS_FLOW_SECRETS": "OPENAI_API_KEY,GITOPS_FLOW_ADMIN_TOKEN"})
    assert code == cli.EXIT_USAGE
    assert "allowed_secrets" in err.getvalue() and "'GITOPS_FLOW_ADMIN_TOKEN'" in err.getvalue()


def test_each_provider_extra_installs_a_provider_package() -> None:
    """`pip install 'gitops-flow[openai]'` and the others install the package ChatModel imports for that provider."""
    import re
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    providers = {name: deps for name, deps in extras.items() if name not in ("redis", "otel", "dev", "sqlite-vec")}
    assert {"openai", "anthropic", "google", "ollama"} <= set(providers)
    for name, deps in providers.items():
        modules = {re.split(r"[<>=\[ ]", dep)[0].replace("-", "_") for dep in deps}
        assert modules and modules <= set(PROVIDER_MODULES.values()), (name, modules)
