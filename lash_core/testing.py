"""A reusable scenario: runtime + handle + stores + fake clock + simulated clients.

Tests, the command-line tour, notebooks and benchmarks all build sessions the same way with
``await Scenario.create(...)``. A ``SimulatedClient`` follows a session the way a remote UI
would: it keeps the last cursor it saw, can disconnect, and on reconnect either replays what it
missed or receives a gap plus a fresh observation. Its reconstructed view can be compared with
the server's.

Where a scenario keeps its data (``Scenario.create(backend=..., path=...)``):

* ``backend="sqlite"`` (the default): the queue store, the process registry and the live replay
  store share one SQLite file (``lash_core.stores.sqlite``), so no server is needed. The file is

  - ``path`` when given (its directory must exist and be writable);
  - else, with ``fake_clock=True`` (the default, as tests want), a fresh temporary file of its
    own, removed by ``close()`` (or when the handle is garbage collected, or at exit): a fake
    clock restarts at the same reading every run, so reusing a file's stamps would mislead it;
  - else (a real clock) the project's file: ``$LASH_DB`` if set, else ``./.lash/lash.sqlite3``
    under the working directory (``default_database_path()``; the ``.lash`` directory is made
    when missing, with a ``.gitignore``). Data persists across runs: positions continue.

  ``restart_store()`` reopens the same file: a durable store keeps positions, so a client's old
  cursor replays what it missed (or gets ``trimmed``).
* ``backend="memory"``: in-memory stores (``path`` refused). ``restart_store()`` starts an empty
  store with instance numbering, so an old cursor gets an ``unavailable`` gap, never a replay of
  someone else's positions.

The stores are durable; the runtime is not: its session state (transcript, turn index, revision)
lives in this process. A scenario opened later on a file an earlier one used continues that
session's stream (positions keep counting, the queue keeps its batches) with a new runtime whose
revision starts again at 0, so the log then holds two runs' revisions; give each run its own
``session_id`` when that matters.

A file that cannot be used (missing or unwritable directory, not a lash file) is a
``StoreFileError`` naming the path. ``close()`` (or ``async with``) closes the stores.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
import weakref
from typing import Any, Callable, Iterable, Literal, Sequence

from ._cursor import U64_MAX, SessionCursor
from ._errors import LashError
from ._events import SessionObservationEvent
from ._follower import SessionFollower
from ._gap import LiveReplayGap, ReadView, SessionObservation
from ._handle import GapResume, RuntimeHandle
from ._processes import InMemoryProcessRegistry
from ._queue import InMemoryQueueStore
from ._replay import (
    POSITION_BASE_SHIFT,
    InMemoryLiveReplayStore,
    InMemoryLiveReplayStoreConfig,
    LiveReplayStore,
)
from ._runtime import LashRuntime, ModelSpec, ScriptedModel, SessionPolicy
from .stores.sqlite import SqliteLiveReplayStore, SqliteProcessRegistry, SqliteQueueStore

__all__ = [
    "FakeClock",
    "Scenario",
    "SimulatedClient",
    "ReconnectOutcome",
    "StoreFileError",
    "Backend",
    "default_database_path",
    "DATABASE_ENV",
    "DEFAULT_DATABASE_PATH",
    "DEMO_REPLIES",
    "MAX_CLIENT_OUTCOMES",
]

#: Where a scenario keeps its data: one SQLite file, or process memory.
Backend = Literal["sqlite", "memory"]
_BACKENDS = ("sqlite", "memory")
#: The environment variable naming the project's SQLite file (real-clock scenarios).
DATABASE_ENV = "LASH_DB"
#: The project's SQLite file when ``$LASH_DB`` is not set, relative to the working directory.
DEFAULT_DATABASE_PATH = pathlib.PurePath(".lash", "lash.sqlite3")
#: The file's name inside a fake-clock scenario's temporary directory.
_TEMPORARY_NAME = "lash.sqlite3"

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
    """A clock tests move by hand: ``clock()`` is monotonic seconds, ``clock.ms()`` epoch ms.

    ``clock.failure = SomeError(...)`` makes both readings raise it (a clock that fails, to test
    how a store reports it); ``clock.failure = None`` mends it."""

    failure: BaseException | None = None

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
        if self.failure is not None:
            raise self.failure
        return self.now

    def ms(self) -> int:
        if self.failure is not None:
            raise self.failure
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


class StoreFileError(LashError):
    """A scenario's SQLite file cannot be used: its directory is missing or not writable, the
    path is a directory, or the file is not a lash store file. ``path`` is the file meant;
    a store's own error, when there was one, is the ``__cause__``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot use {path!r} as the scenario's SQLite file: {reason}")


def default_database_path(environ: Any = None) -> pathlib.Path:
    """The project's SQLite file, absolute: ``$LASH_DB`` (``~`` expanded, relative to the working
    directory) when set and not empty, else ``./.lash/lash.sqlite3``. Nothing is created here."""
    env = os.environ if environ is None else environ
    chosen = env.get(DATABASE_ENV, "")
    path = pathlib.Path(os.path.expanduser(chosen)) if chosen else pathlib.Path(DEFAULT_DATABASE_PATH)
    return pathlib.Path(os.path.abspath(path))


def _usable_file(path: str | os.PathLike[str]) -> str:
    """``path`` as an absolute string, checked so that a bad one fails with a clear
    ``StoreFileError`` before any store opens it (SQLite's own message is terse)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a text path, not {type(text).__name__}")
    if text in ("", ":memory:") or text.startswith("file:"):
        raise StoreFileError(text, "a file path is needed (use backend='memory' for memory)")
    if "\x00" in text:
        raise StoreFileError(text, "a path cannot contain a NUL character")
    full = os.path.abspath(os.path.expanduser(text))
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        raise StoreFileError(full, "it is a directory")
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise StoreFileError(full, f"its directory {directory!r} {what}")
    if os.path.exists(full):
        if not os.access(full, os.R_OK | os.W_OK):
            raise StoreFileError(full, "the file is not readable and writable")
    elif not os.access(directory, os.W_OK | os.X_OK):
        raise StoreFileError(full, f"its directory {directory!r} is not writable")
    return full


def _project_file() -> str:
    """The real-clock default: ``default_database_path()``, with ``./.lash`` made when it is the
    default directory and missing (a ``$LASH_DB`` directory must exist)."""
    path = default_database_path()
    if not os.environ.get(DATABASE_ENV):
        directory = path.parent
        if not directory.exists():
            try:
                directory.mkdir()
                (directory / ".gitignore").write_text("# lash's local data (Scenario)\n*\n")
            except OSError as err:
                raise StoreFileError(str(path), f"cannot create {str(directory)!r}: {err}") from err
    return _usable_file(path)


def _remove_tree(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


#: The replay store, queue store and process registry of a scenario, by backend.
ScenarioReplayStore = InMemoryLiveReplayStore | SqliteLiveReplayStore | LiveReplayStore
ScenarioQueueStore = InMemoryQueueStore | SqliteQueueStore
ScenarioProcessRegistry = InMemoryProcessRegistry | SqliteProcessRegistry


@dataclasses.dataclass(slots=True, eq=False)
class Scenario:
    """A runtime with a scripted model, its stores and a handle; see the module docstring for
    where the data lives. ``backend`` is ``"sqlite"`` or ``"memory"``; ``path`` the SQLite file
    (``None`` for memory); ``temporary`` whether that file is the scenario's own, removed by
    ``close()``. ``async with`` closes it too: ``async with await Scenario.create() as s:``."""

    clock: FakeClock | None
    store: ScenarioReplayStore
    queue: ScenarioQueueStore
    processes: ScenarioProcessRegistry
    model: ScriptedModel
    handle: RuntimeHandle
    backend: Backend = "memory"
    path: str | None = None
    temporary: bool = False
    _cleanup: weakref.finalize[Any, Any] | None = dataclasses.field(default=None, repr=False)
    _closed: bool = dataclasses.field(default=False, repr=False)

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
        backend: Backend = "sqlite",
        path: str | os.PathLike[str] | None = None,
        replay_store: LiveReplayStore | None = None,
    ) -> Scenario:
        """A scenario on ``backend``: ``"sqlite"`` (default) keeps queue, processes and replay in
        one file (``path``; else a fresh temporary file with ``fake_clock=True``, else
        ``$LASH_DB`` or ``./.lash/lash.sqlite3``); ``"memory"`` keeps them in this process.

        ``replay_store`` replaces the backend's live replay store with one of your own (a
        ``RedisLiveReplayStore`` shared with other processes, say); ``max_events``, ``max_age``
        and ``subscriber_backlog`` are then that store's business. The scenario closes it in
        ``close()``, and ``restart_store()`` refuses it (restart its server instead)."""
        if replay_store is not None and not isinstance(replay_store, LiveReplayStore):
            raise TypeError(
                f"replay_store must be a LiveReplayStore, not {type(replay_store).__name__}"
            )
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be 'sqlite' or 'memory', not {backend!r}")
        if backend == "memory" and path is not None:
            raise ValueError("path is for backend='sqlite'; a memory scenario keeps no file")
        config = InMemoryLiveReplayStoreConfig(max_events, max_age, subscriber_backlog)
        clock = FakeClock() if fake_clock else None
        clock_ms = clock.ms if clock is not None else None
        model = ScriptedModel.from_replies(replies, cycle=cycle, delay=delay, chunk_size=chunk_size)
        store: ScenarioReplayStore
        queue: ScenarioQueueStore
        processes: ScenarioProcessRegistry
        file: str | None = None
        temporary: str | None = None  # the directory a temporary file lives in
        if replay_store is not None:
            store = replay_store
        if backend == "memory":
            if replay_store is None:
                store = InMemoryLiveReplayStore(
                    config, clock=clock if clock is not None else time.monotonic
                )
            queue = InMemoryQueueStore(clock_ms=clock_ms)
            processes = InMemoryProcessRegistry(clock_ms=clock_ms)
            opened: list[Any] = []
        else:
            if path is not None:
                file = _usable_file(path)
            elif clock is not None:
                temporary = tempfile.mkdtemp(prefix="lash-scenario-")
                file = os.path.join(temporary, _TEMPORARY_NAME)
            else:
                file = _project_file()
            opened = []
            try:
                try:
                    queue = SqliteQueueStore(file, clock_ms=clock_ms)
                    opened.append(queue)
                    processes = SqliteProcessRegistry(file, clock_ms=clock_ms)
                    opened.append(processes)
                    if replay_store is None:
                        store = SqliteLiveReplayStore(file, config, clock=clock)
                        opened.append(store)
                except LashError as err:
                    raise StoreFileError(file, str(err)) from err
            except BaseException:
                _close_all(opened)
                if temporary is not None:
                    _remove_tree(temporary)
                raise
        try:
            builder = (
                LashRuntime.builder()
                .with_session_id(session_id)
                .with_policy(
                    SessionPolicy(model=ModelSpec.from_token_limits("test-model", None, 1024, None))
                )
                .with_model(model)
                .with_queue_store(queue)
                .with_process_registry(processes)
            )
            for name, fn in tools:
                builder = builder.with_tool(name, fn)
            runtime = await builder.build()
            handle = RuntimeHandle(runtime, store)
        except BaseException:
            _close_all(opened)
            if temporary is not None:
                _remove_tree(temporary)
            raise
        cleanup = None
        if temporary is not None:  # removed by close(), else once the handle is gone, or at exit
            cleanup = weakref.finalize(handle, _remove_tree, temporary)
        return cls(
            clock,
            store,
            queue,
            processes,
            model,
            handle,
            backend=backend,
            path=file,
            temporary=temporary is not None,
            _cleanup=cleanup,
        )

    @property
    def session_id(self) -> str:
        return self.handle.session_id

    @property
    def closed(self) -> bool:
        return self._closed

    def client(self, name: str = "client") -> SimulatedClient:
        return SimulatedClient(self.handle, name)

    def restart_store(self) -> None:
        """Simulate a server restart: the replay store closes and a new one takes its place
        behind the same runtime (open subscriptions end; clients resubscribe from their cursors).

        On SQLite the new store reopens the same file: positions continue, so an old cursor
        replays what it missed (the durable behaviour). In memory the new store is empty and
        numbers per instance (``instance_numbering=True``) from a base above every position the
        old one handed out, so an old cursor gets an ``unavailable`` gap, never a replay of the
        new store's positions."""
        old = self.store
        if isinstance(old, SqliteLiveReplayStore):
            old.close()
            self.store = SqliteLiveReplayStore(old.path, old.config, clock=old.clock)
        elif not isinstance(old, InMemoryLiveReplayStore):
            raise TypeError(
                f"restart_store() restarts the scenario's own store, not a {type(old).__name__}:"
                " restart its server instead"
            )
        else:
            tail = old.statistics(self.session_id).tail_position
            old.close()
            wall_ms = self.clock.ms() if self.clock is not None else round(time.time() * 1000)
            units = max(  # base units (ms) above every position the old store handed out
                wall_ms,
                (old.position_base >> POSITION_BASE_SHIFT) + 1,
                (max(tail, old.statistics().forgotten_floor) >> POSITION_BASE_SHIFT) + 1,
            )
            self.store = InMemoryLiveReplayStore(
                old.config,
                clock=old.clock,
                instance_numbering=True,
                wall_clock=lambda: units / 1000,
            )
        self.handle._shared.store = self.store

    def close(self) -> None:
        """Close the stores (idempotent; later calls on them raise their typed errors) and
        remove the scenario's temporary file, if it has one. The runtime's in-memory state stays."""
        if self._closed:
            return
        self._closed = True
        _close_all([self.store, self.queue, self.processes])
        if self._cleanup is not None:
            self._cleanup()

    async def __aenter__(self) -> Scenario:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def _close_all(stores: Iterable[Any]) -> None:
    """Close each store that can be closed; the first failure is raised after all were tried."""
    failure: BaseException | None = None
    for store in stores:
        close = getattr(store, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception as err:  # noqa: PERF203 - each store gets its chance
            failure = failure or err
    if failure is not None:
        raise failure


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
