"""What a node can be: the allowlist, the built-in components, the agent and the fakes."""
