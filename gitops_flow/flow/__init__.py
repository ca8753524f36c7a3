"""The flow document: its model and JSON Schema, graph, bounds, prompts and positions; the routing file."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["bounds", "document", "graph", "locations", "prompts", "routing"]
