"""A reusable scenario: runtime + handle + stores + fake clock + simulated clients.

Tests, the command-line tour, notebooks and benchmarks all build sessions the same way with
``await Scenario.create(...)``. A ``SimulatedClient`` follows a session the way a remote UI
would: it keeps the last cursor it saw, can disconnect, and on reconnect either replays what it
missed or receives a gap plus a fresh observation. Its reconstructed view can be compared with
the server's.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import time
from typing import Any, Callable, Iterable, Sequence

from ._cursor import SessionCursor
from ._errors import ReplayClosed, SubscriberLagged
from ._events import Committed, SessionObservationEvent
from ._gap import LiveReplayGap, SessionObservation
from ._handle import GapResume, RuntimeHandle
from ._processes import InMemoryProcessRegistry
from ._queue import InMemoryQueueStore
from ._replay import InMemoryLiveReplayStore, InMemoryLiveReplayStoreConfig, LiveReplaySubscription
from ._runtime import LashRuntime, ModelSpec, ScriptedModel, SessionPolicy

__all__ = [
    "FakeClock",
    "Scenario",
    "SimulatedClient",
    "ReconnectOutcome",
    "DEMO_REPLIES",
    "MAX_CLIENT_OUTCOMES",
]

#: Reconnect outcomes a simulated client keeps (each may hold a replayed batch): enough for any
#: gap log on screen, while a client that reconnects forever stays bounded.
MAX_CLIENT_OUTCOMES = 256

DEMO_REPLIES: tuple[Any, ...] = (
    "Hello! I am a scripted model: every word you see streams as a delta.",
    ScriptedModel.tool_call("add", {"a": 2, "b": 3}, text="Let me add those. "),
    "2 + 3 = 5.",
    ScriptedModel.reply("Queued input joins at a safe boundary.", reasoning="Check the queue."),
)


class FakeClock:
    """A clock tests move by hand: ``clock()`` is monotonic seconds, ``clock.ms()`` epoch ms."""

    def __init__(self, start: float = 1_000.0, epoch_ms: int = 1_750_000_000_000) -> None:
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise TypeError(f"start must be a number of seconds, not {type(start).__name__}")
        if not -math.inf < start < math.inf:
            raise ValueError(f"start must be a finite number of seconds, not {start}")
        if isinstance(epoch_ms, bool) or not isinstance(epoch_ms, int):
            raise TypeError(f"epoch_ms must be an int, not {type(epoch_ms).__name__}")
        self.now = float(start)
        self._start = float(start)
        self._epoch_ms = epoch_ms

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return self._epoch_ms + round((self.now - self._start) * 1000)

    def advance(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        if not 0 <= seconds < math.inf:
            raise ValueError(f"a monotonic clock only moves forward by finite steps, not {seconds}")
        self.now += seconds


def _add(a: float, b: float) -> float:
    return a + b


@dataclasses.dataclass(slots=True)
class Scenario:
    clock: FakeClock | None
    store: InMemoryLiveReplayStore
    queue: InMemoryQueueStore
    processes: InMemoryProcessRegistry
    model: ScriptedModel
    handle: RuntimeHandle

    @classmethod
    async def create(
        cls,
        *,
        session_id: str = "demo-session",
        replies: Iterable[Any] = DEMO_REPLIES,
        cycle: bool = True,
        max_events: int = 2048,
        max_age: float = 120.0,
        subscriber_backlog: int = 2048,
        fake_clock: bool = True,
        delay: float = 0.0,
        chunk_size: int = 8,
        tools: Sequence[tuple[str, Callable[..., Any]]] = (("add", _add),),
    ) -> Scenario:
        clock = FakeClock() if fake_clock else None
        store = InMemoryLiveReplayStore(
            InMemoryLiveReplayStoreConfig(max_events, max_age, subscriber_backlog),
            clock=clock if clock is not None else time.monotonic,
        )
        queue = InMemoryQueueStore(clock_ms=clock.ms if clock is not None else None)
        processes = InMemoryProcessRegistry(clock_ms=clock.ms if clock is not None else None)
        model = ScriptedModel.from_replies(replies, cycle=cycle, delay=delay, chunk_size=chunk_size)
        builder = (
            LashRuntime.builder()
            .with_session_id(session_id)
            .with_policy(SessionPolicy(model=ModelSpec.from_token_limits("test-model", None, 1024, None)))
            .with_model(model)
            .with_queue_store(queue)
            .with_process_registry(processes)
        )
        for name, fn in tools:
            builder = builder.with_tool(name, fn)
        runtime = await builder.build()
        return cls(clock, store, queue, processes, model, RuntimeHandle(runtime, store))

    @property
    def session_id(self) -> str:
        return self.handle.session_id

    def client(self, name: str = "client") -> SimulatedClient:
        return SimulatedClient(self.handle, name)

    def restart_store(self) -> None:
        """Simulate a server restart: a new, empty replay store behind the same runtime."""
        self.store.close()
        clock = self.store.clock
        self.store = InMemoryLiveReplayStore(self.store.config, clock=clock)
        self.handle._shared.store = self.store


@dataclasses.dataclass(frozen=True, slots=True)
class ReconnectOutcome:
    """What one reconnect gave: the replayed events, or a gap with a fresh observation."""

    client: str
    requested_cursor: SessionCursor
    replayed: tuple[SessionObservationEvent, ...] = ()
    gap: LiveReplayGap | None = None
    observation: SessionObservation | None = None

    @property
    def kind(self) -> str:
        return "gap" if self.gap is not None else "replayed"


class SimulatedClient:
    """Follows one session through a subscription; ``pump()`` applies whatever is ready.

    Everything it keeps is bounded, so a client can follow a session and reconnect forever: the
    last ``keep_events`` events, the last ``MAX_CLIENT_OUTCOMES`` reconnect outcomes, and running
    totals (``received``, ``reconnects``, ``gap_count``, ``lagged``).
    """

    def __init__(self, handle: RuntimeHandle, name: str, *, keep_events: int = 10_000) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if isinstance(keep_events, bool) or not isinstance(keep_events, int):
            raise TypeError(f"keep_events must be an int, not {type(keep_events).__name__}")
        if not 0 <= keep_events <= sys.maxsize:
            raise ValueError(f"keep_events must be in 0..sys.maxsize, got {keep_events}")
        self.handle = handle
        self.name = name
        #: the last ``keep_events`` events applied
        self.events: collections.deque[SessionObservationEvent] = collections.deque(maxlen=keep_events)
        self.received = 0
        #: the last ``MAX_CLIENT_OUTCOMES`` outcomes of ``connect``/``reconnect``, newest last
        self.outcomes: collections.deque[ReconnectOutcome] = collections.deque(
            maxlen=MAX_CLIENT_OUTCOMES
        )
        #: every outcome ever recorded (the first connect included), and every gap among them
        self.reconnects = 0
        self.gap_count = 0
        self.lagged = 0
        fresh = handle.current_session_observation()
        self.cursor: SessionCursor = fresh.cursor
        self.view: Any = fresh.read_view
        self._subscription: LiveReplaySubscription | None = None
        self.connect()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<SimulatedClient {self.name!r} {state} received={self.received}>"

    @property
    def connected(self) -> bool:
        return self._subscription is not None

    @property
    def gaps(self) -> list[ReconnectOutcome]:
        """The gap outcomes among the recent ``outcomes``, newest last (``gap_count`` counts all)."""
        return [o for o in self.outcomes if o.gap is not None]

    def connect(self) -> ReconnectOutcome:
        """Subscribe from the saved cursor (a subscription already held is closed first, so a
        repeated ``connect()`` never leaves one behind)."""
        self.disconnect()
        result = self.handle.subscribe_session_observation(self.cursor)
        requested = self.cursor
        if isinstance(result, GapResume):
            self.view = result.observation.read_view
            self.cursor = result.observation.cursor
            outcome = ReconnectOutcome(self.name, requested, gap=result.gap, observation=result.observation)
            result = self.handle.subscribe_session_observation(self.cursor)
            if isinstance(result, GapResume):  # the store moved on between the two calls
                return self._record(outcome)
            self._subscription = result.subscription
            return self._record(outcome)
        self._subscription = result.subscription
        replayed = tuple(self._drain())
        return self._record(ReconnectOutcome(self.name, requested, replayed=replayed))

    def _record(self, outcome: ReconnectOutcome) -> ReconnectOutcome:
        self.outcomes.append(outcome)
        self.reconnects += 1
        if outcome.gap is not None:
            self.gap_count += 1
        return outcome

    def disconnect(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def reconnect(self) -> ReconnectOutcome:
        self.disconnect()
        return self.connect()

    def pump(self) -> list[SessionObservationEvent]:
        """Apply every ready event; a lag is counted and followed by a reconnect from the cursor."""
        if self._subscription is None:
            return []
        try:
            return self._drain()
        except SubscriberLagged as lag:
            self.lagged += lag.count
            before = self.received
            self.reconnect()
            return list(self.events)[len(self.events) - (self.received - before) :]
        except ReplayClosed:
            self._subscription = None  # the server went away: disconnected, cursor kept
            return []

    def _drain(self) -> list[SessionObservationEvent]:
        assert self._subscription is not None
        got: list[SessionObservationEvent] = []
        while batch := self._subscription.next_batch_nowait(1024):
            for event in batch:
                self._apply(event)
            got.extend(batch)
        return got

    def _apply(self, event: SessionObservationEvent) -> None:
        self.events.append(event)
        self.received += 1
        self.cursor = event.cursor
        if isinstance(event.payload, Committed) and event.payload.read_view is not None:
            self.view = event.payload.read_view

    def view_matches_server(self) -> bool:
        """True when this client's reconstructed view is the server's latest read view; ``False``
        when the two cannot even be compared (a view nested too deeply for ``==``)."""
        try:
            return bool(self.view == self.handle.observe().read_view)
        except RecursionError:
            return False
