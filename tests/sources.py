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


class OutageSource:
    """A scenario's handle behind a switch: while ``down`` is set, every call raises
    ``LiveReplayStoreFailure`` (as a network source does when its peer is unreachable), and a
    subscription handed out earlier fails at its next read. ``calls`` counts the calls refused.
    Its methods are asynchronous, like a remote source's."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.session_id = handle.session_id
        self.down = False
        self.refused = 0

    def _check(self) -> None:
        from lash_core import LiveReplayStoreFailure

        if self.down:
            self.refused += 1
            raise LiveReplayStoreFailure("the peer is unreachable (test outage)")

    async def current_session_observation(self) -> Any:
        self._check()
        return self.handle.current_session_observation()

    async def resume_session_observation(self, cursor: Any) -> Any:
        self._check()
        return self.handle.resume_session_observation(cursor)

    async def subscribe_session_observation(self, cursor: Any) -> Any:
        from lash_core import Subscribed

        self._check()
        result = self.handle.subscribe_session_observation(cursor)
        if isinstance(result, Subscribed):
            return Subscribed(_OutageSubscription(self, result.subscription))
        return result


class _OutageSubscription:
    def __init__(self, source: OutageSource, inner: Any) -> None:
        self._source = source
        self._inner = inner

    async def next_batch(self, max_events: int = 256) -> Any:
        import asyncio

        while True:
            self._source._check()
            batch = self._inner.next_batch_nowait(max_events)
            if batch:
                return batch
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self._inner.close()
