"""Prompt templates whose mustache sections take lists: LangChain's own, with an input schema that takes any value
(a list, an object, a flag) under each key a section opens, where LangChain's types a section as an object (or as
text, in a chat prompt). Formatting is LangChain's, unchanged; flow/prompts.py bounds what a template may hold."""

from __future__ import annotations

from typing import Any

from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, create_model

from gitops_flow.flow.prompts import section_keys


def _widened(schema: type[BaseModel], keys: frozenset[str], name: str) -> type[BaseModel]:
    """``schema`` with each of ``keys`` taking any value (required as it was)."""
    fields: dict[str, Any] = {}
    for field_name, info in schema.model_fields.items():
        if field_name in keys:
            fields[field_name] = (Any, ... if info.is_required() else None)
        else:
            fields[field_name] = (info.annotation, info)
    return create_model(name, **fields)


class SectionedPromptTemplate(PromptTemplate):
    """A mustache PromptTemplate whose section keys take lists (see the module's docstring)."""

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return _widened(super().get_input_schema(config), section_keys(self.template), "PromptInput")


class SectionedChatPromptTemplate(ChatPromptTemplate):
    """A mustache ChatPromptTemplate whose section keys take lists (see the module's docstring)."""

    sections: frozenset[str] = frozenset()

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return _widened(super().get_input_schema(config), self.sections, "PromptInput")


SECTIONED = (SectionedPromptTemplate, SectionedChatPromptTemplate)  # lean forms treat them as LangChain's own
