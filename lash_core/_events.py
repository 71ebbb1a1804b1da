"""Observation events: turn events, turn activities, payloads and their JSON wire shape.

Every value is a frozen, slotted dataclass. Each concrete turn event and payload carries its wire
``type`` tag as the class variable ``TYPE``; ``to_dict``/``from_dict`` give the exact JSON shape of
``shared/spec/wire.md``. Unknown tags load as ``UnknownTurnEvent`` / ``UnknownPayload`` with the
raw fields kept, so a log from a newer runtime still loads (and writes back unchanged).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import uuid
from typing import Any, Callable, ClassVar, Mapping

from ._cursor import U64_MAX, SessionCursor, SessionRevision
from ._errors import InvalidObservationError, SessionCursorError, WireFormatError
from ._input import TurnInput
from ._json import short_repr
from ._validate import enum_member, id_tuple, is_uint, is_utf8_str

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

#: Protocol version written when the caller names none (lash-core alpha.39 speaks 3).
DEFAULT_PROTOCOL_VERSION = 3


# --- field codecs ---------------------------------------------------------------------------------
# A field's metadata names how it travels; ``_decode`` validates on the way in so a bad log line
# becomes one WireFormatError naming the field, not a TypeError deep inside later code.


def _is_number(value: Any) -> bool:
    """A JSON number Rust reads as a finite ``f64``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


_is_uint = is_uint
_is_utf8_str = is_utf8_str


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (_is_utf8_str, "a UTF-8 string"),
    "uint": (_is_uint, "an unsigned 64-bit integer"),
    "number": (_is_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "a boolean"),
    "str_list": (
        lambda v: isinstance(v, (list, tuple)) and all(_is_utf8_str(x) for x in v),
        "a list of UTF-8 strings",
    ),
}


def _expect(kind: str, name: str, value: Any) -> Any:
    """``value`` when it is a valid ``kind``; else ``WireFormatError`` naming the field."""
    check, what = _CHECKS[kind]
    if not check(value):
        raise WireFormatError(f"field `{name}` must be {what}, got {short_repr(value)}")
    return value


def check_protocol_version(value: Any, name: str = "protocol_version") -> int:
    """A protocol version: a positive unsigned 64-bit integer, else ``WireFormatError``."""
    if not _is_uint(value) or value < 1:
        raise WireFormatError(f"`{name}` must be a positive integer, got {short_repr(value)}")
    return value


def _f(codec: str, default: Any = dataclasses.MISSING) -> Any:
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"codec": codec})
    return dataclasses.field(default=default, metadata={"codec": codec})


def _encode(codec: str, value: Any) -> Any:
    if codec == "usage":
        return value.to_dict()
    if codec == "inputs":
        return [item.to_dict() for item in value]
    if codec == "str_list":
        return list(value)
    return value


def _decode(codec: str, name: str, value: Any) -> Any:
    optional = codec.startswith("opt_")
    base = codec[4:] if optional else codec
    if value is None:
        if optional or base == "json":
            return None
        raise WireFormatError(f"field `{name}` must not be null")
    if base == "json":
        return value
    if base == "usage":
        return TokenUsage.from_dict(value)
    if base == "inputs":
        if not isinstance(value, list):
            raise WireFormatError(f"field `{name}` must be a list of turn inputs")
        try:
            return tuple(TurnInput.from_dict(item) for item in value)
        except ValueError as err:
            raise WireFormatError(f"field `{name}`: {err}") from None
    if base == "str_list":
        return tuple(_expect(base, name, value))
    return _expect(base, name, value)


class _WireRecord:
    """Shared to/from dict for the flat records below (fields listed with codec metadata)."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def __post_init__(self) -> None:
        """Numbers are checked when a record is built, so one that could never travel (a count
        above 2**64-1, a NaN wait) is refused where it is made, naming the field."""
        for name, kind in _numeric_fields(type(self)):
            _expect(kind, name, getattr(self, name))

    def _fields_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            codec = field.metadata.get("codec")
            if codec is None:
                continue
            value = getattr(self, field.name)
            if value is None and codec.startswith("opt_"):
                continue  # optional fields are absent on the wire, never null
            out[field.name] = _encode(codec.removeprefix("opt_"), value)
        return out

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> Any:
        kwargs: dict[str, Any] = {}
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            codec = field.metadata.get("codec")
            if codec is None:
                continue
            if field.name not in data:
                if field.default is not dataclasses.MISSING:
                    continue
                if codec.startswith("opt_") or codec == "json":
                    kwargs[field.name] = None  # "?" fields may be absent on the wire
                    continue
                raise WireFormatError(f"`{cls.TYPE}` is missing field `{field.name}`")
            kwargs[field.name] = _decode(codec, field.name, data[field.name])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise WireFormatError(f"`{cls.TYPE}`: {err}") from None


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
        if not isinstance(data, Mapping):
            raise WireFormatError(f"usage must be an object, got {short_repr(data)}")
        return cls._from_fields(data)


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

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self._fields_dict()}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> TurnEvent:
        if not isinstance(data, Mapping):
            raise WireFormatError("turn event must be an object")
        tag = data.get("type")
        if not isinstance(tag, str) or not tag:
            raise WireFormatError("turn event has no `type`")
        cls = TurnEvent._registry.get(tag)
        if cls is None:
            return UnknownTurnEvent(tag, {k: v for k, v in data.items() if k != "type"})
        return cls._from_fields(data)


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
        object.__setattr__(self, "inputs", tuple(self.inputs))


@dataclasses.dataclass(frozen=True, slots=True)
class TurnError(TurnEvent):
    TYPE: ClassVar[str] = "error"
    message: str = _f("str")


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownTurnEvent(TurnEvent):
    """A turn event whose ``type`` this version does not know; ``fields`` keeps the raw JSON."""

    event_type: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.event_type

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.event_type, **self.fields}


# --- activities -----------------------------------------------------------------------------------


def _new_id() -> str:
    return str(uuid.uuid4())


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
        return cls(id=_new_id(), correlation_id=_new_id(), event=event)

    @classmethod
    def correlated(cls, correlation_id: str, event: TurnEvent) -> TurnActivity:
        return cls(id=_new_id(), correlation_id=correlation_id, event=event)

    def to_dict(
        self, protocol_version: int = DEFAULT_PROTOCOL_VERSION, *, sequence: int | None = None
    ) -> dict[str, Any]:
        seq = sequence if sequence is not None else self.sequence
        if seq is not None:
            _expect("uint", "sequence", seq)
        out: dict[str, Any] = {"protocol_version": check_protocol_version(protocol_version)}
        if seq is not None:
            out["sequence"] = seq
        out["id"] = self.id
        out["correlation_id"] = self.correlation_id
        out.update(self.event.to_dict())
        return out

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, parent_protocol_version: int | None = None
    ) -> TurnActivity:
        if not isinstance(data, Mapping):
            raise WireFormatError("turn activity must be an object")
        version = data.get("protocol_version")
        if parent_protocol_version is not None and version != parent_protocol_version:
            raise WireFormatError(
                f"activity protocol_version {short_repr(version)} differs from its parent's "
                f"{parent_protocol_version}"
            )
        sequence = data.get("sequence")
        if sequence is not None:
            _expect("uint", "sequence", sequence)
        for key in ("id", "correlation_id"):
            value = data.get(key)
            if not is_utf8_str(value) or not value:
                raise WireFormatError(f"turn activity `{key}` must be a non-empty UTF-8 string")
        body = {
            k: v
            for k, v in data.items()
            if k not in ("protocol_version", "sequence", "id", "correlation_id")
        }
        return cls(
            id=data["id"],
            correlation_id=data["correlation_id"],
            event=TurnEvent.from_dict(body),
            sequence=sequence,
        )


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
        raise NotImplementedError

    @staticmethod
    def from_wire(data: Mapping[str, Any], protocol_version: int) -> EventPayload:
        tag = data.get("type")
        if not isinstance(tag, str) or not tag:
            raise WireFormatError("event has no `type`")
        cls = EventPayload._registry.get(tag)
        if cls is None:
            skip = {"protocol_version", "session_id", "revision", "cursor", "type"}
            return UnknownPayload(tag, {k: v for k, v in data.items() if k not in skip})
        return cls._from_wire(data, protocol_version)  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True, slots=True)
class TurnActivityPayload(EventPayload):
    TYPE: ClassVar[str] = "turn_activity"
    activity: TurnActivity

    @property
    def event_type(self) -> str:
        return self.activity.event.type

    def wire_fields(self, protocol_version: int, sequence: int | None) -> dict[str, Any]:
        return {"activity": self.activity.to_dict(protocol_version, sequence=sequence)}

    @classmethod
    def _from_wire(cls, data: Mapping[str, Any], protocol_version: int) -> TurnActivityPayload:
        if "activity" not in data:
            raise WireFormatError("`turn_activity` is missing field `activity`")
        return cls(
            TurnActivity.from_dict(data["activity"], parent_protocol_version=protocol_version)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Committed(EventPayload):
    """A durable commit. ``read_view`` is the committed session state; it is ``None`` for events
    read from the wire, which never carries a full read view."""

    TYPE: ClassVar[str] = "committed"
    read_view: Any = None

    def wire_fields(self, protocol_version: int, sequence: int | None) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_wire(cls, data: Mapping[str, Any], protocol_version: int) -> Committed:
        return cls(None)


@dataclasses.dataclass(frozen=True, slots=True)
class AgentFrameSwitched(EventPayload):
    TYPE: ClassVar[str] = "agent_frame_switched"
    frame_id: str

    def wire_fields(self, protocol_version: int, sequence: int | None) -> dict[str, Any]:
        return {"frame_id": self.frame_id}

    @classmethod
    def _from_wire(cls, data: Mapping[str, Any], protocol_version: int) -> AgentFrameSwitched:
        return cls(_expect("str", "frame_id", data.get("frame_id")))


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

    def wire_fields(self, protocol_version: int, sequence: int | None) -> dict[str, Any]:
        return {"kind": str(self.kind), "batch_ids": list(self.batch_ids)}

    @classmethod
    def _from_wire(cls, data: Mapping[str, Any], protocol_version: int) -> QueueChanged:
        kind = enum_member(SessionQueueEventKind, data.get("kind"), "queue event `kind`", WireFormatError)
        return cls(kind, _expect("str_list", "batch_ids", data.get("batch_ids")))


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

    def wire_fields(self, protocol_version: int, sequence: int | None) -> dict[str, Any]:
        return {"kind": str(self.kind), "process_ids": list(self.process_ids)}

    @classmethod
    def _from_wire(cls, data: Mapping[str, Any], protocol_version: int) -> ProcessChanged:
        kind = enum_member(SessionProcessEventKind, data.get("kind"), "process event `kind`", WireFormatError)
        return cls(kind, _expect("str_list", "process_ids", data.get("process_ids")))


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownPayload(EventPayload):
    """A payload whose ``type`` this version does not know; ``fields`` keeps the raw JSON."""

    payload_type: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.payload_type

    def wire_fields(self, protocol_version: int, sequence: int | None) -> dict[str, Any]:
        return dict(self.fields)


# --- the event ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SessionObservationEvent:
    session_id: str
    revision: SessionRevision
    cursor: SessionCursor
    payload: EventPayload

    @property
    def type(self) -> str:
        return self.payload.type

    def to_dict(
        self, protocol_version: int = DEFAULT_PROTOCOL_VERSION, *, sequence: int | None = None
    ) -> dict[str, Any]:
        """The wire document. A turn activity's ``sequence`` is, in order of preference: the one
        given here (a writer numbering its own stream, as Rust's ``from_core(sequence, ..)``), the
        one it was read with, or the event's live position (monotonic within the session's
        stream, which is all the field promises)."""
        check_protocol_version(protocol_version)
        if sequence is not None:
            _expect("uint", "sequence", sequence)
        elif isinstance(self.payload, TurnActivityPayload) and self.payload.activity.sequence is None:
            try:
                sequence = self.cursor.parse().live_position
            except SessionCursorError:
                sequence = None  # a foreign cursor: the activity is written without a sequence
        return {
            "protocol_version": protocol_version,
            "session_id": self.session_id,
            "revision": int(self.revision),
            "cursor": str(self.cursor),
            "type": self.payload.type,
            **self.payload.wire_fields(protocol_version, sequence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionObservationEvent:
        """Parse and validate one wire document; raises ``WireFormatError`` naming the rule."""
        if not isinstance(data, Mapping):
            raise WireFormatError("document must be a JSON object")
        version = check_protocol_version(data.get("protocol_version"))
        session_id = data.get("session_id")
        if not is_utf8_str(session_id) or not session_id:
            raise WireFormatError("`session_id` must be a non-empty UTF-8 string")
        cursor = data.get("cursor")
        if not is_utf8_str(cursor) or not cursor:
            raise WireFormatError("`cursor` must be a non-empty UTF-8 string")
        revision = data.get("revision")
        try:
            revision = SessionRevision(revision)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise WireFormatError(
                f"`revision` must be an unsigned 64-bit integer, got {short_repr(revision)}"
            ) from None
        payload = EventPayload.from_wire(data, version)
        return cls(session_id, revision, SessionCursor(cursor), payload)
