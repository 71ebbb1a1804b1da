"""The JSON wire codec of ``shared/spec/wire.md``: values (``_events.py``, ``_gap.py``) to and from
documents. The value classes keep ``to_dict``/``from_dict`` methods; they call these functions.

Rules:

* Readers validate on the way in: a bad document becomes one ``WireFormatError`` naming the field
  or rule (never a ``TypeError`` deep inside later code), and a reader accepts any positive
  ``protocol_version`` and keeps it; a nested activity's version must equal its parent's.
* Every integer on the wire is an unsigned 64-bit integer; numbers (``wait_seconds``) are finite
  ``f64``s; strings are valid UTF-8 (no lone surrogates).
* A turn event's or record's fields travel as their field metadata (``codec``) says: ``str``,
  ``uint``, ``number``, ``bool``, ``str_list``, ``usage``, ``inputs``, ``json`` (any JSON value);
  ``opt_*`` fields are absent on the wire when ``None``, never ``null``.
* Unknown ``type`` tags load as ``UnknownTurnEvent`` / ``UnknownPayload`` with their raw fields,
  and write back unchanged. ``committed`` never carries a read view on the wire.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from ._cursor import SessionCursor, SessionRevision
from ._errors import WireFormatError
from ._input import TurnInput
from ._json import short_repr
from ._validate import enum_member, expect_field, is_uint, is_utf8_str

if TYPE_CHECKING:
    from ._events import (
        EventPayload,
        SessionObservationEvent,
        TokenUsage,
        TurnActivity,
        TurnEvent,
    )
    from ._gap import LiveReplayGap, SessionObservation

__all__ = [
    "DEFAULT_PROTOCOL_VERSION",
    "check_protocol_version",
    "non_empty_field",
    "expect",
    "record_fields",
    "record_from_fields",
    "usage_from_dict",
    "turn_event_to_dict",
    "turn_event_from_dict",
    "activity_to_dict",
    "activity_from_dict",
    "payload_fields",
    "payload_from_wire",
    "event_to_dict",
    "event_from_dict",
    "gap_to_dict",
    "gap_from_dict",
    "observation_to_dict",
    "observation_from_dict",
]

#: Protocol version written when the caller names none (lash-core alpha.39 speaks 3).
DEFAULT_PROTOCOL_VERSION = 3

_ENVELOPE = frozenset({"protocol_version", "session_id", "revision", "cursor", "type"})
_ACTIVITY_ENVELOPE = frozenset({"protocol_version", "sequence", "id", "correlation_id"})


def expect(kind: str, name: str, value: Any) -> Any:
    """``value`` when it is a valid ``kind`` (``str``, ``uint``, ``number``, ``bool``,
    ``str_list``); else ``WireFormatError`` naming the field."""
    return expect_field(kind, name, value, WireFormatError)


@contextlib.contextmanager
def _as_wire_error(what: str) -> Iterator[None]:
    """A value's own validation (``ValueError``, ``TypeError``, ``InvalidObservationError``)
    failing while a document is read is a ``WireFormatError``: readers raise nothing else."""
    try:
        yield
    except WireFormatError:
        raise
    except (TypeError, ValueError) as err:
        raise WireFormatError(f"{what}: {err}") from None


def check_protocol_version(value: Any, name: str = "protocol_version") -> int:
    """A protocol version: a positive unsigned 64-bit integer, else ``WireFormatError``."""
    if not is_uint(value) or value < 1:
        raise WireFormatError(f"`{name}` must be a positive integer, got {short_repr(value)}")
    return int(value)


def non_empty_field(data: Mapping[str, Any], key: str, what: str = "") -> str:
    """``data[key]`` when it is a non-empty UTF-8 string, else ``WireFormatError`` naming it."""
    value = data.get(key)
    if not is_utf8_str(value) or not value:
        raise WireFormatError(f"{what}`{key}` must be a non-empty UTF-8 string")
    return str(value)


# --- records: flat dataclasses whose fields carry a codec ------------------------------------------


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
        return usage_from_dict(value)
    if base == "inputs":
        if not isinstance(value, list):
            raise WireFormatError(f"field `{name}` must be a list of turn inputs")
        try:
            return tuple(TurnInput.from_dict(item) for item in value)
        except ValueError as err:
            raise WireFormatError(f"field `{name}`: {err}") from None
    if base == "str_list":
        return tuple(expect(base, name, value))
    return expect(base, name, value)


def record_fields(record: Any) -> dict[str, Any]:
    """A record's wire fields (no ``type``), in field order."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        codec = field.metadata.get("codec")
        if codec is None:
            continue
        value = getattr(record, field.name)
        if value is None and codec.startswith("opt_"):
            continue  # optional fields are absent on the wire, never null
        out[field.name] = _encode(codec.removeprefix("opt_"), value)
    return out


def record_from_fields(cls: Any, data: Mapping[str, Any]) -> Any:
    """Build record class ``cls`` from a document's fields, validating each."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
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


def usage_from_dict(data: Any) -> TokenUsage:
    from ._events import TokenUsage

    if not isinstance(data, Mapping):
        raise WireFormatError(f"usage must be an object, got {short_repr(data)}")
    usage: TokenUsage = record_from_fields(TokenUsage, data)
    return usage


# --- turn events and activities ---------------------------------------------------------------------


def turn_event_to_dict(event: TurnEvent) -> dict[str, Any]:
    from ._events import UnknownTurnEvent

    if isinstance(event, UnknownTurnEvent):
        return {"type": event.event_type, **event.fields}
    return {"type": event.type, **record_fields(event)}


def turn_event_from_dict(data: Mapping[str, Any]) -> TurnEvent:
    from ._events import TurnEvent, UnknownTurnEvent

    if not isinstance(data, Mapping):
        raise WireFormatError("turn event must be an object")
    tag = data.get("type")
    if not is_utf8_str(tag) or not tag:
        raise WireFormatError("turn event `type` must be a non-empty UTF-8 string")
    cls = TurnEvent.registered(tag)
    if cls is None:
        return UnknownTurnEvent(tag, {k: v for k, v in data.items() if k != "type"})
    event: TurnEvent = record_from_fields(cls, data)
    return event


def activity_to_dict(
    activity: TurnActivity, protocol_version: int, sequence: int | None
) -> dict[str, Any]:
    seq = sequence if sequence is not None else activity.sequence
    out: dict[str, Any] = {"protocol_version": check_protocol_version(protocol_version)}
    if seq is not None:
        out["sequence"] = expect("uint", "sequence", seq)
    out["id"] = activity.id
    out["correlation_id"] = activity.correlation_id
    out.update(turn_event_to_dict(activity.event))
    return out


def activity_from_dict(
    data: Mapping[str, Any], parent_protocol_version: int | None = None
) -> TurnActivity:
    from ._events import TurnActivity

    if not isinstance(data, Mapping):
        raise WireFormatError("turn activity must be an object")
    version = check_protocol_version(data.get("protocol_version"))
    if parent_protocol_version is not None and version != parent_protocol_version:
        raise WireFormatError(
            f"activity protocol_version {short_repr(version)} differs from its parent's "
            f"{parent_protocol_version}"
        )
    sequence = data.get("sequence")
    if sequence is not None:
        expect("uint", "sequence", sequence)
    activity_id = non_empty_field(data, "id", "turn activity ")
    correlation_id = non_empty_field(data, "correlation_id", "turn activity ")
    body = {k: v for k, v in data.items() if k not in _ACTIVITY_ENVELOPE}
    event = turn_event_from_dict(body)
    with _as_wire_error("turn activity"):
        return TurnActivity(
            id=activity_id, correlation_id=correlation_id, event=event, sequence=sequence
        )


# --- payloads ---------------------------------------------------------------------------------------


def payload_fields(
    payload: EventPayload, protocol_version: int, sequence: int | None
) -> dict[str, Any]:
    """The payload's fields of an event document (its ``type`` tag excluded)."""
    from . import _events as ev

    if isinstance(payload, ev.TurnActivityPayload):
        return {"activity": activity_to_dict(payload.activity, protocol_version, sequence)}
    if isinstance(payload, ev.Committed):
        return {}  # the wire never carries a full read view
    if isinstance(payload, ev.AgentFrameSwitched):
        return {"frame_id": payload.frame_id}
    if isinstance(payload, ev.QueueChanged):
        return {"kind": str(payload.kind), "batch_ids": list(payload.batch_ids)}
    if isinstance(payload, ev.ProcessChanged):
        return {"kind": str(payload.kind), "process_ids": list(payload.process_ids)}
    if isinstance(payload, ev.UnknownPayload):
        return dict(payload.fields)
    raise WireFormatError(f"no wire form for payload {type(payload).__name__}")


def _turn_activity(data: Mapping[str, Any], version: int) -> EventPayload:
    from ._events import TurnActivityPayload

    if "activity" not in data:
        raise WireFormatError("`turn_activity` is missing field `activity`")
    return TurnActivityPayload(activity_from_dict(data["activity"], version))


def _committed(data: Mapping[str, Any], version: int) -> EventPayload:
    from ._events import Committed

    return Committed(None)


def _frame_switched(data: Mapping[str, Any], version: int) -> EventPayload:
    from ._events import AgentFrameSwitched

    return AgentFrameSwitched(expect("str", "frame_id", data.get("frame_id")))


def _queue_changed(data: Mapping[str, Any], version: int) -> EventPayload:
    from ._events import QueueChanged, SessionQueueEventKind

    kind = enum_member(SessionQueueEventKind, data.get("kind"), "queue event `kind`", WireFormatError)
    return QueueChanged(kind, expect("str_list", "batch_ids", data.get("batch_ids")))


def _process_changed(data: Mapping[str, Any], version: int) -> EventPayload:
    from ._events import ProcessChanged, SessionProcessEventKind

    kind = enum_member(
        SessionProcessEventKind, data.get("kind"), "process event `kind`", WireFormatError
    )
    return ProcessChanged(kind, expect("str_list", "process_ids", data.get("process_ids")))


_PAYLOAD_READERS: dict[str, Callable[[Mapping[str, Any], int], EventPayload]] = {
    "turn_activity": _turn_activity,
    "committed": _committed,
    "agent_frame_switched": _frame_switched,
    "queue_changed": _queue_changed,
    "process_changed": _process_changed,
}


def payload_from_wire(data: Mapping[str, Any], protocol_version: int) -> EventPayload:
    from ._events import UnknownPayload

    tag = data.get("type")
    if not is_utf8_str(tag) or not tag:
        raise WireFormatError("event `type` must be a non-empty UTF-8 string")
    reader = _PAYLOAD_READERS.get(tag)
    with _as_wire_error(f"`{tag}`"):
        if reader is None:
            return UnknownPayload(tag, {k: v for k, v in data.items() if k not in _ENVELOPE})
        return reader(data, protocol_version)


# --- events -----------------------------------------------------------------------------------------


def event_to_dict(
    event: SessionObservationEvent, protocol_version: int, sequence: int | None
) -> dict[str, Any]:
    """The wire document of an event; see ``SessionObservationEvent.to_dict`` for ``sequence``."""
    from ._events import TurnActivityPayload

    check_protocol_version(protocol_version)
    expect("uint", "revision", event.revision)
    if sequence is not None:
        expect("uint", "sequence", sequence)
    elif isinstance(event.payload, TurnActivityPayload) and event.payload.activity.sequence is None:
        sequence = event.live_position  # None for a foreign cursor: written without one
    return {
        "protocol_version": protocol_version,
        "session_id": event.session_id,
        "revision": int(event.revision),
        "cursor": str(event.cursor),
        "type": event.payload.type,
        **payload_fields(event.payload, protocol_version, sequence),
    }


def event_from_dict(data: Mapping[str, Any]) -> SessionObservationEvent:
    from ._events import SessionObservationEvent

    if not isinstance(data, Mapping):
        raise WireFormatError("document must be a JSON object")
    version = check_protocol_version(data.get("protocol_version"))
    session_id = non_empty_field(data, "session_id")
    cursor = non_empty_field(data, "cursor")
    revision = data.get("revision")
    if not is_uint(revision):
        raise WireFormatError(
            f"`revision` must be an unsigned 64-bit integer, got {short_repr(revision)}"
        )
    payload = payload_from_wire(data, version)
    with _as_wire_error("event"):
        return SessionObservationEvent(
            session_id, SessionRevision(revision), SessionCursor(cursor), payload
        )


# --- gaps and observations ----------------------------------------------------------------------------


def gap_to_dict(gap: LiveReplayGap, protocol_version: int) -> dict[str, Any]:
    expect("uint", "latest_revision", gap.latest_revision)
    return {
        "protocol_version": check_protocol_version(protocol_version),
        "session_id": gap.session_id,
        "requested_cursor": str(gap.requested_cursor),
        "latest_cursor": str(gap.latest_cursor),
        "latest_revision": int(gap.latest_revision),
        "reason": str(gap.reason),
    }


def gap_from_dict(data: Mapping[str, Any]) -> LiveReplayGap:
    from ._gap import LiveReplayGap, LiveReplayGapReason

    if not isinstance(data, Mapping):
        raise WireFormatError("gap must be a JSON object")
    check_protocol_version(data.get("protocol_version"))
    reason = enum_member(LiveReplayGapReason, data.get("reason"), "gap `reason`", WireFormatError)
    revision = data.get("latest_revision")
    if not is_uint(revision):
        raise WireFormatError("`latest_revision` must be an unsigned 64-bit integer")
    session_id = non_empty_field(data, "session_id")
    requested = non_empty_field(data, "requested_cursor")
    latest = non_empty_field(data, "latest_cursor")
    with _as_wire_error("gap"):
        return LiveReplayGap(
            session_id=session_id,
            requested_cursor=SessionCursor(requested),
            latest_cursor=SessionCursor(latest),
            latest_revision=SessionRevision(revision),
            reason=reason,
        )


def observation_to_dict(observation: SessionObservation, protocol_version: int) -> dict[str, Any]:
    from ._events import TokenUsage

    view = observation.read_view
    usage = getattr(view, "usage", None) or TokenUsage()
    expect("uint", "turn_index", view.turn_index)
    return {
        "protocol_version": check_protocol_version(protocol_version),
        "session_id": view.session_id,
        "cursor": str(observation.cursor),
        "turn_index": int(view.turn_index),
        "usage": usage.to_dict(),
    }


def observation_from_dict(data: Mapping[str, Any]) -> SessionObservation:
    from ._gap import ObservationSummary, SessionObservation

    if not isinstance(data, Mapping):
        raise WireFormatError("observation must be a JSON object")
    check_protocol_version(data.get("protocol_version"))
    turn_index = data.get("turn_index")
    if not is_uint(turn_index):
        raise WireFormatError("`turn_index` must be an unsigned 64-bit integer")
    session_id = non_empty_field(data, "session_id")
    usage = usage_from_dict(data.get("usage", {}))
    cursor = non_empty_field(data, "cursor")
    with _as_wire_error("observation"):
        summary = ObservationSummary(session_id=session_id, turn_index=turn_index, usage=usage)
        return SessionObservation(summary, SessionCursor(cursor))
