"""Runtime values: model and session policy, chat messages, session state, usage and tool state.

Every value here is a frozen, slotted dataclass validated when built. Configuration mistakes raise
``LashRuntimeError`` with code ``invalid_configuration``; a malformed message or record (a
programming error in the caller) raises ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from .._cursor import SessionRevision
from .._errors import JsonValueError, LashRuntimeError, RuntimeErrorCode
from .._events import TokenUsage
from .._json import encode_json, short_repr
from .._validate import id_tuple, is_utf8_str

__all__ = [
    "ModelSpec",
    "DEFAULT_MODEL",
    "SessionPolicy",
    "ChatRole",
    "ChatMessage",
    "ToolCall",
    "ToolCallRecord",
    "RuntimeSessionState",
    "SessionReadView",
    "TurnUsageEntry",
    "SessionUsageReport",
    "ToolSpec",
    "ToolState",
    "OpenAgentFrameResult",
    "TurnStatus",
    "TurnOutcome",
    "default_agent_frame_id",
]


def _config_error(message: str) -> LashRuntimeError:
    return LashRuntimeError(RuntimeErrorCode.INVALID_CONFIGURATION, message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_limit(name: str, value: Any) -> int:
    if not _is_int(value):
        raise _config_error(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise _config_error(f"{name} must be greater than zero")
    return int(value)


def _check_json(name: str, value: Any) -> None:
    """Raises ``JsonValueError`` (a ``ValueError``) naming ``name`` when ``value`` is not JSON."""
    try:
        encode_json(value)
    except JsonValueError as err:
        raise JsonValueError(err.kind, f"{name} must be JSON-serialisable: {err.reason}") from None


def _text(name: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not is_utf8_str(value):
        raise ValueError(f"{name} is not valid UTF-8 text: {short_repr(value)}")
    if not allow_empty and value == "":
        raise ValueError(f"{name} must not be empty")
    return value


# --- model and policy -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model a session talks to and its token limits.

    ``context_window_tokens`` is the prompt budget (the most input the provider accepts for this
    model on this route: what history pruning and the UI measure against); ``output_token_capacity``
    is the optional cap on one response. Both must be positive.
    """

    id: str
    context_window_tokens: int
    _: dataclasses.KW_ONLY
    variant: str | None = None
    output_token_capacity: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise _config_error(f"model id must be a str, not {type(self.id).__name__}")
        if self.variant is not None and not isinstance(self.variant, str):
            raise _config_error(f"model variant must be a str or None, not {type(self.variant).__name__}")
        _positive_limit("context_window_tokens", self.context_window_tokens)
        if self.output_token_capacity is not None:
            _positive_limit("output_token_capacity", self.output_token_capacity)

    @classmethod
    def from_token_limits(
        cls,
        id: str,
        variant: str | None,
        context_window_tokens: int,
        output_token_capacity: int | None,
    ) -> ModelSpec:
        """Rust's ``ModelSpec::from_token_limits(id, variant, context_window_tokens,
        output_token_capacity)``: zero limits raise ``LashRuntimeError(invalid_configuration)``."""
        return cls(
            id,
            context_window_tokens,
            variant=variant,
            output_token_capacity=output_token_capacity,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.variant is not None:
            out["variant"] = self.variant
        limits: dict[str, Any] = {"context_window_tokens": self.context_window_tokens}
        if self.output_token_capacity is not None:
            limits["output_token_capacity"] = self.output_token_capacity
        out["limits"] = limits
        return out


#: The model a policy names when none is given: the offline scripted model, with a window large
#: enough that a notebook's context gauge reads like a real model's.
DEFAULT_MODEL = ModelSpec("scripted", 200_000)


@dataclasses.dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How a session runs. ``max_turns`` caps model requests per turn (``None``: the runtime's
    ``MAX_PROTOCOL_ITERATIONS``)."""

    model: ModelSpec = DEFAULT_MODEL
    provider_id: str = ""
    autonomous: bool = False
    max_turns: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelSpec):
            raise _config_error(f"policy model must be a ModelSpec, not {type(self.model).__name__}")
        if not isinstance(self.provider_id, str):
            raise _config_error("policy provider_id must be a str")
        if not isinstance(self.autonomous, bool):
            raise _config_error("policy autonomous must be a bool")
        if self.max_turns is not None:
            _positive_limit("max_turns", self.max_turns)

    @property
    def model_id(self) -> str:
        return self.model.id

    @property
    def context_window_tokens(self) -> int:
        return self.model.context_window_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "provider_id": self.provider_id.strip(),
            "autonomous": self.autonomous,
            "max_turns": self.max_turns,
        }


# --- messages -------------------------------------------------------------------------------------


class ChatRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    #: Runtime notes in the conversation, e.g. "turn limit reached".
    SYSTEM = "system"


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for. ``args`` is any JSON value (usually an object)."""

    call_id: str
    name: str
    args: Any = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _text("call_id", self.call_id)
        _text("tool name", self.name)
        _check_json("tool args", self.args)

    def to_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "name": self.name, "args": self.args}


@dataclasses.dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation.

    ``user``/``system``: ``content`` only. ``assistant``: ``content`` (may be empty when it only
    calls tools), optional ``reasoning`` and ``tool_calls``. ``tool``: the rendered tool output in
    ``content`` plus ``tool_call_id`` and ``tool_name``.
    """

    role: ChatRole
    content: str
    _: dataclasses.KW_ONLY
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", ChatRole(self.role))
        _text("message content", self.content, allow_empty=True)
        _text("message reasoning", self.reasoning, allow_empty=True)
        calls = tuple(self.tool_calls)
        if not all(isinstance(call, ToolCall) for call in calls):
            raise TypeError("tool_calls must be ToolCall values")
        object.__setattr__(self, "tool_calls", calls)
        if calls and self.role is not ChatRole.ASSISTANT:
            raise ValueError("only assistant messages carry tool calls")
        if self.role is ChatRole.TOOL:
            _text("tool_call_id", self.tool_call_id)
            _text("tool_name", self.tool_name)
        elif self.tool_call_id is not None or self.tool_name is not None:
            raise ValueError("only tool messages carry tool_call_id and tool_name")

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        return cls(ChatRole.USER, content)

    @classmethod
    def assistant(
        cls, content: str, *, reasoning: str = "", tool_calls: tuple[ToolCall, ...] = ()
    ) -> ChatMessage:
        return cls(ChatRole.ASSISTANT, content, reasoning=reasoning, tool_calls=tool_calls)

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str, tool_name: str) -> ChatMessage:
        return cls(ChatRole.TOOL, content, tool_call_id=tool_call_id, tool_name=tool_name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.reasoning:
            out["reasoning"] = self.reasoning
        if self.tool_calls:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
            out["tool_name"] = self.tool_name
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A finished tool call: what was asked, what came back (the tool output JSON), how long."""

    call_id: str
    name: str
    args: Any = dataclasses.field(hash=False)
    output: Any = dataclasses.field(hash=False)
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        outcome = self.output.get("outcome") if isinstance(self.output, Mapping) else None
        return isinstance(outcome, Mapping) and outcome.get("status") == "success"

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "args": self.args,
            "output": self.output,
            "duration_ms": self.duration_ms,
        }


# --- session state --------------------------------------------------------------------------------


def default_agent_frame_id(session_id: str) -> str:
    """The frame a session starts in (Rust: ``{session_id}:frame:initial``)."""
    return f"{session_id}:frame:initial"


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeSessionState:
    """The runtime's persisted view of a session. ``head_revision`` is ``None`` until a store
    persists the session (never, for the in-memory runtime), so ``revision`` is ``turn_index``."""

    session_id: str
    head_revision: int | None
    turn_index: int
    agent_frames: tuple[str, ...]
    current_agent_frame_id: str
    policy: SessionPolicy = SessionPolicy()
    token_usage: TokenUsage = TokenUsage()

    def __post_init__(self) -> None:
        _text("session_id", self.session_id)
        object.__setattr__(self, "agent_frames", id_tuple(self.agent_frames, "agent_frames", ValueError))

    @property
    def revision(self) -> SessionRevision:
        return SessionRevision(self.head_revision if self.head_revision is not None else self.turn_index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "head_revision": self.head_revision,
            "turn_index": self.turn_index,
            "agent_frames": list(self.agent_frames),
            "current_agent_frame_id": self.current_agent_frame_id,
            "policy": self.policy.to_dict(),
            "token_usage": self.token_usage.to_dict(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class SessionReadView:
    """The durable, committed state a client renders: the conversation and its running usage."""

    session_id: str
    turn_index: int
    messages: tuple[ChatMessage, ...]
    usage: TokenUsage
    policy: SessionPolicy
    current_agent_frame_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(self.messages))

    @property
    def last_assistant_text(self) -> str | None:
        for message in reversed(self.messages):
            if message.role is ChatRole.ASSISTANT and message.content:
                return message.content
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "turn_index": self.turn_index,
            "messages": [message.to_dict() for message in self.messages],
            "usage": self.usage.to_dict(),
            "policy": self.policy.to_dict(),
            "current_agent_frame_id": self.current_agent_frame_id,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class TurnUsageEntry:
    """Usage of one committed turn; ``turn_index`` is the index the turn committed as (1, 2, ...)."""

    turn_index: int
    usage: TokenUsage
    requests: int

    def to_dict(self) -> dict[str, Any]:
        return {"turn_index": self.turn_index, "usage": self.usage.to_dict(), "requests": self.requests}


@dataclasses.dataclass(frozen=True, slots=True)
class SessionUsageReport:
    """Cumulative usage of the committed turns, turn by turn, and the model requests they made."""

    usage: TokenUsage
    per_turn: tuple[TurnUsageEntry, ...]
    requests: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_turn", tuple(self.per_turn))

    @property
    def turns(self) -> int:
        return len(self.per_turn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "usage": self.usage.to_dict(),
            "per_turn": [entry.to_dict() for entry in self.per_turn],
            "requests": self.requests,
        }


# --- tools ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ToolSpec:
    """A registered tool as the model sees it. ``input_schema`` is kept as given; it is checked
    when the catalog is built (``LashRuntime.active_tool_catalog``)."""

    name: str
    description: str = ""
    input_schema: Any = dataclasses.field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclasses.dataclass(frozen=True, slots=True)
class ToolState:
    """The tool registry at one ``generation``; tools sorted by name."""

    generation: int
    tools: tuple[ToolSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.tools))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tool.name for tool in self.tools)

    def get(self, name: str) -> ToolSpec | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    def __len__(self) -> int:
        return len(self.tools)

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "tools": [tool.to_dict() for tool in self.tools]}


@dataclasses.dataclass(frozen=True, slots=True)
class OpenAgentFrameResult:
    """``opened`` is False when the id was blank or already current (nothing changed)."""

    frame_id: str
    opened: bool


# --- turn outcome ---------------------------------------------------------------------------------


class TurnStatus(enum.StrEnum):
    """How a committed turn ended (Rust: ``Finished`` or ``Stopped(reason)``)."""

    FINISHED = "finished"
    #: The model failed (error chunk, raised exception, empty response); a TurnError was recorded.
    PROVIDER_ERROR = "provider_error"
    #: The protocol iteration cap stopped a tool loop.
    MAX_TURNS = "max_turns"


@dataclasses.dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What ``run_turn`` returns once the turn is committed."""

    status: TurnStatus
    text: str
    tool_calls: tuple[ToolCallRecord, ...]
    usage: TokenUsage
    revision: SessionRevision
    turn_index: int
    requests: int
    error: str | None = None
    queued_batch_ids: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is TurnStatus.FINISHED
