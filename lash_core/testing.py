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

from ._cursor import U64_MAX, SessionCursor
from ._events import SessionObservationEvent
from ._follower import SessionFollower
from ._gap import LiveReplayGap, ReadView, SessionObservation
from ._handle import GapResume, RuntimeHandle
from ._processes import InMemoryProcessRegistry
from ._queue import InMemoryQueueStore
from ._replay import InMemoryLiveReplayStore, InMemoryLiveReplayStoreConfig
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
        now = self.now + seconds
        # the epoch-ms reading must stay an unsigned 64-bit integer (queue and process stamps)
        if not now < math.inf or self._epoch_ms + (now - self._start) * 1000 > U64_MAX:
            raise ValueError(f"advancing by {seconds} s would take the clock past 2**64-1 ms")
        self.now = now


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
    """A remote UI, simulated: a ``SessionFollower`` on the handle plus the last events it applied.
    ``pump()`` applies whatever is ready; ``disconnect()``/``reconnect()`` drop and resume the
    stream. Gaps and lags follow the follower's policy (recorded, never skipped).

    Everything it keeps is bounded, so a client can follow a session and reconnect forever: the
    last ``keep_events`` events, the last ``MAX_CLIENT_OUTCOMES`` reconnect outcomes, the follower's
    bounded gap log, and running totals (``received``, ``reconnects``, ``gap_count``, ``lagged``).
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
        self.follower = SessionFollower(handle)
        #: the last ``keep_events`` events applied
        self.events: collections.deque[SessionObservationEvent] = collections.deque(maxlen=keep_events)
        #: the last ``MAX_CLIENT_OUTCOMES`` outcomes of ``connect``/``reconnect``, newest last
        self.outcomes: collections.deque[ReconnectOutcome] = collections.deque(
            maxlen=MAX_CLIENT_OUTCOMES
        )
        #: every outcome ever recorded (the first connect included)
        self.reconnects = 0
        self.connect()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<SimulatedClient {self.name!r} {state} received={self.received}>"

    @property
    def connected(self) -> bool:
        return self.follower.connected

    @property
    def cursor(self) -> SessionCursor:
        cursor = self.follower.cursor
        assert cursor is not None  # a handle is a synchronous source: read at construction
        return cursor

    @property
    def view(self) -> ReadView | None:
        return self.follower.read_view

    @property
    def received(self) -> int:
        return self.follower.received

    @property
    def gap_count(self) -> int:
        """Every gap this client met (on connect, or on a resubscribe after a lag)."""
        return self.follower.gap_count

    @property
    def lagged(self) -> int:
        """Live events this client missed by falling behind (then replayed, or covered by a gap)."""
        return self.follower.lagged_events

    @property
    def gaps(self) -> list[ReconnectOutcome]:
        """The gap outcomes among the recent ``outcomes``, newest last (``gap_count`` counts all)."""
        return [o for o in self.outcomes if o.gap is not None]

    def connect(self) -> ReconnectOutcome:
        """Subscribe from the saved cursor (a subscription already held is closed first, so a
        repeated ``connect()`` never leaves one behind)."""
        requested = self.cursor
        result = self.follower.connect()
        self.reconnects += 1
        if isinstance(result, GapResume):  # one outcome per gap: a second one in a row too
            outcomes = [
                ReconnectOutcome(
                    self.name, gap.gap.requested_cursor, gap=gap.gap, observation=gap.observation
                )
                for gap in self.follower.last_gaps
            ]
            self.outcomes.extend(outcomes)
            return outcomes[0]
        self.events.extend(result.events)
        outcome = ReconnectOutcome(self.name, requested, replayed=result.events)
        self.outcomes.append(outcome)
        return outcome

    def disconnect(self) -> None:
        self.follower.disconnect()

    def reconnect(self) -> ReconnectOutcome:
        self.disconnect()
        return self.connect()

    def pump(self) -> list[SessionObservationEvent]:
        """Apply every ready event (a lag resubscribes from the cursor, as the follower does); a
        disconnected client applies nothing until it reconnects."""
        if not self.follower.connected:
            return []
        events = [item for item in self.follower.poll() if isinstance(item, SessionObservationEvent)]
        self.events.extend(events)
        return events

    def view_matches_server(self) -> bool:
        """True when this client's reconstructed view is the server's latest read view; ``False``
        when the two cannot even be compared (a view nested too deeply for ``==``)."""
        try:
            return bool(self.view == self.handle.observe().read_view)
        except RecursionError:
            return False
