"""``ReplayModel``: a live replay store against a naive reference, for every backend.

Moved here from ``tests/test_replay.py`` so that every backend runs it; the in-memory store's
extra rules (forgetting sessions into tombstones, the store-wide floor, statistics) are checked by
``InMemoryReplayModel`` there, a subclass that fills the hooks below.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from lash_core import (
    AssistantProseDelta,
    Gap,
    LiveReplayGapReason,
    Replayed,
    ReplayClosed,
    SessionCursor,
    Subscribed,
    SubscriberLagged,
    TurnActivity,
    TurnActivityPayload,
)
from lash_core.testing import FakeClock

TRIMMED = LiveReplayGapReason.TRIMMED
UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE


def delta(text: str) -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text)))


def texts(events: Any) -> list[str]:
    return [e.payload.activity.event.text for e in events]


def positions(events: Any) -> list[int]:
    return [e.cursor.parse().live_position for e in events]


class ReplayModel(RuleBasedStateMachine):
    """The store against a naive model: every event ever appended kept with its time, retention
    and gaps recomputed from scratch.

    Beyond matching the model exactly, every replay checks the property the rules exist for: a
    ``Replayed`` answer holds exactly the session's events after the cursor, over its whole
    history (a cursor from before the buffer emptied never silently replays other events).

    The base model never forgets a session: a store that drops an empty, unobserved session and
    keeps its tail answers exactly like one that keeps the empty session (the protocol's
    "Forgetting" paragraph). Hooks for a store that models more: ``_revive`` (where a session
    without a log continues from; override ``_tail`` with it), ``_settle`` (after retention ran on
    a session),
    ``_after_append`` (extra checks).
    """

    SESSIONS = ("a", "b:c", "ü")

    def __init__(self, factory: Any) -> None:
        super().__init__()
        self.factory = factory
        self.store: Any = None

    @initialize(
        n=st.integers(min_value=0, max_value=6),
        age=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
        backlog=st.integers(min_value=1, max_value=6),
    )
    def setup(self, n: int, age: float, backlog: int) -> None:
        self.start(n, age, backlog)

    def start(self, n: int, age: float, backlog: int) -> None:
        self.clock = FakeClock()
        self.store = self.factory.open(
            clock=self.clock, max_events_per_session=n, max_age=age, subscriber_backlog=backlog
        )
        self.n, self.age, self.backlog = n, age, backlog
        self.history: dict[str, list[tuple[int, float, str]]] = {s: [] for s in self.SESSIONS}
        self.logs: dict[str, dict[str, int]] = {}  # sessions with a log: {"tail", "first", "evicted"}
        self.seen = {s: {0} for s in self.SESSIONS}  # positions of cursors handed out
        self.subs: list[list[Any]] = []  # [session, subscription, expected replay, next live position]
        self.counter = 0

    def teardown(self) -> None:
        if self.store is not None:
            for entry in self.subs:
                entry[1].close()
            self.factory.close(self.store)

    # -- the reference ---------------------------------------------------------------------------

    def _revive(self, sid: str) -> tuple[int, int]:
        """``(tail, evicted)`` a session without a log continues from."""
        return 0, 0

    def _tail(self, sid: str) -> int:
        """The session's tail: its log's, else where ``_revive`` would continue from."""
        return self.logs[sid]["tail"] if sid in self.logs else 0

    def _open(self, sid: str) -> None:
        tail, evicted = self._revive(sid)
        self.logs[sid] = {"tail": tail, "first": tail + 1, "evicted": evicted}

    def _trim(self, sid: str) -> None:
        log = self.logs[sid]
        tail = log["tail"]
        first = max(log["first"], tail - self.n + 1)
        stamp = {pos: t for (pos, t, _) in self.history[sid]}
        while first <= tail and self.clock.now - stamp[first] > self.age:
            first += 1
        log["evicted"] += first - log["first"]
        log["first"] = first

    def _subscribed(self, sid: str) -> bool:
        return any(entry[0] == sid for entry in self.subs)

    def _settle(self, sid: str) -> None:
        """After retention ran on ``sid`` (or its subscriptions changed). Nothing to do here."""

    def _after_append(self, sid: str) -> None:
        """Extra checks after each append."""

    def _expected(self, sid: str, p: int) -> Gap | list[str]:
        """What a replay or subscribe answers (applying retention, as the store does)."""
        if sid in self.logs:
            self._trim(sid)
            tail, first = self.logs[sid]["tail"], self.logs[sid]["first"]
        else:
            tail = self._tail(sid)
            first = tail + 1
        if p > tail:
            return Gap(UNAVAILABLE)
        if p + 1 < first:
            return Gap(TRIMMED)
        return [t for (pos, _, t) in self.history[sid] if pos > p]

    def _cursor_position(self, sid: str, back: int, pick: int | None) -> int:
        if pick is None:
            return max(0, self._tail(sid) - back)
        seen = sorted(self.seen[sid])
        return seen[pick % len(seen)]

    # -- rules -----------------------------------------------------------------------------------

    @rule(sid=st.sampled_from(SESSIONS))
    def append(self, sid: str) -> None:
        self.counter += 1
        text = f"e{self.counter}"
        expected = self._tail(sid) + 1
        event = self.store.append(sid, 0, delta(text))
        position = event.cursor.parse().live_position
        assert position == expected
        assert event.cursor == SessionCursor.new(sid, 0, position)
        assert all(pos < position for (pos, _, _) in self.history[sid])  # never reused
        if sid not in self.logs:
            self._open(sid)
        self.history[sid].append((position, self.clock.now, text))
        self.logs[sid]["tail"] = position
        self._trim(sid)
        self._settle(sid)
        self.seen[sid].add(position)
        self._after_append(sid)

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule(
        sid=st.sampled_from(SESSIONS),
        back=st.integers(min_value=-2, max_value=8),
        pick=st.none() | st.integers(min_value=0, max_value=50),
    )
    def replay(self, sid: str, back: int, pick: int | None) -> None:
        p = self._cursor_position(sid, back, pick)
        result = self.store.replay_after_cursor(SessionCursor.new(sid, 0, p))
        expected = self._expected(sid, p)
        self._settle(sid)
        if isinstance(expected, Gap):
            assert result == expected
        else:
            assert isinstance(result, Replayed)
            assert texts(result.events) == expected
            # the property: exactly the session's whole history after the cursor
            assert texts(result.events) == [t for (pos, _, t) in self.history[sid] if pos > p]

    @rule(
        sid=st.sampled_from(SESSIONS),
        back=st.integers(min_value=-1, max_value=6),
        pick=st.none() | st.integers(min_value=0, max_value=50),
    )
    def subscribe(self, sid: str, back: int, pick: int | None) -> None:
        p = self._cursor_position(sid, back, pick)
        expected = self._expected(sid, p)
        result = self.store.subscribe_after_cursor(SessionCursor.new(sid, 0, p))
        if isinstance(expected, Gap):
            assert result == expected
            self._settle(sid)
            return
        assert isinstance(result, Subscribed)
        if sid not in self.logs:
            self._open(sid)
        self.subs.append([sid, result.subscription, list(expected), self._tail(sid) + 1])

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(min_value=0, max_value=50))
    def drain(self, i: int) -> None:
        entry = self.subs[i % len(self.subs)]
        sid, sub, replay, nxt = entry
        got = []
        while True:
            try:
                event = sub.next_nowait()
            except SubscriberLagged as lag:
                got.append(f"lag{lag.count}")
                continue
            if event is None:
                break
            got.append(event.payload.activity.event.text)
        expected = list(replay)
        tail = self._tail(sid)  # a subscribed session is live: never forgotten under a reader
        if nxt <= tail:
            oldest = max(tail - self.backlog + 1, 1)
            if nxt < oldest:
                expected.append(f"lag{oldest - nxt}")
                nxt = oldest
            expected += [t for (pos, _, t) in self.history[sid] if pos >= nxt]
        assert got == expected
        entry[2], entry[3] = [], tail + 1

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(min_value=0, max_value=50))
    def close_subscription(self, i: int) -> None:
        sid, sub, _, _ = self.subs.pop(i % len(self.subs))
        sub.close()
        assert sub.closed
        with pytest.raises(ReplayClosed):
            sub.next_nowait()
        self._settle(sid)  # a store may forget an empty session once its last reader is gone

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(min_value=0, max_value=50))
    def drop_subscription(self, i: int) -> None:
        # dropped without close(): a store may stop counting it, and forget the session later
        sid = self.subs.pop(i % len(self.subs))[0]
        gc.collect()
        self._after_drop(sid)

    def _after_drop(self, sid: str) -> None:
        """Hook: what a store does once a subscription of ``sid`` was dropped (here: nothing)."""

    @rule(sid=st.sampled_from(SESSIONS))
    def trim(self, sid: str) -> None:
        self.store.trim_session(sid)
        if sid in self.logs:
            self._trim(sid)
            self._settle(sid)

    @rule()
    def expire_everything(self) -> None:
        """Every event expires and retention runs everywhere. Then every interesting cursor gets
        the model's answer."""
        self.clock.advance(self.age + 1)
        for sid in self.SESSIONS:
            self.trim(sid)
        for sid in self.SESSIONS:
            tail = self._tail(sid)
            for p in sorted({0, max(0, tail - 1), tail, tail + 1} | self.seen[sid]):
                result = self.store.replay_after_cursor(SessionCursor.new(sid, 0, p))
                expected = self._expected(sid, p)
                self._settle(sid)
                if isinstance(expected, Gap):
                    assert result == expected, (sid, p)
                else:
                    assert result == Replayed(()), (sid, p)  # nothing is retained any more

    @invariant()
    def cursors_agree(self) -> None:
        if self.store is None:
            return
        for sid in self.SESSIONS:
            tail = self._tail(sid)
            assert self.store.current_cursor(sid, 5) == SessionCursor.new(sid, 5, tail)
            self.seen[sid].add(tail)


#: Examples per backend: enough to reach lags, expiry and re-subscribes in most runs (about a
#: second for the in-memory store).
REPLAY_MODEL_SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None)


def run_replay_model(factory: Any, machine: type[ReplayModel] = ReplayModel, **overrides: Any) -> None:
    """Run ``machine`` (``ReplayModel`` or a subclass) against stores opened by ``factory``."""
    run_state_machine_as_test(
        lambda: machine(factory), settings=settings(REPLAY_MODEL_SETTINGS, **overrides)
    )
