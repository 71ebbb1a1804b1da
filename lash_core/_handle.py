"""RuntimeHandle: one writer, many lock-free readers, and the session's observation stream.

The handle owns the runtime behind an asyncio lock (``writer()``) and publishes an immutable
``RuntimeObservation`` after every commit. Readers call ``observe()``: a plain attribute read of
the latest snapshot, so it never waits for a writer. Every change is also appended to the live
replay store; a failing store is logged and never fails the runtime (the durable commit already
happened; clients recover through a gap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from ._cursor import SessionCursor, SessionRevision, as_cursor
from ._errors import (
    ForeignSessionError,
    InvalidObservationError,
    InvalidProcessError,
    InvalidQueuedWorkError,
    LashError,
    LashRuntimeError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    RuntimeErrorCode,
    store_commit_failed,
)
from ._events import (
    AgentFrameSwitched,
    Committed,
    EventPayload,
    ProcessChanged,
    QueueChanged,
    SessionObservationEvent,
    SessionProcessEventKind,
    SessionQueueEventKind,
    TurnActivity,
    TurnActivityPayload,
)
from ._gap import LiveReplayGap, LiveReplayGapReason, SessionObservation
from ._input import TurnInput
from ._json import error_message, short_repr
from ._processes import ProcessScope, ProcessScopeId, list_session_process_handles
from ._replay import Gap, InMemoryLiveReplayStore, LiveReplayStore, Replayed, Subscribed
from ._validate import is_utf8_str

if TYPE_CHECKING:
    from ._processes import ProcessHandleSummary, ProcessRecord, ProcessRegistry
    from ._queue import DeliveryPolicy, QueuedWorkBatch, QueuedWorkStore, SlotPolicy
    from ._runtime import (
        LashRuntime,
        OpenAgentFrameResult,
        QueuedWorkPoke,
        RuntimeSessionState,
        SessionPolicy,
        SessionReadView,
        SessionUsageReport,
        ToolState,
        TurnOutcome,
    )

__all__ = ["RuntimeObservation", "RuntimeHandle", "GapResume", "ObservedRuntime", "revision_of"]

logger = logging.getLogger("lash_core.observation")

_QUEUE_STORE_REQUIRED = "queued turn input requires a persistent runtime store"


def revision_of(state: RuntimeSessionState) -> SessionRevision:
    """A session's revision: its ``head_revision`` when persisted, else its ``turn_index``."""
    head = getattr(state, "head_revision", None)
    return SessionRevision(head if head is not None else state.turn_index)


@dataclasses.dataclass(frozen=True, slots=True)
class GapResume:
    """Replay from the cursor is impossible: here is why, and a fresh observation to reload."""

    gap: LiveReplayGap
    observation: SessionObservation


def gap_resume(
    session_id: str,
    requested: SessionCursor,
    reason: LiveReplayGapReason,
    fresh: SessionObservation,
    revision: SessionRevision,
) -> GapResume:
    """The ``GapResume`` a source answers for a store's gap (spec section 3): the gap from
    ``requested`` to the fresh observation's cursor, at ``revision``."""
    gap = LiveReplayGap(
        session_id=session_id,
        requested_cursor=requested,
        latest_cursor=fresh.cursor,
        latest_revision=revision,
        reason=reason,
    )
    return GapResume(gap, fresh)


@runtime_checkable
class ObservedRuntime(Protocol):
    """What a ``RuntimeHandle`` needs of a runtime (``LashRuntime`` is one): its session, the
    committed state to snapshot, and the operations the handle drives under its writer lock.
    ``process_registry``, ``queue_store`` and ``queued_work_poke`` may be absent (read as ``None``)."""

    @property
    def session_id(self) -> str: ...

    @property
    def policy(self) -> SessionPolicy: ...

    def export_persisted_state(self) -> RuntimeSessionState: ...

    def read_view(self) -> SessionReadView: ...

    def usage_report(self) -> SessionUsageReport: ...

    def tool_registry_generation(self) -> int | None: ...

    def tool_state(self) -> ToolState: ...

    def active_tool_catalog(self) -> tuple[dict[str, Any], ...]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeObservation:
    """An immutable snapshot of the runtime, published after each commit."""

    session_id: str
    revision: SessionRevision
    cursor: SessionCursor
    policy: SessionPolicy
    read_view: SessionReadView
    persisted_state: RuntimeSessionState
    usage_report: SessionUsageReport
    tool_state: ToolState | None
    #: what the model is offered: ``{"name", "description", "input_schema"}`` JSON objects
    tool_catalog: tuple[dict[str, Any], ...]
    tool_catalog_error: str | None
    process_registry: ProcessRegistry | None
    queue_store: QueuedWorkStore | None
    queued_work_poke: QueuedWorkPoke | None

    @classmethod
    def from_runtime(
        cls, runtime: ObservedRuntime, cursor: SessionCursor, previous: RuntimeObservation | None
    ) -> RuntimeObservation:
        try:
            tool_catalog, tool_catalog_error = tuple(runtime.active_tool_catalog()), None
        except Exception as err:  # a broken catalog must not hide the rest of the snapshot
            tool_catalog, tool_catalog_error = (), str(err)
        generation = runtime.tool_registry_generation()
        tool_state = None
        if generation is not None:
            previous_state = previous.tool_state if previous is not None else None
            if previous_state is not None and previous_state.generation == generation:
                tool_state = previous_state
            else:
                try:
                    tool_state = runtime.tool_state()
                except Exception as err:
                    logger.warning(
                        "failed to capture tool state for observation; omitting the snapshot "
                        "(session_id=%s, error=%s)",
                        runtime.session_id,
                        err,
                    )
        state = runtime.export_persisted_state()
        return cls(
            session_id=runtime.session_id,
            revision=revision_of(state),
            cursor=cursor,
            policy=runtime.policy,
            read_view=runtime.read_view(),
            persisted_state=state,
            usage_report=runtime.usage_report(),
            tool_state=tool_state,
            tool_catalog=tool_catalog,
            tool_catalog_error=tool_catalog_error,
            process_registry=getattr(runtime, "process_registry", None),
            queue_store=getattr(runtime, "queue_store", None),
            queued_work_poke=getattr(runtime, "queued_work_poke", None),
        )

    def session_observation(self) -> SessionObservation:
        return SessionObservation(self.read_view, self.cursor)

    def process_scope(self) -> ProcessScope:
        return ProcessScope(self.session_id)

    def process_scope_id(self) -> ProcessScopeId:
        return self.process_scope().id()

    async def list_process_handles(self) -> list[ProcessHandleSummary]:
        """Live grants of the root scope and of the current agent frame's scope."""
        return await list_session_process_handles(
            self.process_registry,
            self.session_id,
            self.persisted_state.current_agent_frame_id,
            live=True,
        )

    async def list_all_process_handles(self) -> list[ProcessHandleSummary]:
        return await list_session_process_handles(
            self.process_registry,
            self.session_id,
            self.persisted_state.current_agent_frame_id,
            live=False,
        )


def _store_cursor(
    store: LiveReplayStore, session_id: str, revision: SessionRevision
) -> SessionCursor | None:
    """``store.current_cursor``, or ``None`` (with a warning) when the store fails or answers
    with something that is not a cursor of this session."""
    try:
        cursor = store.current_cursor(session_id, revision)
        if not isinstance(cursor, SessionCursor):
            raise LiveReplayStoreFailure(
                f"current_cursor returned {type(cursor).__name__}, not a SessionCursor"
            )
        cursor.parse_for_session(session_id)
    except Exception as err:  # any failure: the caller falls back to the best cursor it knows
        logger.warning(
            "failed to read the live replay store's current cursor; using the last known one "
            "(session_id=%s, error=%r)",
            session_id,
            err,
        )
        return None
    return cursor


def _store_call(
    store: LiveReplayStore, method: str, cursor: SessionCursor, expected: tuple[type, ...]
) -> Any:
    """Call a store's read method; its own lash errors pass through, anything else (a driver
    error, a failing attribute, a wrong return type) becomes ``LiveReplayStoreFailure`` with the
    cause chained."""
    try:
        result = getattr(store, method)(cursor)
    except LashError:
        raise
    except Exception as err:
        raise LiveReplayStoreFailure(error_message(err, 300)) from err
    if not isinstance(result, expected):
        raise LiveReplayStoreFailure(
            f"the store answered {type(result).__name__}, not one of "
            f"{', '.join(t.__name__ for t in expected)}"
        )
    return result


class _Shared:
    """What clones of one handle share (Rust's Arcs)."""

    __slots__ = (
        "runtime", "lock", "observation", "store", "handles", "writers", "detached", "last_cursor"
    )

    def __init__(self, runtime: LashRuntime, store: LiveReplayStore, observation: RuntimeObservation):
        self.runtime = runtime
        #: the cursor of the last event this handle appended, or the store's tail when last asked:
        #: the best cursor available when the store cannot answer
        self.last_cursor = observation.cursor
        self.lock = asyncio.Lock()
        self.observation = observation
        self.store = store
        self.handles = 0
        self.writers = 0  # writer objects alive, entered or not (each is a reference, as in Rust)
        self.detached = False


def _release(shared: _Shared) -> None:
    shared.handles -= 1


class RuntimeHandle:
    """A shareable handle on one runtime. ``clone()`` gives another handle on the same runtime."""

    __slots__ = ("_shared", "_finalizer", "__weakref__")

    def __init__(
        self, runtime: LashRuntime, live_replay_store: LiveReplayStore | None = None
    ) -> None:
        """Raises ``LashRuntimeError`` (``invalid_configuration``) when the runtime's session id is
        not a non-empty UTF-8 string: every store and frontend would refuse it later, on each turn.
        A replay store that fails here is logged; the snapshot starts at position 0."""
        session_id = runtime.session_id
        if not is_utf8_str(session_id) or not session_id:
            raise LashRuntimeError(
                RuntimeErrorCode.INVALID_CONFIGURATION,
                f"session id must be a non-empty UTF-8 string, not {short_repr(session_id)}",
            )
        store = live_replay_store if live_replay_store is not None else InMemoryLiveReplayStore()
        revision = revision_of(runtime.export_persisted_state())
        cursor = _store_cursor(store, session_id, revision)
        if cursor is None:
            cursor = SessionCursor.new(session_id, revision, 0)
        observation = RuntimeObservation.from_runtime(runtime, cursor, None)
        self._attach(_Shared(runtime, store, observation))

    def _attach(self, shared: _Shared) -> None:
        self._shared = shared
        shared.handles += 1
        self._finalizer = weakref.finalize(self, _release, shared)

    def clone(self) -> RuntimeHandle:
        other = object.__new__(RuntimeHandle)
        other._attach(self._live())
        return other

    __copy__ = clone

    def __deepcopy__(self, memo: dict[int, Any]) -> RuntimeHandle:
        return self.clone()  # a handle is a reference: copies share the runtime

    def _live(self) -> _Shared:
        if self._shared.detached:
            raise LashRuntimeError(
                RuntimeErrorCode.INVALID_CONFIGURATION,
                "this handle gave its runtime back with try_into_runtime()",
            )
        return self._shared

    def __repr__(self) -> str:
        observation = self._shared.observation
        return (
            f"<RuntimeHandle session={observation.session_id!r} "
            f"revision={int(observation.revision)}>"
        )

    @property
    def session_id(self) -> str:
        return self._shared.observation.session_id

    @property
    def live_replay_store(self) -> LiveReplayStore:
        return self._shared.store

    # -- reading and writing -----------------------------------------------------------------------

    def writer(self) -> _Writer:
        """``async with handle.writer() as runtime:``; one writer at a time, readers unaffected."""
        return _Writer(self._live())

    def observe(self) -> RuntimeObservation:
        return self._shared.observation

    def try_into_runtime(self) -> LashRuntime | RuntimeHandle:
        """The runtime back when this is its only handle and nobody is writing; else ``self``."""
        shared = self._shared
        if shared.detached or shared.handles != 1 or shared.writers or shared.lock.locked():
            return self
        shared.detached = True
        self._finalizer.detach()
        shared.handles -= 1
        return shared.runtime

    # -- publishing --------------------------------------------------------------------------------

    def publish_from(self, runtime: ObservedRuntime) -> None:
        shared = self._live()
        state = runtime.export_persisted_state()
        revision = revision_of(state)
        previous = shared.observation
        session_id = runtime.session_id
        frame_id = state.current_agent_frame_id
        if frame_id and frame_id != previous.persisted_state.current_agent_frame_id:
            self._append_logged(
                session_id,
                revision,
                AgentFrameSwitched(frame_id),
                "failed to append agent-frame observation event; reconnect may require gap recovery",
            )
        event = self._append_logged(
            session_id,
            revision,
            Committed(runtime.read_view()),
            "failed to append session observation commit event; reconnect will fall back to gap recovery",
        )
        cursor = event.cursor if event is not None else self._best_cursor(session_id, revision)
        shared.observation = RuntimeObservation.from_runtime(runtime, cursor, previous)

    def record_turn_activity(self, activity: TurnActivity) -> None:
        """Append a turn activity. Raises ``InvalidObservationError`` for anything but a
        ``TurnActivity`` (before the store is touched); store failures are logged, never raised."""
        if not isinstance(activity, TurnActivity):
            raise InvalidObservationError(
                f"record_turn_activity takes a TurnActivity, not {type(activity).__name__}"
            )
        self._record(
            TurnActivityPayload(activity),
            "failed to append live turn activity to session observation replay; "
            "reconnect may require gap recovery",
        )

    def record_queue_changed(self, kind: SessionQueueEventKind, batch_ids: Sequence[str]) -> None:
        """Append ``queue_changed``. Raises ``InvalidObservationError`` for an unknown kind or a
        ``batch_ids`` that is not a list of id strings (a bare ``str`` included)."""
        self._record(
            QueueChanged(kind, batch_ids),  # type: ignore[arg-type]  # validated and made a tuple
            "failed to append queue observation event; reconnect may require gap recovery",
        )

    def record_process_changed(
        self, kind: SessionProcessEventKind, process_ids: Sequence[str]
    ) -> None:
        """Append ``process_changed``; validates like ``record_queue_changed``."""
        self._record(
            ProcessChanged(kind, process_ids),  # type: ignore[arg-type]  # validated, made a tuple
            "failed to append process observation event; reconnect may require gap recovery",
        )

    def _record(self, payload: EventPayload, warning: str) -> None:
        observation = self._live().observation
        self._append_logged(observation.session_id, observation.revision, payload, warning)

    def _append_logged(
        self, session_id: str, revision: SessionRevision, payload: EventPayload, warning: str
    ) -> SessionObservationEvent | None:
        shared = self._shared
        try:
            event = shared.store.append(session_id, revision, payload)
            if not isinstance(event, SessionObservationEvent) or not isinstance(
                event.cursor, SessionCursor
            ):
                raise LiveReplayStoreFailure(
                    f"append returned {type(event).__name__} without a SessionCursor, "
                    "not a SessionObservationEvent"
                )
        except LiveReplayStoreError as err:
            logger.warning("%s (session_id=%s, error=%s)", warning, session_id, err)
        except Exception as err:  # a pluggable store's own failure (network, disk, a bug)
            logger.warning("%s (session_id=%s, error=%r)", warning, session_id, err, exc_info=err)
        else:
            shared.last_cursor = event.cursor
            return event
        return None

    def _best_cursor(self, session_id: str, revision: SessionRevision) -> SessionCursor:
        """The store's tail cursor; when the store cannot answer, the last cursor this handle
        knows (its last append, or the tail it last read) at ``revision``. Never raises."""
        shared = self._shared
        cursor = _store_cursor(shared.store, session_id, revision)
        if cursor is not None:
            shared.last_cursor = cursor
            return cursor
        try:
            position = shared.last_cursor.parse().live_position
        except LiveReplayStoreError:
            position = 0
        return SessionCursor.new(session_id, revision, position)

    # -- resuming ----------------------------------------------------------------------------------

    def current_session_observation(self) -> SessionObservation:
        return self._fresh_observation(self._shared.observation)

    def resume_session_observation(self, cursor: SessionCursor | str) -> Replayed | GapResume:
        """Events after ``cursor``, or a gap plus a fresh observation.

        Raises ``MalformedCursorError`` / ``WrongSessionError`` before the store is touched.
        """
        cursor = as_cursor(cursor)
        observation = self._live().observation
        cursor.parse_for_session(observation.session_id)
        result = _store_call(self._shared.store, "replay_after_cursor", cursor, (Replayed, Gap))
        if isinstance(result, Gap):
            return self._gap_resume(cursor, result.reason, observation)
        replayed: Replayed = result
        return replayed

    def subscribe_session_observation(self, cursor: SessionCursor | str) -> Subscribed | GapResume:
        cursor = as_cursor(cursor)
        observation = self._live().observation
        cursor.parse_for_session(observation.session_id)
        result = _store_call(
            self._shared.store, "subscribe_after_cursor", cursor, (Subscribed, Gap)
        )
        if isinstance(result, Gap):
            return self._gap_resume(cursor, result.reason, observation)
        subscribed: Subscribed = result
        return subscribed

    def _fresh_observation(self, observation: RuntimeObservation) -> SessionObservation:
        cursor = self._best_cursor(observation.session_id, observation.revision)
        return SessionObservation(observation.read_view, cursor)

    def _gap_resume(
        self, requested: SessionCursor, reason: LiveReplayGapReason, observation: RuntimeObservation
    ) -> GapResume:
        fresh = self._fresh_observation(observation)
        return gap_resume(observation.session_id, requested, reason, fresh, observation.revision)

    # -- driving the runtime (each under the writer lock, publishing through this handle) ------------

    async def run_turn(self, inputs: Sequence[TurnInput | str] | TurnInput | str) -> TurnOutcome:
        """Run one turn on the runtime; its activities and commit are observed through this handle."""
        async with self.writer() as runtime:
            return await runtime.run_turn(inputs, sink=self)

    async def open_agent_frame(self, frame_id: str) -> OpenAgentFrameResult:
        """Switch the current agent frame and publish (``agent_frame_switched`` then ``committed``)."""
        async with self.writer() as runtime:
            result = runtime.open_agent_frame(frame_id)
            if result.opened:
                self.publish_from(runtime)
            return result

    async def drain_queued_work(self, *, max_turns: int | None = None) -> int:
        """Run ready queued work, one turn per claim, releasing the writer lock between turns,
        until none is ready or ``max_turns`` turns ran; returns how many ran."""
        ran = 0
        while max_turns is None or ran < max_turns:
            async with self.writer() as runtime:
                if not await runtime.drain_queued_work(sink=self, max_turns=1):
                    return ran
            ran += 1
        return ran

    async def run_queue_worker(
        self, *, stop_event: asyncio.Event | None = None, poll_interval: float | None = None
    ) -> int:
        """Drain on every enqueue poke until ``stop_event`` is set or the task is cancelled."""
        runtime = self._live().runtime
        kwargs: dict[str, Any] = {"stop_event": stop_event, "drain": self.drain_queued_work}
        if poll_interval is not None:
            kwargs["poll_interval"] = poll_interval
        return await runtime.run_queue_worker(self, **kwargs)

    # -- processes ---------------------------------------------------------------------------------

    def _check_own_session(self, session_id: Any) -> str:
        """``session_id`` as a plain ``str`` when it is this handle's own; else
        ``ForeignSessionError`` (``InvalidQueuedWorkError`` for a non-string). A ``str`` subclass is
        compared by its characters, never by its own ``__eq__``."""
        own = self._shared.observation.session_id
        if not isinstance(session_id, str):
            raise InvalidQueuedWorkError(f"session id must be a str, not {type(session_id).__name__}")
        plain = str.__str__(session_id)
        if plain != own:
            raise ForeignSessionError(own, plain)
        return plain

    def _process_registry(self) -> ProcessRegistry:
        registry = self._shared.observation.process_registry
        if registry is None:
            raise LashRuntimeError(
                RuntimeErrorCode.INVALID_CONFIGURATION, "this runtime has no process registry"
            )
        return registry

    def start_process(
        self, name: str, *, scope: ProcessScope | None = None
    ) -> ProcessHandleSummary:
        """Start a process in ``scope`` (default: the current agent frame's, else the session's)
        and record ``process_changed/started``. Raises ``InvalidProcessError`` for a name that is
        not a non-empty UTF-8 string or a scope that is not a ``ProcessScope``, and
        ``ForeignSessionError`` for another session's scope."""
        name = _process_text(name, "process name")
        if scope is not None and not isinstance(scope, ProcessScope):
            raise InvalidProcessError(f"scope must be a ProcessScope, not {type(scope).__name__}")
        observation = self._shared.observation
        if scope is None:
            frame_id = observation.persisted_state.current_agent_frame_id
            scope = (
                ProcessScope.for_agent_frame(observation.session_id, frame_id)
                if frame_id
                else observation.process_scope()
            )
        elif isinstance(scope, ProcessScope):
            self._check_own_session(scope.session_id)
        summary = self._process_registry().start_process(scope, name)
        self.record_process_changed(SessionProcessEventKind.STARTED, [summary.process_id])
        return summary

    def cancel_process(self, process_id: str) -> ProcessRecord:
        """Cancel a process; ``process_changed/cancelled`` is recorded only when it was running.

        Raises ``InvalidProcessError`` for an id that is not a non-empty UTF-8 string,
        ``UnknownProcessError`` for an unknown one, ``ForeignSessionError`` for a process owned by
        another session (nothing changes in any case)."""
        process_id = _process_text(process_id, "process id")
        registry = self._process_registry()
        before = registry.get_process(process_id)
        if before is not None:
            self._check_own_session(before.owner_scope.session_id)
        record = registry.cancel_process(process_id)
        if before is not None and not before.is_terminal and record.is_terminal:
            self.record_process_changed(SessionProcessEventKind.CANCELLED, [process_id])
        return record

    # -- queued work -------------------------------------------------------------------------------

    async def enqueue_turn_input(
        self,
        input: TurnInput | str,
        delivery_policy: DeliveryPolicy,
        slot_policy: SlotPolicy,
        source_key: str | None = None,
    ) -> QueuedWorkBatch:
        from ._queue import QueuedWorkBatchDraft

        observation = self._shared.observation
        store = observation.queue_store
        if store is None:
            raise LashRuntimeError(RuntimeErrorCode.STORE_COMMIT_FAILED, _QUEUE_STORE_REQUIRED)
        if not isinstance(input, TurnInput):
            input = TurnInput.text(input)
        draft = QueuedWorkBatchDraft(
            observation.session_id, delivery_policy, slot_policy, [input], source_key=source_key
        )
        try:
            batch = await store.enqueue_queued_work(draft)
        except InvalidQueuedWorkError:
            raise  # the caller's input, not the store, is at fault: keep the precise error
        except Exception as err:
            raise store_commit_failed(err) from err
        poke = observation.queued_work_poke
        if poke is not None:
            poke.poke_session(observation.session_id, "queued_turn_input")
        self.record_queue_changed(SessionQueueEventKind.ENQUEUED, [batch.batch_id])
        return batch

    async def cancel_queued_work_batch(
        self, session_id: str, batch_id: str
    ) -> QueuedWorkBatch | None:
        """The cancelled batch, or ``None`` when it is unknown or held by a live claim.

        Raises ``ForeignSessionError`` when ``session_id`` is not this handle's session and
        ``InvalidQueuedWorkError`` for a ``batch_id`` that is not a non-empty UTF-8 string: in both
        cases before the store is touched, so nothing is cancelled and nothing recorded."""
        observation = self._shared.observation
        session_id = self._check_own_session(session_id)
        if not is_utf8_str(batch_id) or not batch_id:
            raise InvalidQueuedWorkError(
                f"batch id must be a non-empty UTF-8 string, not {short_repr(batch_id)}"
            )
        store = observation.queue_store
        if store is None:
            raise LashRuntimeError(RuntimeErrorCode.STORE_COMMIT_FAILED, _QUEUE_STORE_REQUIRED)
        try:
            batch = await store.cancel_queued_work_batch(session_id, batch_id)
        except InvalidQueuedWorkError:
            raise
        except Exception as err:
            raise store_commit_failed(err) from err
        if batch is not None:
            self.record_queue_changed(SessionQueueEventKind.CANCELLED, [batch_id])
        return batch


def _process_text(value: Any, what: str) -> str:
    if not is_utf8_str(value) or not value:
        raise InvalidProcessError(f"{what} must be a non-empty UTF-8 string, not {short_repr(value)}")
    return str.__str__(value)


def _writer_gone(shared: _Shared) -> None:
    shared.writers -= 1


class _Writer:
    __slots__ = ("_shared", "__weakref__")

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        shared.writers += 1
        weakref.finalize(self, _writer_gone, shared)

    async def __aenter__(self) -> LashRuntime:
        if self._shared.detached:
            raise LashRuntimeError(
                RuntimeErrorCode.INVALID_CONFIGURATION,
                "this handle gave its runtime back with try_into_runtime()",
            )
        await self._shared.lock.acquire()
        return self._shared.runtime

    async def __aexit__(self, *exc_info: object) -> None:
        self._shared.lock.release()

    @property
    def locked(self) -> bool:
        return self._shared.lock.locked()


