"""Observation sources for tests: a scenario's handle, wrapped to misbehave on purpose.

Imported by tests as ``from sources import MovingOnSource`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

from typing import Any

from lash_core import AssistantProseDelta, TurnActivity


def delta(handle: Any, text: str = "x") -> None:
    handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(text)))


class MovingOnSource:
    """A source whose store moves on (appends, then lets everything expire) right before each of
    its next ``times`` subscribes: every one of those answers a gap. With a scenario made with a
    fake clock and ``max_age`` under 10 s (``Scenario.create(max_age=5.0)``) a subscribe from a
    cursor of the same store answers ``trimmed``, so a follower's resubscribe from the gap's fresh
    cursor gaps again: ``times=2`` makes two gaps in a row, deterministically.

    Anything else is the handle's (attributes fall through to it), so it stands in for the handle
    wherever one is taken: a ``SessionFollower``, a ``SimulatedClient``, a ``SessionMonitor``.
    """

    def __init__(self, scenario: Any, times: int = 0) -> None:
        self.scenario = scenario
        self.handle = scenario.handle
        self.session_id = self.handle.session_id
        self.times = times
        self.subscribes = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("handle", "scenario"):  # not set yet: never recurse
            raise AttributeError(name)
        return getattr(self.handle, name)

    def current_session_observation(self) -> Any:
        return self.handle.current_session_observation()

    def resume_session_observation(self, cursor: Any) -> Any:
        return self.handle.resume_session_observation(cursor)

    def subscribe_session_observation(self, cursor: Any) -> Any:
        self.subscribes += 1
        if self.times > 0:
            self.times -= 1
            delta(self.handle, "moved on")
            delta(self.handle, "moved on")
            self.scenario.clock.advance(10.0)  # past max_age: everything expires
        return self.handle.subscribe_session_observation(cursor)
