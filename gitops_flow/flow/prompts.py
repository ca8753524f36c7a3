"""Prompt templates: what a template may hold, checked before it is ever formatted (``bad-template``).

Formatting a prompt must cost about the size of its template and its values, and must never reach into the values'
objects. An f-string template therefore holds plain ``{name}`` fields (``name`` a Python identifier) and ``{{``,
``}}`` for literal braces, nothing more of ``str.format``: a format spec can ask for any width (``{x:>3000000000}``
is a 3 GB string) or nest fields (``{x:{y}}``), a conversion calls ``repr`` (``{x!r}``), and attribute or index
access reaches into objects (``{x.__class__}``, ``{x[0]}``). A mustache template may use variables (``{{name}}``,
``{{name.key}}``) and sections, but no section inside another (an inverted one aside): a section repeats its body for
every item of a list, so nested sections multiply the answer's size by the length of each list.

A section's key takes a list (its body once per item: ``{{#docs}}- {{page_content}}{{/docs}}``), an object (its
body once, inside it) or any other value (its body once when it is truthy); ``section_keys`` names those keys, so
that a prompt's input schema takes any of them there (LangChain's types a section as an object, which refuses the
list RAG prompts are given).
"""

from __future__ import annotations

import re
from string import Formatter

from langchain_core.utils.mustache import ChevronError, tokenize

_SECTIONS = ("section", "inverted section")


def problem(template: str, template_format: str = "f-string") -> str | None:
    """Why ``template`` is refused, or None when it is a plain template of ``template_format``."""
    return _mustache(template) if template_format == "mustache" else _f_string(template)


def _f_string(template: str) -> str | None:
    try:
        fields = [
            (name, spec, conversion) for _, name, spec, conversion in Formatter().parse(template) if name is not None
        ]
    except ValueError as exc:
        return f"the template does not parse: {exc}; write {{{{ and }}}} for literal braces"
    for name, spec, conversion in fields:
        shown = _shown(name, spec, conversion)
        if not name:
            return f"{shown} has no name; fields are {{name}}"
        if "." in name or "[" in name:
            plain = re.split(r"[.\[]", name)[0] or "name"
            return f"{shown} reaches into a value (attribute or index access); fields are plain {{{plain}}}"
        if not name.isidentifier():
            return f"{shown} is not a variable name; fields are {{name}}, name a Python identifier"
        if conversion:
            return f"{shown} converts its value (!{conversion}); fields are plain {{{name}}}"
        if spec:
            nested = " with a field nested in it" if "{" in spec else ""
            return f"{shown} has a format spec{nested}; fields are plain {{{name}}}, without ':'"
    return None


def _shown(name: str, spec: str | None, conversion: str | None) -> str:
    text = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    return text if len(text) <= 60 else text[:57] + "...}"


def _mustache(template: str) -> str | None:
    opened: list[tuple[str, str]] = []  # (kind, key) of the sections open here, outermost first
    try:
        for kind, key in tokenize(template):
            if kind in _SECTIONS:
                repeating = [k for t, k in opened if t == "section"]
                if kind == "section" and repeating:  # an inverted section renders once at most: it multiplies nothing
                    return (
                        f"section {key!r} is inside section {repeating[-1]!r}; nested sections repeat for every pair "
                        "of items, so mustache sections may not nest"
                    )
                opened.append((kind, key))
            elif kind == "end" and opened:
                opened.pop()
    except ChevronError as exc:
        return f"the template does not parse: {' '.join(str(exc).split())}"
    return None


def section_keys(template: str) -> frozenset[str]:
    """The input keys that sections of a mustache ``template`` open (the first part of a dotted key), outside any
    section; empty for a template that does not parse (``problem`` says why)."""
    keys: set[str] = set()
    depth = 0
    try:
        for kind, key in tokenize(template):
            if kind in _SECTIONS:
                if depth == 0 and key != ".":
                    keys.add(key.split(".")[0])
                depth += 1
            elif kind == "end" and depth:
                depth -= 1
    except ChevronError:
        return frozenset()
    return frozenset(keys)
