"""Secrets and credentials: which may be read, where each may go, the repository's, and masking."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["egress", "policy", "providers", "redaction", "references", "repo_credentials"]
