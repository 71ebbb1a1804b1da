"""Model providers: the protocol the turn driver streams from, and a deterministic scripted model.

A provider turns a ``ModelRequest`` into an async iterator of model chunks (``ModelTextDelta``,
``ModelReasoningDelta``, ``ModelToolCall``, ``ModelUsage``, ``ModelRetry``, ``ModelError``). The
response ends when the iterator does. Raising from the iterator counts as a ``ModelError`` carrying
the exception's text.

``ScriptedModel`` plays back a script, one scripted response per request, so demos and tests run
offline and the same way every time. When the script runs out it answers with a ``ModelError``
(the turn records ``TurnError`` and commits as ``provider_error``); pass ``cycle=True`` to start
over from the first response instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol, Union, runtime_checkable

from .._errors import JsonValueError
from .._events import TokenUsage
from .._json import encode_json, short_repr
from ._machine import (
    MODEL_CHUNK_TYPES,
    ModelChunk,
    ModelError,
    ModelReasoningDelta,
    ModelTextDelta,
    ModelToolCall,
    ModelUsage,
)
from ._state import ChatMessage, ModelSpec

__all__ = ["ModelRequest", "ModelProvider", "ScriptedReply", "ScriptedModel", "DEFAULT_CHUNK_SIZE"]

#: Characters per scripted text delta: small enough that a reply visibly streams in a notebook.
DEFAULT_CHUNK_SIZE = 8

#: Rough characters per token for the scripted model's made-up usage numbers.
_CHARS_PER_TOKEN = 4


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRequest:
    """One model request: the conversation so far and the tools on offer (the tool catalog)."""

    session_id: str
    model: ModelSpec
    protocol_iteration: int
    messages: tuple[ChatMessage, ...]
    tools: tuple[dict[str, Any], ...] = dataclasses.field(default=(), hash=False)

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(tool["name"] for tool in self.tools)


@runtime_checkable
class ModelProvider(Protocol):
    """Anything with ``stream(request)`` returning an async iterator of model chunks."""

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One scripted response, in the order it streams: reasoning, text, tool calls, usage, error.

    ``tool_calls`` holds ``ModelToolCall`` values or ``(name, args)`` pairs; pairs get the ids
    ``call-1``, ``call-2``, ... in the order the model serves them. ``usage=None`` lets the model
    estimate usage.
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[Any, ...] = ()
    usage: TokenUsage | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        for call in self.tool_calls:
            if not isinstance(call, ModelToolCall) and not (
                isinstance(call, tuple) and len(call) == 2 and isinstance(call[0], str)
            ):
                raise TypeError(f"a scripted tool call is a ModelToolCall or a (name, args) pair, not {short_repr(call)}")


ScriptItem = Union[str, ScriptedReply, Sequence[ModelChunk]]


@dataclasses.dataclass(frozen=True, slots=True)
class _AutoIdCall:
    """A scripted call without an id: it gets ``call-{n}`` when served, so cycling stays unique."""

    name: str
    args: Any


def _split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / _CHARS_PER_TOKEN))


class ScriptedModel:
    """A deterministic model for offline runs; see the module docstring.

    ``script`` items are reply texts, ``ScriptedReply`` values, or explicit chunk sequences.
    ``delay`` seconds pass before each chunk (``asyncio.sleep``; 0 still yields to the loop, so
    other tasks, such as a notebook enqueueing work, interleave with the stream).
    """

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        delay: float = 0.0,
        cycle: bool = False,
        auto_usage: bool = True,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay < math.inf:
            raise ValueError(f"delay must be a finite non-negative number of seconds, got {delay!r}")
        self._chunk_size = chunk_size
        self._delay = float(delay)
        self._cycle = bool(cycle)
        self._auto_usage = bool(auto_usage)
        self._call_counter = 0
        self._responses: list[tuple[ModelChunk, ...]] = [self._compile(item) for item in script]
        self._next = 0
        self._requests: list[ModelRequest] = []

    # -- building ----------------------------------------------------------------------------------

    @classmethod
    def from_replies(
        cls,
        replies: Iterable[ScriptItem],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        delay: float = 0.0,
        cycle: bool = False,
        auto_usage: bool = True,
    ) -> ScriptedModel:
        """``ScriptedModel.from_replies(["Hello there", ScriptedModel.tool_call("add", {"a": 1})])``."""
        return cls(replies, chunk_size=chunk_size, delay=delay, cycle=cycle, auto_usage=auto_usage)

    @staticmethod
    def reply(text: str = "", *, reasoning: str = "", usage: TokenUsage | None = None) -> ScriptedReply:
        return ScriptedReply(text=text, reasoning=reasoning, usage=usage)

    @staticmethod
    def tool_call(
        name: str, args: Any = None, *, call_id: str | None = None, text: str = "", reasoning: str = ""
    ) -> ScriptedReply:
        """A response that calls one tool (optionally after some text); script the final answer next."""
        args = {} if args is None else args
        call = ModelToolCall(call_id, name, args) if call_id is not None else (name, args)
        return ScriptedReply(text=text, reasoning=reasoning, tool_calls=(call,))

    @staticmethod
    def failure(message: str, *, text: str = "") -> ScriptedReply:
        """A response that streams ``text`` and then fails with ``message``."""
        return ScriptedReply(text=text, error=message)

    def _compile(self, item: ScriptItem) -> tuple[ModelChunk, ...]:
        if isinstance(item, str):
            item = ScriptedReply(text=item)
        if isinstance(item, ScriptedReply):
            chunks: list[ModelChunk] = [ModelReasoningDelta(t) for t in _split(item.reasoning, self._chunk_size)]
            chunks += [ModelTextDelta(t) for t in _split(item.text, self._chunk_size)]
            for call in item.tool_calls:
                if not isinstance(call, ModelToolCall):
                    ModelToolCall("check", call[0], call[1])  # validate now, number when served
                    call = _AutoIdCall(call[0], call[1])
                chunks.append(call)
            if item.usage is not None:
                chunks.append(ModelUsage(item.usage))
            if item.error is not None:
                chunks.append(ModelError(item.error))
            return tuple(chunks)
        chunks = list(item)
        for chunk in chunks:
            if not isinstance(chunk, MODEL_CHUNK_TYPES):
                raise TypeError(f"not a model chunk: {short_repr(chunk)}")
        return tuple(chunks)

    # -- reading -----------------------------------------------------------------------------------

    @property
    def requests(self) -> tuple[ModelRequest, ...]:
        """Every request this model has served, in order."""
        return tuple(self._requests)

    @property
    def remaining(self) -> int | None:
        """Scripted responses left (``None`` when cycling)."""
        return None if self._cycle and self._responses else max(0, len(self._responses) - self._next)

    def _take(self) -> tuple[ModelChunk, ...]:
        if self._next >= len(self._responses):
            if not (self._cycle and self._responses):
                return (
                    ModelError(
                        f"scripted model has no reply left for request {len(self._requests)} "
                        f"(its script has {len(self._responses)})"
                    ),
                )
            self._next = 0
        response = self._responses[self._next]
        self._next += 1
        return response

    def _number(self, chunk: Any) -> ModelChunk:
        if isinstance(chunk, _AutoIdCall):
            self._call_counter += 1
            return ModelToolCall(f"call-{self._call_counter}", chunk.name, chunk.args)
        numbered: ModelChunk = chunk
        return numbered

    def _estimated_usage(self, request: ModelRequest, response: Sequence[ModelChunk]) -> TokenUsage:
        prompt = sum(len(m.content) + len(m.reasoning) for m in request.messages)
        output = 0
        reasoning = 0
        for chunk in response:
            if isinstance(chunk, ModelTextDelta):
                output += len(chunk.text)
            elif isinstance(chunk, ModelReasoningDelta):
                reasoning += len(chunk.text)
            elif isinstance(chunk, ModelToolCall):
                try:
                    output += len(chunk.name) + len(encode_json(chunk.args))
                except JsonValueError:  # the machine fails that call; it costs its name here
                    output += len(chunk.name)
        return TokenUsage(
            input_tokens=_tokens(prompt),
            output_tokens=_tokens(output + reasoning),
            reasoning_output_tokens=_tokens(reasoning) if reasoning else 0,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self._requests.append(request)
        chunks = [self._number(chunk) for chunk in self._take()]
        if self._auto_usage and not any(isinstance(c, (ModelUsage, ModelError)) for c in chunks):
            chunks.append(ModelUsage(self._estimated_usage(request, chunks)))
        for chunk in chunks:
            await asyncio.sleep(self._delay)
            yield chunk

    def __repr__(self) -> str:
        left = "cycling" if self._cycle else f"{self.remaining} left"
        return f"<ScriptedModel responses={len(self._responses)} ({left}) served={len(self._requests)}>"
