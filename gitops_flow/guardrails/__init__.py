"""Guardrails of the request path: limits per flow, ref and user (requests, runs at once, tokens) and the response
cache, each kept where the state is (memory, a SQLite file beside the state file, or Redis) so replicas share them."""
