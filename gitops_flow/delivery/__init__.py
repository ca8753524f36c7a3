"""Git in, versions out: source, builds, versions, the reconciler, canaries, pins and the routing table."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = [
    "builds",
    "canaries",
    "choice",
    "corpus",
    "guard",
    "leader",
    "published",
    "reconciler",
    "routing_table",
    "source",
    "versions",
]
