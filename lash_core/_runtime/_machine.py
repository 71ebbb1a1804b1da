"""The turn machine: one turn of a session as a pure state machine (sans-IO, h11 style).

The driver ``send``s inputs (the turn's start, model stream chunks, tool results, checkpoint
deliveries) and acts on the outputs: ``Emit(activity)`` goes to the observation sink, and each
request (``RequestModel``, ``CallTool``, ``Checkpoint``, ``CommitTurn``, ``FailTurn``) is work for the
driver, whose result comes back as the next input. The machine never reads a clock, sleeps or
touches an event loop; durations arrive inside ``ToolResult``.

Rules (read these before the code):

* States and moves are the table ``TURN_TRANSITIONS``. An input the table does not list for the
  current state, or one that contradicts the machine (a result for a call it is not waiting on),
  raises ``IllegalTurnInput`` and leaves the machine exactly as it was.
* A turn is a loop of protocol iterations, numbered from 0. Each starts with
  ``ModelRequestStarted`` and one ``RequestModel``; the model's chunks stream in and
  ``ModelResponseEnded`` closes the response.
* A response with tool calls: the calls run one at a time in the model's order (``CallTool``, then
  that call's ``ToolResult``). A tool's start and completion share the correlation id
  ``tool:{call_id}``. After the last result comes the ``after_work`` checkpoint, then the next
  iteration.
* A response without tool calls is the answer: the ``before_completion`` checkpoint, then
  ``CommitTurn``. If queued input arrives at that checkpoint the turn continues instead.
* At a checkpoint the driver may hand over queued input (``CheckpointResolved``): the machine
  emits ``QueuedWorkStarted(active_turn_checkpoint)`` for the claimed batches and
  ``QueuedInputAccepted``, appends the inputs as user messages, and starts the next iteration.
* The deltas of one response share one correlation id for prose and one for reasoning. Every
  other activity is independent (fresh correlation id).
* ``max_protocol_iterations`` caps model requests per turn: when tools finish and the next request
  would pass the cap, a system note is appended and the turn commits as ``max_turns``; a final
  answer at the cap commits without its checkpoint (queued input waits for the next turn).
* Model failure (``ModelError``, or an empty response that does not follow a tool result) emits
  ``TurnError("LLM error: ...")`` and commits the turn as ``provider_error``, as lash does: the
  user's input stays in the history and the revision advances.
* ``AbortTurn`` is the driver giving up (broken tool catalog, store failure): ``TurnError``, then
  ``FailTurn``; nothing is committed.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Union

from .._errors import IllegalTurnInput, JsonValueError, RuntimeErrorCode
from .._events import (
    AssistantProseDelta,
    ModelRequestStarted,
    QueuedInputAccepted,
    QueuedWorkStarted,
    ReasoningDelta,
    RetryStatus,
    TokenUsage,
    ToolCallCompleted,
    ToolCallStarted,
    TurnActivity,
    TurnError,
    TurnEvent,
    Usage,
)
from .._ids import new_id
from .._input import TurnInput
from ._state import ChatMessage, ChatRole, ToolCall, ToolCallRecord, TurnStatus
from .._json import short_repr, to_plain_json
from .._validate import id_tuple, is_number, is_uint, is_utf8_str, repair_text
from ._tools import render_tool_output, tool_failure

__all__ = [
    "MAX_PROTOCOL_ITERATIONS",
    "TurnState",
    "CheckpointKind",
    "IllegalTurnInput",
    # inputs
    "StartTurn",
    "ModelTextDelta",
    "ModelReasoningDelta",
    "ModelToolCall",
    "ModelUsage",
    "ModelRetry",
    "ModelError",
    "ModelResponseEnded",
    "ToolResult",
    "CheckpointResolved",
    "AbortTurn",
    "ModelChunk",
    "MODEL_CHUNK_TYPES",
    "TurnInputEvent",
    # outputs
    "Emit",
    "RequestModel",
    "CallTool",
    "Checkpoint",
    "CommitTurn",
    "FailTurn",
    "TurnOutput",
    "TurnMachineSnapshot",
    "TURN_TRANSITIONS",
    "TurnMachine",
]

#: Model requests one turn may make unless the policy sets ``max_turns``. A model that keeps
#: calling tools must not spin forever; 25 round trips is far beyond any real or demo turn.
MAX_PROTOCOL_ITERATIONS = 25


class TurnState(enum.StrEnum):
    NOT_STARTED = "not_started"
    AWAITING_MODEL = "awaiting_model"
    AWAITING_TOOL = "awaiting_tool"
    AWAITING_CHECKPOINT = "awaiting_checkpoint"
    #: ``CommitTurn`` was emitted; the driver commits. Terminal.
    FINISHED = "finished"
    #: ``FailTurn`` was emitted; nothing is committed. Terminal.
    ABORTED = "aborted"


class CheckpointKind(enum.StrEnum):
    """Where queued input may join a running turn (wire strings of lash's ``CheckpointKind``)."""

    AFTER_WORK = "after_work"
    BEFORE_COMPLETION = "before_completion"


def _text(name: str, value: Any, *, allow_empty: bool = True) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{name} must not be empty")


def _uint(name: str, value: Any) -> None:
    if not is_uint(value):
        raise ValueError(f"{name} must be an int in 0..2**64-1, got {short_repr(value)}")


def _inputs(value: Any) -> tuple[TurnInput, ...]:
    items = tuple(value)
    for item in items:
        if not isinstance(item, TurnInput):
            raise TypeError(f"turn inputs must be TurnInput values, not {type(item).__name__}")
    return items


# --- inputs -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StartTurn:
    """Begin the turn with ``inputs``; ``queued_batch_ids`` names the batches claimed at the idle
    boundary that supplied them (then ``QueuedWorkStarted(idle)`` is the turn's first activity)."""

    inputs: tuple[TurnInput, ...]
    queued_batch_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _inputs(self.inputs))
        object.__setattr__(
            self, "queued_batch_ids", id_tuple(self.queued_batch_ids, "queued_batch_ids", ValueError)
        )
        if not self.inputs:
            raise ValueError("a turn needs at least one input")


@dataclasses.dataclass(frozen=True, slots=True)
class ModelTextDelta:
    """Streamed answer text; lone surrogates are repaired to U+FFFD (the model's text is kept)."""

    text: str

    def __post_init__(self) -> None:
        _text("text", self.text)
        object.__setattr__(self, "text", repair_text(self.text))


@dataclasses.dataclass(frozen=True, slots=True)
class ModelReasoningDelta:
    """Streamed reasoning text; repaired like ``ModelTextDelta``."""

    text: str

    def __post_init__(self) -> None:
        _text("text", self.text)
        object.__setattr__(self, "text", repair_text(self.text))


@dataclasses.dataclass(frozen=True, slots=True)
class ModelToolCall:
    """The model asks for a tool; calls run after the response ends."""

    call_id: str
    name: str
    args: Any = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # ids are checked here; ``args`` are the model's data, checked when the machine takes the
        # call (arguments that are not JSON fail that one call, never the model stream)
        _text("call_id", self.call_id, allow_empty=False)
        _text("tool name", self.name, allow_empty=False)
        for what, value in (("call_id", self.call_id), ("tool name", self.name)):
            if not is_utf8_str(value):  # an id is matched, not read: refused, never repaired
                raise ValueError(f"{what} is not valid UTF-8: {short_repr(value)}")


@dataclasses.dataclass(frozen=True, slots=True)
class ModelUsage:
    usage: TokenUsage

    def __post_init__(self) -> None:
        if not isinstance(self.usage, TokenUsage):
            raise TypeError("usage must be a TokenUsage")


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRetry:
    """The provider is retrying the request: whatever this response streamed so far is dropped."""

    wait_seconds: float
    attempt: int
    max_attempts: int
    reason: str

    def __post_init__(self) -> None:
        wait = self.wait_seconds
        if not is_number(wait) or wait < 0:  # a finite f64, as the wire carries it
            raise ValueError(f"wait_seconds must be a finite non-negative number, got {short_repr(wait)}")
        _uint("attempt", self.attempt)
        _uint("max_attempts", self.max_attempts)
        _text("reason", self.reason)
        object.__setattr__(self, "reason", repair_text(self.reason))


@dataclasses.dataclass(frozen=True, slots=True)
class ModelError:
    """The model request failed; ``message`` is the provider's text (shown as ``LLM error: ...``)."""

    message: str

    def __post_init__(self) -> None:
        _text("message", self.message)
        object.__setattr__(self, "message", repair_text(self.message))


@dataclasses.dataclass(frozen=True, slots=True)
class ModelResponseEnded:
    """The model's stream finished normally (the driver sends this when the iterator is exhausted)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ToolResult:
    """The output JSON of the call the machine is waiting on, and how long it took."""

    call_id: str
    output: Any = dataclasses.field(hash=False)
    duration_ms: int = 0

    def __post_init__(self) -> None:
        _text("call_id", self.call_id, allow_empty=False)
        _uint("duration_ms", self.duration_ms)


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointResolved:
    """What the checkpoint delivered: claimed ``batch_ids`` and their ``inputs`` (both empty: none)."""

    inputs: tuple[TurnInput, ...] = ()
    batch_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _inputs(self.inputs))
        object.__setattr__(self, "batch_ids", id_tuple(self.batch_ids, "batch_ids", ValueError))


@dataclasses.dataclass(frozen=True, slots=True)
class AbortTurn:
    """The driver cannot continue (configuration or store failure); the turn is not committed."""

    code: RuntimeErrorCode
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", RuntimeErrorCode(self.code))
        _text("message", self.message)


ModelChunk = Union[
    ModelTextDelta, ModelReasoningDelta, ModelToolCall, ModelUsage, ModelRetry, ModelError
]
#: What a model provider's stream may yield.
MODEL_CHUNK_TYPES: tuple[type, ...] = (
    ModelTextDelta,
    ModelReasoningDelta,
    ModelToolCall,
    ModelUsage,
    ModelRetry,
    ModelError,
)
TurnInputEvent = Union[
    StartTurn, ModelChunk, ModelResponseEnded, ToolResult, CheckpointResolved, AbortTurn
]


# --- outputs ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Emit:
    """An activity for the observation sink."""

    activity: TurnActivity

    @property
    def event(self) -> TurnEvent:
        return self.activity.event


@dataclasses.dataclass(frozen=True, slots=True)
class RequestModel:
    """Stream one model response for ``messages`` (history plus this turn so far)."""

    protocol_iteration: int
    messages: tuple[ChatMessage, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class CallTool:
    call_id: str
    name: str
    args: Any = dataclasses.field(hash=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """A safe point to accept queued input; answer with ``CheckpointResolved``."""

    kind: CheckpointKind
    protocol_iteration: int


@dataclasses.dataclass(frozen=True, slots=True)
class CommitTurn:
    """The turn is over: append ``messages`` to the session, add ``usage``, advance the turn index."""

    messages: tuple[ChatMessage, ...]
    usage: TokenUsage
    text: str
    status: TurnStatus
    requests: int
    tool_calls: tuple[ToolCallRecord, ...]
    queued_batch_ids: tuple[str, ...]
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FailTurn:
    """The turn is abandoned without a commit; the driver raises ``LashRuntimeError(code, message)``."""

    code: RuntimeErrorCode
    message: str


TurnOutput = Union[Emit, RequestModel, CallTool, Checkpoint, CommitTurn, FailTurn]


@dataclasses.dataclass(frozen=True, slots=True)
class TurnMachineSnapshot:
    """The whole observable state of a machine, for tests and debugging."""

    state: TurnState
    protocol_iteration: int
    requests: int
    messages: tuple[ChatMessage, ...]
    usage: TokenUsage
    current_call_id: str | None
    queued_call_ids: tuple[str, ...]
    checkpoint: CheckpointKind | None
    tool_calls: tuple[ToolCallRecord, ...]
    queued_batch_ids: tuple[str, ...]


# --- the transition table ---------------------------------------------------------------------------

_S = TurnState
_ABORT: dict[type, frozenset[TurnState]] = {AbortTurn: frozenset({_S.ABORTED})}

#: state -> input type -> the states that input may lead to. Anything missing is illegal.
TURN_TRANSITIONS: dict[TurnState, dict[type, frozenset[TurnState]]] = {
    _S.NOT_STARTED: {StartTurn: frozenset({_S.AWAITING_MODEL}), **_ABORT},
    _S.AWAITING_MODEL: {
        ModelTextDelta: frozenset({_S.AWAITING_MODEL}),
        ModelReasoningDelta: frozenset({_S.AWAITING_MODEL}),
        ModelToolCall: frozenset({_S.AWAITING_MODEL}),
        ModelUsage: frozenset({_S.AWAITING_MODEL}),
        ModelRetry: frozenset({_S.AWAITING_MODEL}),
        ModelError: frozenset({_S.FINISHED}),
        ModelResponseEnded: frozenset({_S.AWAITING_TOOL, _S.AWAITING_CHECKPOINT, _S.FINISHED}),
        **_ABORT,
    },
    _S.AWAITING_TOOL: {
        ToolResult: frozenset({_S.AWAITING_TOOL, _S.AWAITING_CHECKPOINT, _S.FINISHED}),
        **_ABORT,
    },
    _S.AWAITING_CHECKPOINT: {
        CheckpointResolved: frozenset({_S.AWAITING_MODEL, _S.FINISHED}),
        **_ABORT,
    },
    _S.FINISHED: {},
    _S.ABORTED: {},
}

_HANDLERS: dict[type, str] = {
    StartTurn: "_on_start",
    ModelTextDelta: "_on_text",
    ModelReasoningDelta: "_on_reasoning",
    ModelToolCall: "_on_tool_call",
    ModelUsage: "_on_usage",
    ModelRetry: "_on_retry",
    ModelError: "_on_model_error",
    ModelResponseEnded: "_on_response_ended",
    ToolResult: "_on_tool_result",
    CheckpointResolved: "_on_checkpoint",
    AbortTurn: "_on_abort",
}

EMPTY_RESPONSE_MESSAGE = "Model returned no assistant text or tool calls."


def _turn_limit_note(limit: int) -> str:
    return f"Turn limit reached ({limit}) before a final assistant response."


class TurnMachine:
    """One turn; see the module rules. Build it, ``send(StartTurn(...))``, then feed results."""

    def __init__(
        self,
        *,
        history: Sequence[ChatMessage] = (),
        session_usage: TokenUsage = TokenUsage(),
        max_protocol_iterations: int = MAX_PROTOCOL_ITERATIONS,
        new_id: Callable[[], str] = new_id,
    ) -> None:
        if isinstance(max_protocol_iterations, bool) or not isinstance(max_protocol_iterations, int) or (
            max_protocol_iterations < 1
        ):
            raise ValueError(f"max_protocol_iterations must be a positive int, got {max_protocol_iterations!r}")
        self._history = tuple(history)
        self._session_usage = session_usage
        self._max_iterations = max_protocol_iterations
        self._new_id = new_id
        self._state = TurnState.NOT_STARTED
        self._iteration = 0
        self._requests = 0
        self._messages: list[ChatMessage] = []
        self._usage = TokenUsage()
        self._final_text = ""
        self._tool_records: list[ToolCallRecord] = []
        self._seen_call_ids: set[str] = set()
        self._queued_batch_ids: list[str] = []
        # the response being streamed
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = []
        #: failure outputs for calls of this response whose arguments were not JSON, by call id
        self._invalid_args: dict[str, dict[str, Any]] = {}
        self._prose_correlation: str | None = None
        self._reasoning_correlation: str | None = None
        # tool calls of the last response
        self._current_call: ToolCall | None = None
        self._call_queue: deque[ToolCall] = deque()
        self._checkpoint: CheckpointKind | None = None

    # -- reading -----------------------------------------------------------------------------------

    @property
    def state(self) -> TurnState:
        return self._state

    @property
    def protocol_iteration(self) -> int:
        return self._iteration

    @property
    def max_protocol_iterations(self) -> int:
        return self._max_iterations

    def snapshot(self) -> TurnMachineSnapshot:
        return TurnMachineSnapshot(
            state=self._state,
            protocol_iteration=self._iteration,
            requests=self._requests,
            messages=tuple(self._messages),
            usage=self._usage,
            current_call_id=self._current_call.call_id if self._current_call else None,
            queued_call_ids=tuple(call.call_id for call in self._call_queue),
            checkpoint=self._checkpoint,
            tool_calls=tuple(self._tool_records),
            queued_batch_ids=tuple(self._queued_batch_ids),
        )

    # -- the one entry point -----------------------------------------------------------------------

    def send(self, event: TurnInputEvent) -> list[TurnOutput]:
        """Apply one input; returns the outputs in order. Raises ``IllegalTurnInput`` (state unchanged)."""
        allowed = TURN_TRANSITIONS[self._state].get(type(event))
        if allowed is None:
            raise IllegalTurnInput(self._state, type(event).__name__)
        out: list[TurnOutput] = []
        getattr(self, _HANDLERS[type(event)])(event, out)
        if self._state not in allowed:  # the table and the handlers disagree: a bug here
            raise AssertionError(f"{type(event).__name__} moved the turn to {self._state}")
        return out

    # -- helpers -----------------------------------------------------------------------------------

    def _emit(self, out: list[TurnOutput], event: TurnEvent, correlation_id: str | None = None) -> None:
        out.append(
            Emit(TurnActivity(id=self._new_id(), correlation_id=correlation_id or self._new_id(), event=event))
        )

    def _reset_response(self) -> None:
        self._text.clear()
        self._reasoning.clear()
        self._calls.clear()
        self._invalid_args.clear()
        self._prose_correlation = None
        self._reasoning_correlation = None

    def _begin_request(self, out: list[TurnOutput]) -> None:
        self._reset_response()
        self._state = TurnState.AWAITING_MODEL
        self._checkpoint = None
        self._requests += 1
        self._emit(out, ModelRequestStarted(self._iteration))
        out.append(RequestModel(self._iteration, self._history + tuple(self._messages)))

    def _next_would_pass_cap(self) -> bool:
        return self._iteration + 1 >= self._max_iterations

    def _finish(self, out: list[TurnOutput], status: TurnStatus, error: str | None = None) -> None:
        self._state = TurnState.FINISHED
        self._checkpoint = None
        out.append(
            CommitTurn(
                messages=tuple(self._messages),
                usage=self._usage,
                text=self._final_text,
                status=status,
                requests=self._requests,
                tool_calls=tuple(self._tool_records),
                queued_batch_ids=tuple(self._queued_batch_ids),
                error=error,
            )
        )

    def _provider_error(self, out: list[TurnOutput], message: str) -> None:
        self._emit(out, TurnError(message))
        self._finish(out, TurnStatus.PROVIDER_ERROR, message)

    def _start_next_call(self, out: list[TurnOutput]) -> None:
        call = self._call_queue.popleft()
        self._current_call = call
        self._state = TurnState.AWAITING_TOOL
        self._emit(out, ToolCallStarted(call.call_id, call.name, call.args), f"tool:{call.call_id}")
        refused = self._invalid_args.pop(call.call_id, None)
        if refused is not None:  # never run: the call completes at once as a failed output
            self._on_tool_result(ToolResult(call.call_id, refused, 0), out)
            return
        out.append(CallTool(call.call_id, call.name, call.args))

    def _open_checkpoint(self, out: list[TurnOutput], kind: CheckpointKind) -> None:
        self._state = TurnState.AWAITING_CHECKPOINT
        self._checkpoint = kind
        out.append(Checkpoint(kind, self._iteration))

    # -- handlers (validate first, then mutate) ----------------------------------------------------

    def _on_start(self, event: StartTurn, out: list[TurnOutput]) -> None:
        if event.queued_batch_ids:
            self._emit(out, QueuedWorkStarted("idle", event.queued_batch_ids))
            self._queued_batch_ids.extend(event.queued_batch_ids)
        self._messages.extend(ChatMessage.user(item.content) for item in event.inputs)
        self._begin_request(out)

    def _on_text(self, event: ModelTextDelta, out: list[TurnOutput]) -> None:
        if not event.text:
            return
        if self._prose_correlation is None:
            self._prose_correlation = self._new_id()
        self._text.append(event.text)
        self._emit(out, AssistantProseDelta(event.text), self._prose_correlation)

    def _on_reasoning(self, event: ModelReasoningDelta, out: list[TurnOutput]) -> None:
        if not event.text:
            return
        if self._reasoning_correlation is None:
            self._reasoning_correlation = self._new_id()
        self._reasoning.append(event.text)
        self._emit(out, ReasoningDelta(event.text), self._reasoning_correlation)

    def _on_tool_call(self, event: ModelToolCall, out: list[TurnOutput]) -> None:
        try:
            args = to_plain_json(event.args)
        except JsonValueError as err:
            # the call is kept (the model made it, the transcript shows it) with null arguments
            # and completes as a failed output without running the tool
            args = None
            self._invalid_args[event.call_id] = tool_failure(
                f"tool `{event.name}` was called with arguments that are not JSON "
                f"({err.kind}: {err.reason}); the tool was not run",
                code="invalid_output",
                source="runtime",
            )
        self._calls.append(ToolCall(event.call_id, event.name, args))

    def _on_usage(self, event: ModelUsage, out: list[TurnOutput]) -> None:
        self._usage = self._usage + event.usage
        self._emit(out, Usage(self._iteration, event.usage, self._session_usage + self._usage))

    def _on_retry(self, event: ModelRetry, out: list[TurnOutput]) -> None:
        self._reset_response()
        self._emit(out, RetryStatus(event.wait_seconds, event.attempt, event.max_attempts, event.reason))

    def _on_model_error(self, event: ModelError, out: list[TurnOutput]) -> None:
        self._provider_error(out, f"LLM error: {event.message}")

    def _on_response_ended(self, event: ModelResponseEnded, out: list[TurnOutput]) -> None:
        text = "".join(self._text)
        reasoning = "".join(self._reasoning)
        calls = tuple(self._calls)
        ids = [call.call_id for call in calls]
        seen = set(self._seen_call_ids)  # linear: a response may carry thousands of calls
        duplicate = None
        for call_id in ids:
            if call_id in seen:
                duplicate = call_id
                break
            seen.add(call_id)
        if duplicate is not None:
            self._provider_error(out, f"LLM error: duplicate tool call id `{duplicate}`")
            return
        if calls:
            self._messages.append(ChatMessage.assistant(text, reasoning=reasoning, tool_calls=calls))
            self._seen_call_ids.update(ids)
            self._call_queue.extend(calls)
            self._start_next_call(out)
            return
        if text.strip() or reasoning.strip():
            self._messages.append(ChatMessage.assistant(text, reasoning=reasoning))
            self._final_text = text
        elif self._messages and self._messages[-1].role is ChatRole.TOOL:
            self._final_text = ""  # a tool-only turn may end with an empty answer
        else:
            self._provider_error(out, EMPTY_RESPONSE_MESSAGE)
            return
        if self._next_would_pass_cap():
            self._finish(out, TurnStatus.FINISHED)
        else:
            self._open_checkpoint(out, CheckpointKind.BEFORE_COMPLETION)

    def _on_tool_result(self, event: ToolResult, out: list[TurnOutput]) -> None:
        call = self._current_call
        assert call is not None
        if event.call_id != call.call_id:
            raise IllegalTurnInput(
                self._state, "ToolResult", f"waiting on call `{call.call_id}`, got `{event.call_id}`"
            )
        try:
            output = to_plain_json(event.output)  # what a driver hands back must travel too
        except JsonValueError as err:
            output = tool_failure(
                f"tool `{call.name}` returned a value that is not JSON ({err.kind}: {err.reason})",
                code="invalid_output",
                source="runtime",
            )
        record = ToolCallRecord(call.call_id, call.name, call.args, output, event.duration_ms)
        self._current_call = None
        self._tool_records.append(record)
        self._emit(
            out,
            ToolCallCompleted(call.call_id, call.name, call.args, output, event.duration_ms),
            f"tool:{call.call_id}",
        )
        self._messages.append(
            ChatMessage.tool(render_tool_output(output), tool_call_id=call.call_id, tool_name=call.name)
        )
        if self._call_queue:
            self._start_next_call(out)
        elif self._next_would_pass_cap():
            self._messages.append(ChatMessage(ChatRole.SYSTEM, _turn_limit_note(self._max_iterations)))
            self._finish(out, TurnStatus.MAX_TURNS)
        else:
            self._open_checkpoint(out, CheckpointKind.AFTER_WORK)

    def _on_checkpoint(self, event: CheckpointResolved, out: list[TurnOutput]) -> None:
        if event.batch_ids and not event.inputs:
            raise IllegalTurnInput(self._state, "CheckpointResolved", "batches delivered without inputs")
        kind = self._checkpoint
        assert kind is not None
        if event.inputs:
            if event.batch_ids:
                self._emit(out, QueuedWorkStarted("active_turn_checkpoint", event.batch_ids))
                self._queued_batch_ids.extend(event.batch_ids)
            self._emit(out, QueuedInputAccepted(kind.value, event.inputs))
            self._messages.extend(ChatMessage.user(item.content) for item in event.inputs)
        elif kind is CheckpointKind.BEFORE_COMPLETION:
            self._finish(out, TurnStatus.FINISHED)
            return
        self._iteration += 1
        self._begin_request(out)

    def _on_abort(self, event: AbortTurn, out: list[TurnOutput]) -> None:
        self._emit(out, TurnError(event.message))
        self._state = TurnState.ABORTED
        self._current_call = None
        self._call_queue.clear()
        self._checkpoint = None
        out.append(FailTurn(event.code, event.message))

    def __repr__(self) -> str:
        return (
            f"<TurnMachine state={self._state.value} iteration={self._iteration} "
            f"messages={len(self._messages)}>"
        )
