"""Telemetry of the request path: request context, structured logs, traces, token usage."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["context", "logs", "middleware", "nodes", "runs", "tracing"]
