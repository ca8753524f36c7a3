"""The lean executor: a flow as a plain async program that gives what its LangChain runnable gives."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["forms", "identity", "program"]
