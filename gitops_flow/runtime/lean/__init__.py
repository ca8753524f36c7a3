"""The lean executor: a flow compiled to a plain async program that gives what its LangChain runnable gives."""
