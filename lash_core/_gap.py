"""Gaps and fresh observations: what a client gets when replay from its cursor is impossible."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

from ._cursor import U64_MAX, SessionCursor, SessionRevision
from ._errors import SessionCursorError, WireFormatError
from ._events import DEFAULT_PROTOCOL_VERSION, TokenUsage, check_protocol_version
from ._validate import enum_member, is_utf8_str

__all__ = [
    "LiveReplayGapReason",
    "LiveReplayGap",
    "SessionObservation",
    "ObservationSummary",
]


class LiveReplayGapReason(enum.StrEnum):
    TRIMMED = "trimmed"  # retention dropped events the cursor still needed
    UNAVAILABLE = "unavailable"  # the store never had the cursor's position (restart, future)


def _non_empty(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not is_utf8_str(value) or not value:
        raise WireFormatError(f"`{key}` must be a non-empty UTF-8 string")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class LiveReplayGap:
    session_id: str
    requested_cursor: SessionCursor
    latest_cursor: SessionCursor
    latest_revision: SessionRevision
    reason: LiveReplayGapReason

    @property
    def missed_events(self) -> int | None:
        """Live positions between the two cursors, when both parse; ``None`` otherwise
        (an ``unavailable`` cursor from the future or a restarted store has no meaningful count).
        An upper bound once a store's forgotten-session floor has risen: positions may then have
        jumped past numbers no event ever had."""
        try:
            requested = self.requested_cursor.parse().live_position
            latest = self.latest_cursor.parse().live_position
        except SessionCursorError:
            return None
        return latest - requested if latest >= requested else None

    def to_dict(self, protocol_version: int = DEFAULT_PROTOCOL_VERSION) -> dict[str, Any]:
        return {
            "protocol_version": check_protocol_version(protocol_version),
            "session_id": self.session_id,
            "requested_cursor": str(self.requested_cursor),
            "latest_cursor": str(self.latest_cursor),
            "latest_revision": int(self.latest_revision),
            "reason": str(self.reason),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveReplayGap:
        if not isinstance(data, Mapping):
            raise WireFormatError("gap must be a JSON object")
        check_protocol_version(data.get("protocol_version"))
        reason = enum_member(LiveReplayGapReason, data.get("reason"), "gap `reason`", WireFormatError)
        try:
            revision = SessionRevision(data.get("latest_revision"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise WireFormatError("`latest_revision` must be an unsigned 64-bit integer") from None
        return cls(
            session_id=_non_empty(data, "session_id"),
            requested_cursor=SessionCursor(_non_empty(data, "requested_cursor")),
            latest_cursor=SessionCursor(_non_empty(data, "latest_cursor")),
            latest_revision=revision,
            reason=reason,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ObservationSummary:
    """The part of a read view that travels on the wire (the full view never does)."""

    session_id: str
    turn_index: int
    usage: TokenUsage = TokenUsage()


@dataclasses.dataclass(frozen=True, slots=True)
class SessionObservation:
    """What a client renders, plus the cursor to resume from."""

    read_view: Any
    cursor: SessionCursor

    def to_dict(self, protocol_version: int = DEFAULT_PROTOCOL_VERSION) -> dict[str, Any]:
        view = self.read_view
        usage = getattr(view, "usage", None) or TokenUsage()
        return {
            "protocol_version": check_protocol_version(protocol_version),
            "session_id": view.session_id,
            "cursor": str(self.cursor),
            "turn_index": int(view.turn_index),
            "usage": usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionObservation:
        if not isinstance(data, Mapping):
            raise WireFormatError("observation must be a JSON object")
        check_protocol_version(data.get("protocol_version"))
        turn_index = data.get("turn_index")
        if isinstance(turn_index, bool) or not isinstance(turn_index, int) or not (
            0 <= turn_index <= U64_MAX
        ):
            raise WireFormatError("`turn_index` must be an unsigned 64-bit integer")
        summary = ObservationSummary(
            session_id=_non_empty(data, "session_id"),
            turn_index=turn_index,
            usage=TokenUsage.from_dict(data.get("usage", {})),
        )
        return cls(summary, SessionCursor(_non_empty(data, "cursor")))
