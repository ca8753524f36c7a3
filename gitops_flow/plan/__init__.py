"""`gitops-flow plan`: what merging a branch will do, computed offline and rendered for people and tools."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["compute", "render"]
