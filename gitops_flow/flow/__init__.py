"""The flow document: its model and JSON Schema, its graph, its bounds, prompts, and the routing file."""
