"""The request path over HTTP: endpoints, the edge, LangServe's and LangFlow's APIs, OpenAPI, SSE."""

# the modules other packages use (the rest are this package's own); none is imported here, so importing one
# module never loads the others
__all__ = ["edge", "endpoints", "langflow_api", "langserve_api", "listener", "openapi", "views", "webhooks"]
