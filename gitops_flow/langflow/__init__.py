"""LangFlow exports read as data and converted to flow documents; nothing here runs a node's code."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["convert"]
