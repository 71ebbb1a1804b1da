"""Gaps and fresh observations: what a client gets when replay from its cursor is impossible."""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

from ._cursor import SessionCursor, SessionRevision
from ._errors import SessionCursorError
from ._events import TokenUsage
from ._wire import DEFAULT_PROTOCOL_VERSION

if TYPE_CHECKING:
    from ._runtime._state import ChatMessage

__all__ = [
    "LiveReplayGapReason",
    "LiveReplayGap",
    "SessionObservation",
    "ObservationSummary",
    "ReadView",
]


class LiveReplayGapReason(enum.StrEnum):
    TRIMMED = "trimmed"  # retention dropped events the cursor still needed
    UNAVAILABLE = "unavailable"  # the store never had the cursor's position (restart, future)


@dataclasses.dataclass(frozen=True, slots=True)
class LiveReplayGap:
    session_id: str
    requested_cursor: SessionCursor
    latest_cursor: SessionCursor
    latest_revision: SessionRevision
    reason: LiveReplayGapReason

    @property
    def missed_events(self) -> int | None:
        """Live positions between the two cursors of a ``trimmed`` gap, when both parse;
        ``None`` otherwise. An ``unavailable`` gap has no count, whatever its positions: its cursor
        is from the future or from an earlier store instance, whose positions say nothing about
        this one's (an instance-numbered store starts far above them). An upper bound once a
        store's forgotten-session floor has risen: positions may then have jumped past numbers
        no event ever had."""
        if self.reason is not LiveReplayGapReason.TRIMMED:
            return None
        try:
            requested = self.requested_cursor.parse().live_position
            latest = self.latest_cursor.parse().live_position
        except SessionCursorError:
            return None
        return latest - requested if latest >= requested else None

    def to_dict(self, protocol_version: int = DEFAULT_PROTOCOL_VERSION) -> dict[str, Any]:
        from ._wire import gap_to_dict

        return gap_to_dict(self, protocol_version)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveReplayGap:
        """Raises ``WireFormatError`` naming the rule."""
        from ._wire import gap_from_dict

        return gap_from_dict(data)


@dataclasses.dataclass(frozen=True, slots=True)
class ObservationSummary:
    """The part of a read view that travels on the wire (the full view never does): a
    ``ReadView`` with no messages and no known agent frame."""

    session_id: str
    turn_index: int
    usage: TokenUsage = TokenUsage()
    messages: tuple[ChatMessage, ...] = ()
    current_agent_frame_id: str | None = None


@runtime_checkable
class ReadView(Protocol):
    """What a client renders of a session. The runtime's committed ``SessionReadView`` is one; an
    ``ObservationSummary`` read from the wire is one too (no messages, no agent frame)."""

    @property
    def session_id(self) -> str: ...

    @property
    def turn_index(self) -> int: ...

    @property
    def usage(self) -> TokenUsage: ...

    @property
    def messages(self) -> tuple[ChatMessage, ...]: ...

    @property
    def current_agent_frame_id(self) -> str | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class SessionObservation:
    """What a client renders, plus the cursor to resume from."""

    read_view: ReadView
    cursor: SessionCursor

    def to_dict(self, protocol_version: int = DEFAULT_PROTOCOL_VERSION) -> dict[str, Any]:
        """The observation document: the read view's summary (session, turn index, usage)."""
        from ._wire import observation_to_dict

        return observation_to_dict(self, protocol_version)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionObservation:
        """Raises ``WireFormatError``; the read view is an ``ObservationSummary``."""
        from ._wire import observation_from_dict

        return observation_from_dict(data)
