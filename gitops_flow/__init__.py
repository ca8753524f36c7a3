"""gitops-flow: LLM flows kept in Git, checked in CI and served by commit."""

__version__ = "0.1.0"
