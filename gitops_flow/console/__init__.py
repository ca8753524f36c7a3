"""The operator console: /ui, served by `gitops-flow serve` itself (docs/console.md)."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["auth", "context", "routes", "terminal"]
