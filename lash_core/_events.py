"""Observation events as values: turn events, turn activities, payloads, the event itself.

Every value is a frozen, slotted dataclass, validated when built. Each concrete turn event and
payload carries its wire ``type`` tag as the class variable ``TYPE``, and each record field names
how it travels (``codec`` metadata). The JSON codec lives apart, in ``_wire.py`` (the project spec's
``wire.md``); ``to_dict``/``from_dict`` here call it. Unknown tags load as ``UnknownTurnEvent`` /
``UnknownPayload`` with the raw fields kept, so a log from a newer runtime still loads (and writes
back unchanged).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Type

from ._cursor import U64_MAX, SessionCursor, SessionRevision
from ._errors import InvalidObservationError, WireFormatError
from ._ids import new_id
from ._input import TurnInput
from ._json import short_repr
from ._validate import enum_member, expect_field, id_tuple, is_utf8_str
from ._wire import DEFAULT_PROTOCOL_VERSION

if TYPE_CHECKING:
    from ._gap import ReadView

__all__ = [
    "DEFAULT_PROTOCOL_VERSION",
    "TokenUsage",
    "TurnEvent",
    "QueuedWorkStarted",
    "ModelRequestStarted",
    "AssistantProseDelta",
    "ReasoningDelta",
    "CodeBlockStarted",
    "CodeBlockCompleted",
    "ToolCallStarted",
    "ToolCallCompleted",
    "FinalValue",
    "ToolValue",
    "Usage",
    "ChildUsage",
    "RetryStatus",
    "QueuedInputAccepted",
    "TurnError",
    "UnknownTurnEvent",
    "TurnActivity",
    "SessionQueueEventKind",
    "SessionProcessEventKind",
    "EventPayload",
    "TurnActivityPayload",
    "Committed",
    "AgentFrameSwitched",
    "QueueChanged",
    "ProcessChanged",
    "UnknownPayload",
    "SessionObservationEvent",
]

# --- field schema ---------------------------------------------------------------------------------
# A field's metadata names how it travels (the codec in ``_wire.py`` reads it); numbers are also
# checked when a record is built.


def _f(codec: str, default: Any = dataclasses.MISSING) -> Any:
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"codec": codec})
    return dataclasses.field(default=default, metadata={"codec": codec})


class _WireRecord:
    """Base of the flat records below: fields listed with codec metadata (see ``_wire.py``)."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def __post_init__(self) -> None:
        """Numbers are checked when a record is built, so one that could never travel (a count
        above 2**64-1, a NaN wait) is refused where it is made, naming the field."""
        for name, kind in _numeric_fields(type(self)):
            expect_field(kind, name, getattr(self, name), WireFormatError)


_NUMERIC: dict[type, tuple[tuple[str, str], ...]] = {}


def _numeric_fields(cls: type) -> tuple[tuple[str, str], ...]:
    """``(field name, codec)`` of a record's integer and number fields, computed once per class."""
    found = _NUMERIC.get(cls)
    if found is None:
        found = _NUMERIC[cls] = tuple(
            (f.name, f.metadata["codec"])
            for f in dataclasses.fields(cls)
            if f.metadata.get("codec") in ("uint", "number")
        )
    return found


# --- usage ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TokenUsage(_WireRecord):
    """Token counts of one request or a running total. Adds with ``+``."""

    TYPE: ClassVar[str] = "usage_counts"
    input_tokens: int = _f("uint", 0)
    output_tokens: int = _f("uint", 0)
    cache_read_input_tokens: int = _f("uint", 0)
    cache_write_input_tokens: int = _f("uint", 0)
    reasoning_output_tokens: int = _f("uint", 0)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        # saturating, like a u64 running total that must never wrap or refuse a commit
        return TokenUsage(
            *(
                min(getattr(self, f.name) + getattr(other, f.name), U64_MAX)
                for f in dataclasses.fields(self)
            )
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> TokenUsage:
        from ._wire import usage_from_dict

        return usage_from_dict(data)


# --- turn events ----------------------------------------------------------------------------------


class TurnEvent(_WireRecord):
    """Base of everything a turn emits. Subclasses set ``TYPE`` to their wire tag."""

    __slots__ = ()
    _registry: ClassVar[dict[str, type[TurnEvent]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("TYPE")
        if tag:
            TurnEvent._registry[tag] = cls

    @property
    def type(self) -> str:
        return self.TYPE

    @staticmethod
    def known_types() -> tuple[str, ...]:
        """Wire tags of every turn event this version knows, sorted."""
        return tuple(sorted(TurnEvent._registry))

    @staticmethod
    def registered(tag: str) -> Type[TurnEvent] | None:
        """The class of a known wire tag, else ``None``."""
        return TurnEvent._registry.get(tag)

    def to_dict(self) -> dict[str, Any]:
        from ._wire import turn_event_to_dict

        return turn_event_to_dict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> TurnEvent:
        """Raises ``WireFormatError``; an unknown tag gives an ``UnknownTurnEvent``."""
        from ._wire import turn_event_from_dict

        return turn_event_from_dict(data)


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedWorkStarted(TurnEvent):
    TYPE: ClassVar[str] = "queued_work_started"
    boundary: str = _f("str")
    batch_ids: tuple[str, ...] = _f("str_list")

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_ids", _id_tuple(self.batch_ids, "batch_ids"))


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRequestStarted(TurnEvent):
    TYPE: ClassVar[str] = "model_request_started"
    protocol_iteration: int = _f("uint")


@dataclasses.dataclass(frozen=True, slots=True)
class AssistantProseDelta(TurnEvent):
    TYPE: ClassVar[str] = "assistant_prose_delta"
    text: str = _f("str")


@dataclasses.dataclass(frozen=True, slots=True)
class ReasoningDelta(TurnEvent):
    TYPE: ClassVar[str] = "reasoning_delta"
    text: str = _f("str")


@dataclasses.dataclass(frozen=True, slots=True)
class CodeBlockStarted(TurnEvent):
    TYPE: ClassVar[str] = "code_block_started"
    language: str = _f("str")
    code: str = _f("str")
    graph_key: str | None = _f("opt_str", None)


@dataclasses.dataclass(frozen=True, slots=True)
class CodeBlockCompleted(TurnEvent):
    TYPE: ClassVar[str] = "code_block_completed"
    language: str = _f("str")
    output: str = _f("str")
    error: str | None = _f("opt_str")
    success: bool = _f("bool")
    duration_ms: int = _f("uint")
    tool_call_ids: tuple[str, ...] = _f("str_list")
    graph_key: str | None = _f("opt_str", None)

    def __post_init__(self) -> None:
        _WireRecord.__post_init__(self)
        object.__setattr__(self, "tool_call_ids", _id_tuple(self.tool_call_ids, "tool_call_ids"))


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCallStarted(TurnEvent):
    TYPE: ClassVar[str] = "tool_call_started"
    call_id: str | None = _f("opt_str")
    name: str = _f("str")
    args: Any = _f("json")


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCallCompleted(TurnEvent):
    TYPE: ClassVar[str] = "tool_call_completed"
    call_id: str | None = _f("opt_str")
    name: str = _f("str")
    args: Any = _f("json")
    output: Any = _f("json")
    duration_ms: int = _f("uint")


@dataclasses.dataclass(frozen=True, slots=True)
class FinalValue(TurnEvent):
    TYPE: ClassVar[str] = "final_value"
    value: Any = _f("json", None)


@dataclasses.dataclass(frozen=True, slots=True)
class ToolValue(TurnEvent):
    TYPE: ClassVar[str] = "tool_value"
    tool_name: str = _f("str")
    value: Any = _f("json", None)


@dataclasses.dataclass(frozen=True, slots=True)
class Usage(TurnEvent):
    TYPE: ClassVar[str] = "usage"
    protocol_iteration: int = _f("uint")
    usage: TokenUsage = _f("usage")
    cumulative: TokenUsage = _f("usage")


@dataclasses.dataclass(frozen=True, slots=True)
class ChildUsage(TurnEvent):
    TYPE: ClassVar[str] = "child_usage"
    session_id: str = _f("str")
    source: str = _f("str")
    model: str = _f("str")
    protocol_iteration: int = _f("uint")
    usage: TokenUsage = _f("usage")
    cumulative: TokenUsage = _f("usage")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryStatus(TurnEvent):
    TYPE: ClassVar[str] = "retry_status"
    wait_seconds: float = _f("number")
    attempt: int = _f("uint")
    max_attempts: int = _f("uint")
    reason: str = _f("str")


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedInputAccepted(TurnEvent):
    TYPE: ClassVar[str] = "queued_input_accepted"
    checkpoint: str = _f("str")
    inputs: tuple[TurnInput, ...] = _f("inputs")

    def __post_init__(self) -> None:
        _WireRecord.__post_init__(self)
        inputs = self.inputs
        if isinstance(inputs, (str, bytes, TurnInput)) or not isinstance(inputs, (list, tuple)):
            raise InvalidObservationError(
                f"inputs must be a list of TurnInput values, not {short_repr(inputs)}"
            )
        if not all(isinstance(item, TurnInput) for item in inputs):
            raise InvalidObservationError("inputs must hold TurnInput values only")
        object.__setattr__(self, "inputs", tuple(inputs))


@dataclasses.dataclass(frozen=True, slots=True)
class TurnError(TurnEvent):
    TYPE: ClassVar[str] = "error"
    message: str = _f("str")


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownTurnEvent(TurnEvent):
    """A turn event whose ``type`` this version does not know; ``fields`` keeps the raw JSON."""

    event_type: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _unknown_parts(self.event_type, self.fields, _ACTIVITY_KEYS)

    @property
    def type(self) -> str:
        return self.event_type


#: Keys an unknown kind's raw fields may not hold: they belong to the document around them, and a
#: field of that name would overwrite it when the document is written.
_ACTIVITY_KEYS = frozenset({"type", "protocol_version", "sequence", "id", "correlation_id"})
_EVENT_KEYS = frozenset({"type", "protocol_version", "session_id", "revision", "cursor"})


def _unknown_parts(tag: Any, fields: Any, reserved: frozenset[str]) -> None:
    if not is_utf8_str(tag) or not tag:
        raise InvalidObservationError(f"an unknown kind's type must be a non-empty UTF-8 string, not {short_repr(tag)}")
    if not isinstance(fields, dict) or not all(isinstance(key, str) for key in fields):
        raise InvalidObservationError(f"an unknown kind's fields must be a dict with str keys, not {short_repr(fields)}")
    clash = reserved.intersection(fields)
    if clash:
        raise InvalidObservationError(
            f"an unknown kind's fields may not hold {sorted(clash)}: they belong to the document"
        )


# --- activities -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TurnActivity:
    """One thing a turn did. ``correlation_id`` groups related activities (a tool's start and
    completion, the deltas of one text block). ``sequence`` is only set for activities read from
    the wire, where it is the stream's own ordering number (not the live position)."""

    id: str
    correlation_id: str
    event: TurnEvent
    sequence: int | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("turn activity id must be a non-empty string")
        if not isinstance(self.correlation_id, str) or not self.correlation_id:
            raise ValueError("turn activity correlation_id must be a non-empty string")
        if not isinstance(self.event, TurnEvent):
            raise TypeError(f"turn activity event must be a TurnEvent, not {type(self.event).__name__}")

    @classmethod
    def independent(cls, event: TurnEvent) -> TurnActivity:
        return cls(id=new_id(), correlation_id=new_id(), event=event)

    @classmethod
    def correlated(cls, correlation_id: str, event: TurnEvent) -> TurnActivity:
        return cls(id=new_id(), correlation_id=correlation_id, event=event)

    def to_dict(
        self, protocol_version: int = DEFAULT_PROTOCOL_VERSION, *, sequence: int | None = None
    ) -> dict[str, Any]:
        """The activity document; ``sequence`` overrides the one it was read with."""
        from ._wire import activity_to_dict

        return activity_to_dict(self, protocol_version, sequence)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, parent_protocol_version: int | None = None
    ) -> TurnActivity:
        """Raises ``WireFormatError`` (a version unlike its parent's, empty ids, ...)."""
        from ._wire import activity_from_dict

        return activity_from_dict(data, parent_protocol_version)


# --- payloads -------------------------------------------------------------------------------------


def _id_tuple(ids: Any, field: str) -> tuple[str, ...]:
    return id_tuple(ids, field, InvalidObservationError)


class SessionQueueEventKind(enum.StrEnum):
    ENQUEUED = "enqueued"
    CANCELLED = "cancelled"


class SessionProcessEventKind(enum.StrEnum):
    STARTED = "started"
    CANCELLED = "cancelled"


class EventPayload:
    """Base of the observation payload variants; ``TYPE`` is the wire tag."""

    __slots__ = ()
    TYPE: ClassVar[str]
    _registry: ClassVar[dict[str, type[EventPayload]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("TYPE")
        if tag:
            EventPayload._registry[tag] = cls

    @property
    def type(self) -> str:
        return self.TYPE

    @staticmethod
    def known_types() -> tuple[str, ...]:
        """Wire tags of every payload this version knows, sorted."""
        return tuple(sorted(EventPayload._registry))

    def wire_fields(self, protocol_version: int, sequence: int | None) -> dict[str, Any]:
        """This payload's fields of an event document (without ``type``)."""
        from ._wire import payload_fields

        return payload_fields(self, protocol_version, sequence)

    @staticmethod
    def from_wire(data: Mapping[str, Any], protocol_version: int) -> EventPayload:
        from ._wire import payload_from_wire

        return payload_from_wire(data, protocol_version)


@dataclasses.dataclass(frozen=True, slots=True)
class TurnActivityPayload(EventPayload):
    TYPE: ClassVar[str] = "turn_activity"
    activity: TurnActivity

    @property
    def event_type(self) -> str:
        return self.activity.event.type


@dataclasses.dataclass(frozen=True, slots=True)
class Committed(EventPayload):
    """A durable commit. ``read_view`` is the committed session state; it is ``None`` for events
    read from the wire, which never carries a full read view."""

    TYPE: ClassVar[str] = "committed"
    read_view: ReadView | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AgentFrameSwitched(EventPayload):
    TYPE: ClassVar[str] = "agent_frame_switched"
    frame_id: str

    def __post_init__(self) -> None:
        if not is_utf8_str(self.frame_id) or not self.frame_id:
            raise InvalidObservationError(
                f"frame_id must be a non-empty UTF-8 string, not {short_repr(self.frame_id)}"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class QueueChanged(EventPayload):
    TYPE: ClassVar[str] = "queue_changed"
    kind: SessionQueueEventKind
    batch_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "kind", enum_member(SessionQueueEventKind, self.kind, "kind", InvalidObservationError)
        )
        object.__setattr__(self, "batch_ids", _id_tuple(self.batch_ids, "batch_ids"))


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessChanged(EventPayload):
    TYPE: ClassVar[str] = "process_changed"
    kind: SessionProcessEventKind
    process_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "kind", enum_member(SessionProcessEventKind, self.kind, "kind", InvalidObservationError)
        )
        object.__setattr__(self, "process_ids", _id_tuple(self.process_ids, "process_ids"))


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownPayload(EventPayload):
    """A payload whose ``type`` this version does not know; ``fields`` keeps the raw JSON."""

    payload_type: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _unknown_parts(self.payload_type, self.fields, _EVENT_KEYS)

    @property
    def type(self) -> str:
        return self.payload_type


# --- the event ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SessionObservationEvent:
    """One change of a session, at one live position (``live_position``, read from the cursor
    once and kept by the cursor object; a store that writes the cursor sets it)."""

    session_id: str
    revision: SessionRevision
    cursor: SessionCursor
    payload: EventPayload

    @property
    def type(self) -> str:
        return self.payload.type

    @property
    def live_position(self) -> int | None:
        """The event's live replay position, as ``cursor.parse()`` reads it; ``None`` when the
        cursor does not parse (a foreign log) or is not a ``SessionCursor``."""
        cursor = self.cursor
        return cursor.live_position() if isinstance(cursor, SessionCursor) else None

    def to_dict(
        self, protocol_version: int = DEFAULT_PROTOCOL_VERSION, *, sequence: int | None = None
    ) -> dict[str, Any]:
        """The wire document. A turn activity's ``sequence`` is, in order of preference: the one
        given here (a writer numbering its own stream, as Rust's ``from_core(sequence, ..)``), the
        one it was read with, or the event's live position (monotonic within the session's
        stream, which is all the field promises). Raises ``WireFormatError``."""
        from ._wire import event_to_dict

        return event_to_dict(self, protocol_version, sequence)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionObservationEvent:
        """Parse and validate one wire document; raises ``WireFormatError`` naming the rule."""
        from ._wire import event_from_dict

        return event_from_dict(data)
