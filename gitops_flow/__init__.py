"""gitops-flow: LLM flows kept in Git, checked in CI and served by commit (docs/architecture.md)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
