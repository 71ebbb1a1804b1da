"""``LashRuntime``: an in-memory session plus the asyncio driver around the turn machine.

Rules (read these before the code):

* One turn at a time: ``run_turn``, ``drain_queued_work`` and the queue worker serialise on the
  runtime's own lock (a ``RuntimeHandle`` writer lock on top is fine).
* Activities go to ``sink.record_turn_activity`` the moment the machine emits them. After a commit
  the runtime calls ``sink.publish_from(self)`` exactly once.
* Commit: append the turn's messages to the read view, add its usage, advance ``turn_index``
  (the revision: ``head_revision`` stays ``None`` in memory), then complete the turn's queued-work
  claims, then publish. A completion the store refuses (lease lost) is logged, not raised: the turn
  is already committed and the other holder will run that work again (at-least-once).
* A model failure is not a runtime failure: it records ``TurnError`` and commits the turn with
  status ``provider_error`` (lash does the same), so ``run_turn`` returns normally.
* A runtime failure (broken tool catalog, store error, an exception from the sink, cancellation)
  commits nothing, abandons the turn's claims so their batches can be claimed again, and raises
  (``LashRuntimeError`` for the first two).
* Leases: while a turn holds queued-work claims (its idle claim, and any joined at checkpoints) a
  heartbeat task renews each one every ``renew_interval_ms`` (default: a third of the lease; see
  ``_lease.py``). A renewal the store refuses means another worker owns that work now: the turn
  stops at once (its body is cancelled), commits nothing (its in-flight model output and tool
  results are dropped, because the new holder runs the same input again), never completes or
  abandons the lost claim, abandons the claims it still holds, records ``TurnError`` (the claim id,
  its batch ids, the store's reason), logs a warning, and raises ``LashRuntimeError``
  (``store_commit_failed``, caused by the store's ``QueuedWorkClaimExpired``). A renewal that
  merely fails (store down) is retried at the next tick. A loss the heartbeat has not seen yet when
  the turn commits shows up as a refused completion (the at-least-once rule above).
* Queued work joins at the idle boundary (``drain_queued_work``: one turn per claim, first activity
  ``QueuedWorkStarted(idle)``) or at a checkpoint inside a turn (only ``earliest_safe_boundary``
  work is eligible there, per the store's claim rules).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol, runtime_checkable

from .._cursor import SessionRevision
from .._errors import LashRuntimeError, RuntimeErrorCode, store_commit_failed
from .._events import TokenUsage, TurnActivity, TurnError
from .._ids import new_id as _new_uuid
from .._ids import new_short_id
from .._input import TurnInput
from .._json import error_message, short_repr
from .._processes import (
    PROCESS_REGISTRY_ASYNC_METHODS,
    PROCESS_REGISTRY_SYNC_METHODS,
    ProcessRegistry,
)
from .._queue import QUEUED_WORK_STORE_METHODS, QueuedWorkStore
from .._validate import is_uint, is_utf8_str
from ._lease import ClaimHeartbeat, ClaimLost, ClaimLostSignal
from ._machine import (
    MAX_PROTOCOL_ITERATIONS,
    MODEL_CHUNK_TYPES,
    AbortTurn,
    CallTool,
    Checkpoint,
    CheckpointResolved,
    CommitTurn,
    Emit,
    FailTurn,
    ModelError,
    ModelResponseEnded,
    RequestModel,
    StartTurn,
    ToolResult,
    TurnMachine,
    TurnOutput,
    TurnState,
)
from ._model import ModelProvider, ModelRequest
from ._poke import QueuedWorkPoke
from ._state import (
    ChatMessage,
    OpenAgentFrameResult,
    RuntimeSessionState,
    SessionPolicy,
    SessionReadView,
    SessionUsageReport,
    ToolState,
    TurnOutcome,
    TurnUsageEntry,
    default_agent_frame_id,
)
from ._tools import ToolFunction, ToolRegistry

__all__ = [
    "LashRuntime",
    "LashRuntimeBuilder",
    "ObservationSink",
    "QUEUED_WORK_CLAIM_TTL_MS",
    "QUEUED_WORK_RENEWALS_PER_LEASE",
    "QUEUED_WORK_MAX_BATCHES",
    "QUEUED_WORK_POLL_INTERVAL",
]

logger = logging.getLogger("lash_core.runtime")

#: Lease on claimed queued work (lash: 15 minutes). Longer than any turn, so a live turn never
#: loses its work; short enough that work of a crashed runtime is retried the same hour.
QUEUED_WORK_CLAIM_TTL_MS = 15 * 60 * 1000
#: A running turn renews its claims this many times per lease (every ``ttl / 3``): two renewals
#: in a row may fail (a store blip) and the lease is still live at the third.
QUEUED_WORK_RENEWALS_PER_LEASE = 3
#: Batches one claim may gather (lash: 64); a burst of joinable input becomes one turn, not 64.
QUEUED_WORK_MAX_BATCHES = 64
#: How often the queue worker looks for work without a poke (lash: 400 ms): the recovery path for
#: work that was already queued, became available later, or whose poke was missed.
QUEUED_WORK_POLL_INTERVAL = 0.4

_QUEUE_STORE_REQUIRED = "queued turn input requires a persistent runtime store"


@runtime_checkable
class ObservationSink(Protocol):
    """Where a turn reports: live activities as they happen, and the committed runtime."""

    def record_turn_activity(self, activity: TurnActivity) -> None: ...

    def publish_from(self, runtime: LashRuntime) -> None: ...


class _NullSink:
    def record_turn_activity(self, activity: TurnActivity) -> None:
        pass

    def publish_from(self, runtime: LashRuntime) -> None:
        pass


_NULL_SINK = _NullSink()


class LashRuntimeBuilder:
    """Fluent configuration for ``LashRuntime``; ``await builder.build()``."""

    def __init__(self) -> None:
        self._session_id: str | None = None
        self._policy = SessionPolicy()
        self._model: ModelProvider | None = None
        self._tools: list[tuple[str, ToolFunction, str | None, Any]] = []
        self._queue_store: Any = None
        self._process_registry: Any = None
        self._owner_id: str | None = None
        self._poke: QueuedWorkPoke | None = None
        self._new_id: Callable[[], str] | None = None
        self._claim_ttl_ms: Any = QUEUED_WORK_CLAIM_TTL_MS
        self._renew_interval_ms: Any = None
        self._sleep: Any = None

    def with_session_id(self, session_id: str) -> LashRuntimeBuilder:
        self._session_id = session_id
        return self

    def with_policy(self, policy: SessionPolicy) -> LashRuntimeBuilder:
        self._policy = policy
        return self

    def with_model(self, provider: ModelProvider) -> LashRuntimeBuilder:
        self._model = provider
        return self

    def with_tool(
        self, name: str, fn: ToolFunction, *, description: str | None = None, schema: Any = None
    ) -> LashRuntimeBuilder:
        self._tools.append((name, fn, description, schema))
        return self

    def with_queue_store(self, store: QueuedWorkStore) -> LashRuntimeBuilder:
        """Durable queued work; every ``QueuedWorkStore`` method must be ``async def`` (checked by
        ``build``)."""
        self._queue_store = store
        return self

    def with_process_registry(self, registry: ProcessRegistry) -> LashRuntimeBuilder:
        """Processes and handle grants: a ``ProcessRegistry`` whose listings are ``async def`` and
        whose other methods are plain (checked by ``build``)."""
        self._process_registry = registry
        return self

    def with_owner_id(self, owner_id: str) -> LashRuntimeBuilder:
        self._owner_id = owner_id
        return self

    def with_queued_work_poke(self, poke: QueuedWorkPoke) -> LashRuntimeBuilder:
        """Share a poke (by default a runtime with a queue store makes its own)."""
        self._poke = poke
        return self

    def with_id_factory(self, new_id: Callable[[], str]) -> LashRuntimeBuilder:
        """Activity and correlation ids (default: uuid4 strings); for reproducible logs."""
        self._new_id = new_id
        return self

    def with_queued_work_lease(
        self, ttl_ms: int, *, renew_interval_ms: int | None = None
    ) -> LashRuntimeBuilder:
        """The lease on claimed queued work, in milliseconds of the store's clock (default
        ``QUEUED_WORK_CLAIM_TTL_MS``, 15 minutes), and how often a running turn renews it, in
        milliseconds (default ``ttl_ms // 3``). ``build`` raises ``LashRuntimeError``
        (``invalid_configuration``) unless ``ttl_ms`` is an int in ``1..2**64-1`` and the interval
        an int in ``1..ttl_ms-1`` (a lease renewed no sooner than it runs out protects nothing)."""
        self._claim_ttl_ms = ttl_ms
        self._renew_interval_ms = renew_interval_ms
        return self

    def with_sleep(self, sleep: Callable[[float], Awaitable[Any]]) -> LashRuntimeBuilder:
        """How the lease heartbeat waits between renewals: ``await sleep(seconds)`` (default
        ``asyncio.sleep``). Tests pass a fake timer's ``sleep`` to drive renewals by hand."""
        self._sleep = sleep
        return self

    async def build(self) -> LashRuntime:
        def invalid(message: str) -> LashRuntimeError:
            return LashRuntimeError(RuntimeErrorCode.INVALID_CONFIGURATION, message)

        session_id = self._session_id if self._session_id is not None else new_short_id("session")
        if not is_utf8_str(session_id) or not session_id:
            raise invalid(
                f"session id must be a non-empty UTF-8 string, not {short_repr(session_id)}"
            )
        if not isinstance(self._policy, SessionPolicy):
            raise invalid(f"policy must be a SessionPolicy, not {type(self._policy).__name__}")
        if self._model is not None and not callable(getattr(self._model, "stream", None)):
            raise invalid("a model provider needs a `stream(request)` method")
        owner_id = self._owner_id if self._owner_id is not None else new_short_id("lash-runtime")
        if not is_utf8_str(owner_id) or not owner_id:
            raise invalid(f"owner id must be a non-empty UTF-8 string, not {short_repr(owner_id)}")
        if self._queue_store is not None:
            _check_queue_store(self._queue_store, invalid)
        if self._process_registry is not None:
            _check_process_registry(self._process_registry, invalid)
        ttl_ms = self._claim_ttl_ms
        if not is_uint(ttl_ms) or ttl_ms < 1:
            raise invalid(
                f"queued work lease must be an int of milliseconds in 1..2**64-1, not {short_repr(ttl_ms)}"
            )
        interval_ms = self._renew_interval_ms
        if interval_ms is None:
            interval_ms = max(1, ttl_ms // QUEUED_WORK_RENEWALS_PER_LEASE)
        if not is_uint(interval_ms) or not 1 <= interval_ms < ttl_ms:
            raise invalid(
                "lease renew interval must be an int of milliseconds in 1..ttl_ms-1 "
                f"(ttl_ms={ttl_ms}), not {short_repr(interval_ms)}"
            )
        if self._sleep is not None and not callable(self._sleep):
            raise invalid(f"sleep must be a callable, not {short_repr(self._sleep)}")
        registry = ToolRegistry()
        for name, fn, description, schema in self._tools:
            registry.register(name, fn, description=description, schema=schema)
        poke = self._poke
        if poke is None and self._queue_store is not None:
            poke = QueuedWorkPoke()
        return LashRuntime(
            session_id=session_id,
            policy=self._policy,
            model=self._model,
            tools=registry,
            queue_store=self._queue_store,
            process_registry=self._process_registry,
            owner_id=owner_id,
            queued_work_poke=poke,
            new_id=self._new_id,
            claim_ttl_ms=ttl_ms,
            renew_interval_ms=interval_ms,
            sleep=self._sleep,
        )


def _check_queue_store(store: Any, invalid: Callable[[str], LashRuntimeError]) -> None:
    """Every ``QueuedWorkStore`` method is a coroutine function: the runtime awaits each call."""
    kind = type(store).__name__
    for name in QUEUED_WORK_STORE_METHODS:
        method = getattr(store, name, None)
        if method is None:
            raise invalid(f"queue store {kind} has no `{name}` method (see QueuedWorkStore)")
        if not inspect.iscoroutinefunction(method):
            raise invalid(
                f"queue store method {kind}.{name} must be a coroutine function (`async def`):"
                " every QueuedWorkStore method is awaited"
            )


def _check_process_registry(registry: Any, invalid: Callable[[str], LashRuntimeError]) -> None:
    """A ``ProcessRegistry``: async listings, plain (synchronous) mutations and ``get_process``."""
    kind = type(registry).__name__
    if not isinstance(registry, ProcessRegistry):
        missing = [
            name
            for name in (*PROCESS_REGISTRY_ASYNC_METHODS, *PROCESS_REGISTRY_SYNC_METHODS)
            if not callable(getattr(registry, name, None))
        ]
        raise invalid(
            f"process registry {kind} is not a ProcessRegistry (missing: {', '.join(missing)})"
        )
    for name in PROCESS_REGISTRY_ASYNC_METHODS:
        if not inspect.iscoroutinefunction(getattr(registry, name)):
            raise invalid(
                f"process registry method {kind}.{name} must be a coroutine function (`async def`)"
            )
    for name in PROCESS_REGISTRY_SYNC_METHODS:
        if inspect.iscoroutinefunction(getattr(registry, name)):
            raise invalid(
                f"process registry method {kind}.{name} must be a plain method, not `async def`:"
                " the handle calls it synchronously"
            )


class LashRuntime:
    """One session in memory, with the turn driver. Build with ``LashRuntime.builder()``."""

    def __init__(
        self,
        *,
        session_id: str,
        policy: SessionPolicy,
        model: ModelProvider | None,
        tools: ToolRegistry,
        queue_store: Any,
        process_registry: Any,
        owner_id: str,
        queued_work_poke: QueuedWorkPoke | None,
        new_id: Callable[[], str] | None = None,
        claim_ttl_ms: int = QUEUED_WORK_CLAIM_TTL_MS,
        renew_interval_ms: int | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        self._session_id = session_id
        self._policy = policy
        self._model = model
        self._tools = tools
        self.queue_store = queue_store
        self.process_registry = process_registry
        self.queued_work_poke = queued_work_poke
        self._owner_id = owner_id
        self._new_id = new_id
        self._turn_index = 0
        self._messages: tuple[ChatMessage, ...] = ()
        self._usage = TokenUsage()
        self._usage_entries: list[TurnUsageEntry] = []
        self._requests = 0
        initial_frame = default_agent_frame_id(session_id)
        self._agent_frames: list[str] = [initial_frame]
        self._current_agent_frame_id = initial_frame
        self._turn_lock = asyncio.Lock()
        self._clock: Callable[[], float] = time.monotonic
        self._claim_ttl_ms = claim_ttl_ms
        self._renew_interval_ms = (
            renew_interval_ms
            if renew_interval_ms is not None
            else max(1, claim_ttl_ms // QUEUED_WORK_RENEWALS_PER_LEASE)
        )
        self._sleep: Callable[[float], Awaitable[Any]] = sleep if sleep is not None else asyncio.sleep

    @staticmethod
    def builder() -> LashRuntimeBuilder:
        return LashRuntimeBuilder()

    # -- what observation reads ----------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def policy(self) -> SessionPolicy:
        return self._policy

    @property
    def owner_id(self) -> str:
        return self._owner_id

    @property
    def model(self) -> ModelProvider | None:
        return self._model

    @property
    def turn_index(self) -> int:
        return self._turn_index

    @property
    def revision(self) -> SessionRevision:
        return self.export_persisted_state().revision

    @property
    def turn_running(self) -> bool:
        return self._turn_lock.locked()

    @property
    def queued_work_lease_ms(self) -> int:
        """The lease asked for when claiming or renewing queued work (milliseconds)."""
        return self._claim_ttl_ms

    @property
    def queued_work_renew_interval_ms(self) -> int:
        """How often a running turn renews its claims (milliseconds)."""
        return self._renew_interval_ms

    def export_persisted_state(self) -> RuntimeSessionState:
        return RuntimeSessionState(
            session_id=self._session_id,
            head_revision=None,
            turn_index=self._turn_index,
            agent_frames=tuple(self._agent_frames),
            current_agent_frame_id=self._current_agent_frame_id,
            policy=self._policy,
            token_usage=self._usage,
        )

    def read_view(self) -> SessionReadView:
        return SessionReadView(
            session_id=self._session_id,
            turn_index=self._turn_index,
            messages=self._messages,
            usage=self._usage,
            policy=self._policy,
            current_agent_frame_id=self._current_agent_frame_id,
        )

    def usage_report(self) -> SessionUsageReport:
        return SessionUsageReport(self._usage, tuple(self._usage_entries), self._requests)

    def tool_registry_generation(self) -> int | None:
        """The registry's generation (never ``None`` here: an in-memory runtime always has one)."""
        return self._tools.generation

    def tool_state(self) -> ToolState:
        return self._tools.state()

    def active_tool_catalog(self) -> tuple[dict[str, Any], ...]:
        """The tools offered to the model; raises ``LashRuntimeError`` when a schema is broken."""
        return self._tools.catalog()

    # -- changes the caller publishes ----------------------------------------------------------------

    def register_tool(
        self,
        name: str,
        fn: ToolFunction,
        *,
        description: str | None = None,
        schema: Any = None,
        replace: bool = False,
    ) -> None:
        self._tools.register(name, fn, description=description, schema=schema, replace=replace)

    def unregister_tool(self, name: str) -> bool:
        return self._tools.unregister(name)

    def open_agent_frame(self, frame_id: str) -> OpenAgentFrameResult:
        """Make ``frame_id`` current (recording it in ``agent_frames``); the caller publishes.
        A blank id or the current one changes nothing (``opened=False``)."""
        if not isinstance(frame_id, str):
            raise TypeError(f"frame id must be a str, not {type(frame_id).__name__}")
        if not is_utf8_str(frame_id):
            raise LashRuntimeError(
                RuntimeErrorCode.INVALID_INPUT, f"frame id is not valid UTF-8: {short_repr(frame_id)}"
            )
        if not frame_id.strip() or frame_id == self._current_agent_frame_id:
            return OpenAgentFrameResult(self._current_agent_frame_id, False)
        if frame_id not in self._agent_frames:
            self._agent_frames.append(frame_id)
        self._current_agent_frame_id = frame_id
        return OpenAgentFrameResult(frame_id, True)

    # -- turns ---------------------------------------------------------------------------------------

    async def run_turn(
        self, inputs: Sequence[TurnInput | str] | TurnInput | str, *, sink: ObservationSink | None = None
    ) -> TurnOutcome:
        """Run one turn to its commit and return the outcome (see the module rules for failures)."""
        items = self._coerce_inputs(inputs)
        async with self._turn_lock:
            return await self._drive_turn(items, sink or _NULL_SINK, None)

    async def drain_queued_work(
        self, *, sink: ObservationSink | None = None, max_turns: int | None = None
    ) -> int:
        """Claim ready work at the idle boundary and run one turn per claim until none is ready
        (or ``max_turns`` ran); returns how many turns ran. A failing turn's claim is abandoned
        and its error raised."""
        store = self._require_queue_store()
        self._require_model()
        sink = sink or _NULL_SINK
        ran = 0
        while max_turns is None or ran < max_turns:
            async with self._turn_lock:
                claim = await self._claim(store, "idle")
                if claim is None:
                    break
                inputs = tuple(payload for batch in claim.batches for payload in batch.payloads)
                await self._drive_turn(inputs, sink, claim)
            ran += 1
        return ran

    async def run_queue_worker(
        self,
        sink: ObservationSink | None = None,
        *,
        stop_event: asyncio.Event | None = None,
        poll_interval: float | None = QUEUED_WORK_POLL_INTERVAL,
        drain: Callable[[], Awaitable[int]] | None = None,
    ) -> int:
        """Drain now, then again on every poke (and every ``poll_interval`` seconds, ``None`` for
        pokes only) until ``stop_event`` is set or the task is cancelled; returns turns run.
        Errors of one drain are logged and the worker carries on. ``drain`` replaces the default
        ``drain_queued_work(sink=sink)`` (a RuntimeHandle passes one that takes its writer lock)."""
        self._require_queue_store()
        self._require_model()
        poke = self.queued_work_poke
        if poke is None:
            poke = self.queued_work_poke = QueuedWorkPoke()
        total = 0
        while stop_event is None or not stop_event.is_set():
            try:
                total += await (drain() if drain is not None else self.drain_queued_work(sink=sink))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("queued work drain failed (session_id=%s)", self._session_id, exc_info=True)
            if stop_event is not None and stop_event.is_set():
                break
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(poke.wait())]
            if stop_event is not None:
                waiters.append(asyncio.ensure_future(stop_event.wait()))
            try:
                await asyncio.wait(waiters, timeout=poll_interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        return total

    # -- the driver ----------------------------------------------------------------------------------

    @staticmethod
    def _coerce_inputs(inputs: Any) -> tuple[TurnInput, ...]:
        if isinstance(inputs, (str, TurnInput)):
            inputs = [inputs]
        items = tuple(TurnInput.text(item) if isinstance(item, str) else item for item in inputs)
        for item in items:
            if not isinstance(item, TurnInput):
                raise LashRuntimeError(
                    RuntimeErrorCode.INVALID_INPUT, f"turn input must be TurnInput or str, not {type(item).__name__}"
                )
        if not items:
            raise LashRuntimeError(RuntimeErrorCode.INVALID_INPUT, "a turn needs at least one input")
        return items

    def _require_queue_store(self) -> Any:
        if self.queue_store is None:
            raise LashRuntimeError(RuntimeErrorCode.STORE_COMMIT_FAILED, _QUEUE_STORE_REQUIRED)
        return self.queue_store

    def _require_model(self) -> ModelProvider:
        if self._model is None:
            raise LashRuntimeError(
                RuntimeErrorCode.INVALID_CONFIGURATION,
                "no model provider configured; use .with_model(ScriptedModel.from_replies([...]))",
            )
        return self._model

    async def _claim(self, store: Any, boundary: str) -> Any:
        from .._queue import QueuedWorkClaimBoundary

        try:
            return await store.claim_ready_queued_work(
                self._session_id,
                self._owner_id,
                QueuedWorkClaimBoundary(boundary),
                self._claim_ttl_ms,
                QUEUED_WORK_MAX_BATCHES,
            )
        except Exception as err:
            raise store_commit_failed(err) from err

    async def _abandon(self, claims: list[Any]) -> None:
        for claim in claims:
            try:
                await self.queue_store.abandon_queued_work_claim(claim)
            except Exception:
                logger.warning(
                    "failed to abandon queued work claim %s (session_id=%s)",
                    getattr(claim, "claim_id", "?"),
                    self._session_id,
                    exc_info=True,
                )

    async def _complete(self, claims: list[Any]) -> None:
        for claim in claims:
            try:
                await self.queue_store.complete_queued_work(claim.completion())
            except Exception:
                logger.warning(
                    "committed turn could not complete queued work claim %s; another holder may "
                    "run it again (session_id=%s)",
                    getattr(claim, "claim_id", "?"),
                    self._session_id,
                    exc_info=True,
                )

    def _heartbeat(self) -> ClaimHeartbeat:
        return ClaimHeartbeat(
            self.queue_store,
            session_id=self._session_id,
            ttl_ms=self._claim_ttl_ms,
            interval_s=self._renew_interval_ms / 1000,
            sleep=self._sleep,
        )

    async def _drive_turn(
        self, inputs: tuple[TurnInput, ...], sink: ObservationSink, idle_claim: Any
    ) -> TurnOutcome:
        heartbeat = self._heartbeat()
        if idle_claim is not None:
            heartbeat.hold(idle_claim)
        try:
            commit = await heartbeat.guard(self._run_machine(inputs, sink, idle_claim, heartbeat))
            await heartbeat.stop()
            if heartbeat.lost is not None:  # seen while the body was finishing
                raise ClaimLostSignal(heartbeat.lost)
        except ClaimLostSignal as signal:
            await heartbeat.stop()
            await self._claim_lost(signal.lost, heartbeat.claims, sink)
        except BaseException:
            await heartbeat.stop()
            await self._abandon(heartbeat.claims)
            raise
        outcome = self._apply_commit(commit)
        await self._complete(heartbeat.claims)
        sink.publish_from(self)
        return outcome

    async def _run_machine(
        self,
        inputs: tuple[TurnInput, ...],
        sink: ObservationSink,
        idle_claim: Any,
        heartbeat: ClaimHeartbeat,
    ) -> CommitTurn:
        """The turn body: drive the machine to its ``CommitTurn`` (raises on ``FailTurn``)."""
        model = self._require_model()
        max_iterations = self._policy.max_turns or MAX_PROTOCOL_ITERATIONS
        kwargs = {"new_id": self._new_id} if self._new_id is not None else {}
        machine = TurnMachine(
            history=self._messages,
            session_usage=self._usage,
            max_protocol_iterations=max_iterations,
            **kwargs,
        )
        requests: deque[TurnOutput] = deque()

        def dispatch(outputs: list[TurnOutput]) -> None:
            for output in outputs:
                if isinstance(output, Emit):
                    sink.record_turn_activity(output.activity)
                else:
                    requests.append(output)

        batch_ids = tuple(idle_claim.batch_ids) if idle_claim is not None else ()
        dispatch(machine.send(StartTurn(inputs, batch_ids)))
        while True:
            request = requests.popleft()
            if isinstance(request, RequestModel):
                await self._stream_model(model, machine, request, dispatch)
            elif isinstance(request, CallTool):
                started = self._clock()
                output = await self._tools.invoke(request.name, request.args)
                duration_ms = max(0, int((self._clock() - started) * 1000))
                dispatch(machine.send(ToolResult(request.call_id, output, duration_ms)))
            elif isinstance(request, Checkpoint):
                dispatch(machine.send(await self._checkpoint(machine, heartbeat)))
            elif isinstance(request, FailTurn):
                raise LashRuntimeError(request.code, request.message)
            elif isinstance(request, CommitTurn):
                return request
            else:  # pragma: no cover - the machine only emits the types above
                raise AssertionError(f"unexpected turn output {request!r}")

    async def _claim_lost(
        self, lost: ClaimLost, held: list[Any], sink: ObservationSink
    ) -> NoReturn:
        """The turn no longer owns ``lost``: say so (log, stream), hand back what it still holds,
        and fail the turn. The lost claim is neither completed nor abandoned: it is not ours."""
        logger.warning(
            "lost queued work claim %s (session_id=%s): %s; the turn stops without a commit",
            lost.claim_id,
            self._session_id,
            lost.reason,
        )
        new_id = self._new_id or _new_uuid
        try:
            sink.record_turn_activity(
                TurnActivity(id=new_id(), correlation_id=new_id(), event=TurnError(lost.message))
            )
        finally:
            await self._abandon(held)
        raise LashRuntimeError(RuntimeErrorCode.STORE_COMMIT_FAILED, lost.message) from lost.error

    async def _stream_model(
        self,
        model: ModelProvider,
        machine: TurnMachine,
        request: RequestModel,
        dispatch: Callable[[list[TurnOutput]], None],
    ) -> None:
        try:
            tools = self.active_tool_catalog()
        except LashRuntimeError as err:
            dispatch(machine.send(AbortTurn(err.code, err.message)))
            return
        model_request = ModelRequest(
            session_id=self._session_id,
            model=self._policy.model,
            protocol_iteration=request.protocol_iteration,
            messages=request.messages,
            tools=tools,
        )
        stream: Any = None
        try:
            try:
                stream = model.stream(model_request)
                iterator = aiter(stream)
            except Exception as err:
                dispatch(machine.send(ModelError(error_message(err, with_type=False))))
                return
            while machine.state is TurnState.AWAITING_MODEL:
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    dispatch(machine.send(ModelResponseEnded()))
                    return
                except Exception as err:  # the provider failed: data for the turn, not a crash
                    dispatch(machine.send(ModelError(error_message(err, with_type=False))))
                    return
                if not isinstance(chunk, MODEL_CHUNK_TYPES):
                    dispatch(
                        machine.send(ModelError(f"model provider yielded {type(chunk).__name__}, not a model chunk"))
                    )
                    return
                dispatch(machine.send(chunk))  # type: ignore[arg-type]  # a model chunk, checked above
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.debug("model stream did not close cleanly", exc_info=True)

    async def _checkpoint(self, machine: TurnMachine, heartbeat: ClaimHeartbeat) -> Any:
        if self.queue_store is None:
            return CheckpointResolved()
        try:
            claim = await self._claim(self.queue_store, "active_turn_checkpoint")
        except LashRuntimeError as err:
            return AbortTurn(err.code, err.message)
        if claim is None:
            return CheckpointResolved()
        heartbeat.hold(claim)
        inputs = tuple(payload for batch in claim.batches for payload in batch.payloads)
        return CheckpointResolved(inputs, tuple(claim.batch_ids))

    def _apply_commit(self, commit: CommitTurn) -> TurnOutcome:
        self._messages = self._messages + commit.messages
        self._turn_index += 1
        self._usage = self._usage + commit.usage
        self._requests += commit.requests
        self._usage_entries.append(TurnUsageEntry(self._turn_index, commit.usage, commit.requests))
        return TurnOutcome(
            status=commit.status,
            text=commit.text,
            tool_calls=commit.tool_calls,
            usage=commit.usage,
            revision=self.revision,
            turn_index=self._turn_index,
            requests=commit.requests,
            error=commit.error,
            queued_batch_ids=commit.queued_batch_ids,
        )

    def __repr__(self) -> str:
        return (
            f"<LashRuntime session_id={self._session_id!r} turn_index={self._turn_index} "
            f"messages={len(self._messages)} tools={len(self._tools)}>"
        )
