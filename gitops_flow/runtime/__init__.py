"""A flow compiled to a runnable and executed (lean or LangChain), its tests, tweaks and conversations."""
