"""Static checks of a working tree: flow documents, the routing file and contracts -> problems."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["contract", "documents", "routing", "worktree"]
