"""Guardrails of the request path: limits per flow, ref and user, and the response cache."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["backends", "cache", "gate"]
