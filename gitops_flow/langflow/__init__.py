"""The LangFlow boundary: LangFlow exports read as data and converted to flow documents, and LangFlow's run API.

One concept per module: ``export`` (an export read as data; no code is read), ``models`` (the chat model a node
describes), ``refusals`` (why a component cannot be converted), ``builder`` (the converter's workbench), ``nodes``
(what inputs, outputs, prompts, memory, parsers and tools become), ``chat`` (what models, agents and structured
outputs become), ``convert`` (export -> flow document) and ``api`` (``POST /api/v1/run/{flow}``, LangFlow's run API
on our server). Nothing here is imported by this file, so importing one module never loads the others.
"""
