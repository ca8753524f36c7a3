"""A flow compiled to a runnable and executed (lean or LangChain): its tests, tweaks and conversations."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["compiler", "conversations", "executor", "flow_tests", "tweaks"]
