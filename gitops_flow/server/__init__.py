"""The request path over HTTP: endpoints, the edge, LangServe's and LangFlow's APIs, OpenAPI, SSE."""
