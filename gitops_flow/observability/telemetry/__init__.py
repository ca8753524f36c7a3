"""Telemetry of the request path: the context of each request (what its log lines and spans carry), structured
logs, OpenTelemetry traces of requests, runs and nodes, and the token usage the models report."""
