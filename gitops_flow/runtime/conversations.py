"""Chat history: conversations kept per session within the server's bounds, and the runnable that reads and extends
them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from pydantic import BaseModel

from gitops_flow.exceptions import TurnTooLarge
from gitops_flow.stores.base import ConversationQuota

Turn = tuple[str, str]  # (role, text) with role "human" or "ai": plain data, so any store can keep it


class _Unsaved:
    """The mark of a run whose turn is not saved: an object, so that no client's JSON config can make it."""

    def __repr__(self) -> str:
        return "UNSAVED"


UNSAVED_KEY = "gitops_flow_unsaved"  # configurable[UNSAVED_KEY] is UNSAVED: the run reads the conversation only
UNSAVED = _Unsaved()


@dataclass(frozen=True, slots=True)
class TurnLimits:
    """How much of a conversation is kept: the size of one turn's text, the turns kept per session (the oldest go
    first), the idle time after which the whole conversation is deleted, and what all conversations take together
    (past it, the ones idle longest go)."""

    max_turn_bytes: int = 64 * 1024
    max_turns: int = 200
    ttl: float = 30 * 86_400.0
    quota: ConversationQuota = ConversationQuota()


class TurnStore(Protocol):
    """Where turns are kept (every StateStore is one): it applies the bounds it is given."""

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        """The last ``limit`` turns of a live conversation, oldest first; [] for none."""
        ...

    async def append_turns(
        self, session_id: str, turns: Sequence[Turn], *, ttl: float, keep: int, quota: ConversationQuota
    ) -> None:
        """Add turns, keep the newest ``keep``, let the conversation expire ``ttl`` seconds from now, and delete the
        conversations idle longest while all of them exceed ``quota``."""
        ...


class HistoryStore(Protocol):
    """What a conversational flow reads and extends: conversations per session id, within ``limits``."""

    @property
    def limits(self) -> TurnLimits: ...

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        """The last ``limit`` messages of the session, oldest first."""
        ...

    async def append_turns(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add messages at the end of the session's history."""
        ...


class Conversations:
    """A HistoryStore over a TurnStore (the server's state store): every turn saved is cut to ``max_turn_bytes`` (a
    request whose own text is larger is refused before it runs, see WithHistory.check_turn; an answer is cut), each
    session keeps its last ``max_turns`` turns, a conversation idle for ``ttl`` seconds is deleted, and past the
    ``quota`` of all conversations the ones idle longest are deleted."""

    def __init__(self, store: TurnStore, limits: TurnLimits | None = None) -> None:
        self.store = store
        self._limits = limits or TurnLimits()

    def __repr__(self) -> str:
        return f"Conversations({self.store!r}, {self._limits!r})"

    @property
    def limits(self) -> TurnLimits:
        return self._limits

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        return await self.store.load_turns(session_id, limit)

    async def append_turns(self, session_id: str, turns: Sequence[Turn]) -> None:
        limits = self._limits
        kept = [(role, _clip(text, limits.max_turn_bytes)) for role, text in turns]
        await self.store.append_turns(session_id, kept, ttl=limits.ttl, keep=limits.max_turns, quota=limits.quota)


class _MemoryTurns:
    """Turns kept in this process for its life (a test run): ``keep`` and the quota's sessions apply, ``ttl``
    outlives the process."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Turn]] = {}

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        return list(self._sessions.get(session_id, [])[-limit:]) if limit > 0 else []

    async def append_turns(
        self, session_id: str, turns: Sequence[Turn], *, ttl: float, keep: int, quota: ConversationQuota
    ) -> None:
        kept = self._sessions.pop(session_id, [])  # put back last: the front is the conversation idle longest
        kept.extend(turns)
        del kept[:-keep]
        self._sessions[session_id] = kept
        while len(self._sessions) > quota.max_sessions:
            del self._sessions[next(iter(self._sessions))]


class MemoryHistoryStore(Conversations):
    """Conversations kept in this process, within the same limits as the server's: for `gitops-flow test`,
    dry-builds and the tests."""

    def __init__(self, limits: TurnLimits | None = None) -> None:
        super().__init__(_MemoryTurns(), limits)


def _clip(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never in the middle of a character."""
    data = text.encode()
    return text if len(data) <= max_bytes else data[:max_bytes].decode("utf-8", "ignore")


class MissingSession(ValueError):
    """A conversational flow was called without a session id."""


class Inner(Protocol):
    """What WithHistory runs: a flow's runnable, or its lean program (lean.program.LeanFlow)."""

    def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Awaitable[Any]: ...

    def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]: ...

    def get_output_schema(self, config: RunnableConfig | None = None) -> Any: ...


class WithHistory(Runnable[dict[str, Any], Any]):
    """Runs ``inner`` with the session's past messages added under ``history_key``, then saves the new turn.

    The session is ``config["configurable"]["session_id"]``; a run marked UNSAVED reads it and saves nothing. The
    turn saved is the input's ``input_key`` text and
    the flow's answer (its text; anything else as JSON). Streams pass through chunk by chunk. Keyword arguments
    of a call go to ``inner`` (the lean program's ``observer``).
    """

    def __init__(
        self,
        inner: Inner,
        store: HistoryStore,
        *,
        input_key: str,
        history_key: str,
        window: int,
        input_model: type[BaseModel],
    ) -> None:
        self.inner = inner
        self.input_model = input_model
        self.store = store
        self.input_key = input_key
        self.history_key = history_key
        self.window = window

    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        return dict[str, Any]

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.input_model

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.inner.get_output_schema(config)  # type: ignore[no-any-return]

    def over(self, inner: Inner) -> WithHistory:
        """The same conversation kept around another ``inner`` (the lean program of the same flow)."""
        return WithHistory(
            inner,
            self.store,
            input_key=self.input_key,
            history_key=self.history_key,
            window=self.window,
            input_model=self.input_model,
        )

    def check_turn(self, input: Any) -> None:
        """Raise TurnTooLarge when the input's text is larger than a turn the store keeps: a request is refused
        before it runs (and before its session is pinned), not cut behind the caller's back."""
        text = input.get(self.input_key) if isinstance(input, dict) else None
        if not isinstance(text, str):
            return  # not this flow's input shape: the input schema says so
        limit, size = self.store.limits.max_turn_bytes, len(text.encode())
        if size > limit:
            raise TurnTooLarge(
                f"the text under {self.input_key!r} is {size:,} bytes; this server keeps conversation turns of at"
                f" most {limit:,} bytes (max_turn_bytes)"
            )

    async def past(self, session: str) -> list[Turn]:
        """The turns a run in ``session`` reads now: its last ``window``, oldest first (the response cache keys a
        conversation's answers by them)."""
        return await self.store.load_turns(session, self.window)

    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return _run_sync(self.ainvoke(input, config, **kwargs))

    def stream(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield _run_sync(self.ainvoke(input, config, **kwargs))

    async def ainvoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        session, enriched = await self._prepare(input, config)
        output = await self.inner.ainvoke(enriched, config, **kwargs)
        await self._save(session, input, output, config)
        return output

    async def astream(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        session, enriched = await self._prepare(input, config)
        chunks = []
        async for chunk in self.inner.astream(enriched, config, **kwargs):
            chunks.append(chunk)
            yield chunk
        await self._save(session, input, _joined(chunks), config)

    async def _prepare(self, input: Any, config: RunnableConfig | None) -> tuple[str, dict[str, Any]]:
        session = ensure_config(config).get("configurable", {}).get("session_id")
        if not session:
            raise MissingSession("this flow keeps a conversation: give a session id (configurable.session_id)")
        if not isinstance(input, dict) or not isinstance(input.get(self.input_key), str):
            raise ValueError(f"this flow's input is an object with the text under {self.input_key!r}")
        self.check_turn(input)
        turns = await self.past(str(session))
        return str(session), {**input, self.history_key: [_message(role, text) for role, text in turns]}

    async def _save(self, session: str, input: dict[str, Any], output: Any, config: RunnableConfig | None) -> None:
        """Add the turn, unless the run is marked UNSAVED (a canary's verification on its primary, attempts.py)."""
        if ensure_config(config).get("configurable", {}).get(UNSAVED_KEY) is UNSAVED:
            return
        await self.store.append_turns(session, [("human", input[self.input_key]), ("ai", _text(output))])


def _message(role: str, text: str) -> BaseMessage:
    return HumanMessage(text) if role == "human" else AIMessage(text)


def _text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        return output.text
    return orjson.dumps(output, default=str).decode()


def _joined(chunks: list[Any]) -> Any:
    if chunks and all(isinstance(c, str) for c in chunks):
        return "".join(chunks)
    if chunks and all(isinstance(c, BaseMessage) for c in chunks):
        total = chunks[0]
        for chunk in chunks[1:]:
            total = total + chunk
        return total
    return chunks[-1] if chunks else ""  # parsers that stream whole partial values end on the complete one


def _run_sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("call a conversational flow with ainvoke/astream inside an event loop")
