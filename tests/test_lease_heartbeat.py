"""The lease heartbeat (issue 8, part 5): a running turn renews its queued-work claims, and a turn
whose claim the store refuses to renew stops without completing it.

Time is a ``FakeClock`` shared by the store (its lease verdicts) and a ``ManualTimer`` (the
heartbeat's ``sleep``): a test moves both by hand, so every renewal happens at a known instant.
The model and tools wait on events the test sets. Nothing depends on how fast the machine is:
``until`` waits for a condition (bounded), never for a duration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest

from lash_core._errors import (
    LashRuntimeError,
    QueuedWorkClaimExpired,
    QueuedWorkError,
    RuntimeErrorCode,
)
from lash_core._events import QueuedWorkStarted, TokenUsage, TurnError
from lash_core._input import TurnInput
from lash_core._queue import (
    DeliveryPolicy,
    InMemoryQueueStore,
    QueuedWorkBatchDraft,
    QueuedWorkClaimBoundary,
    SlotPolicy,
)
from lash_core._runtime import (
    QUEUED_WORK_CLAIM_TTL_MS,
    LashRuntime,
    ModelTextDelta,
    ModelToolCall,
    ModelUsage,
    ScriptedModel,
)
from lash_core._runtime._lease import HEARTBEAT_TASK_NAME, MAX_LOSS_BATCH_IDS, ClaimLost
from lash_core.stores.sqlite import SqliteQueueStore
from lash_core.testing import FakeClock

SID = "lease-1"
TTL_MS = 3_000  # renewed every 1_000 ms (a third)
TICK = 1.0  # seconds between renewals
IDLE = QueuedWorkClaimBoundary.IDLE
LOGGER = "lash_core.runtime"


# --- fakes ----------------------------------------------------------------------------------------


class ManualTimer:
    """A ``sleep`` that returns when ``advance`` moves the shared ``FakeClock`` past its deadline."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sleeps = 0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    @property
    def sleepers(self) -> int:
        return len(self._waiters)

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        entry = (self.clock.now + seconds, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        finally:
            self._waiters.remove(entry)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for deadline, future in list(self._waiters):
            if deadline <= self.clock.now and not future.done():
                future.set_result(None)


class SpyStore:
    """A ``QueuedWorkStore`` that records the runtime's calls and can fail renewals (store down)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        self.claims: list[Any] = []
        self.renew_down = False
        self.renewed: list[str] = []
        self.refused: list[str] = []
        self.failed: list[str] = []

    @property
    def completed(self) -> list[str]:
        return [claim_id for op, claim_id in self.calls if op == "complete"]

    @property
    def abandoned(self) -> list[str]:
        return [claim_id for op, claim_id in self.calls if op == "abandon"]

    async def enqueue_queued_work(self, draft):
        return await self.inner.enqueue_queued_work(draft)

    async def claim_ready_queued_work(self, *args):
        claim = await self.inner.claim_ready_queued_work(*args)
        if claim is not None:
            self.calls.append(("claim", claim.claim_id))
            self.claims.append(claim)
        return claim

    async def claim_ready_queued_work_by_batch_ids(self, *args):
        return await self.inner.claim_ready_queued_work_by_batch_ids(*args)

    async def renew_queued_work_claim(self, claim, lease_ttl_ms):
        self.calls.append(("renew", claim.claim_id))
        if self.renew_down:
            self.failed.append(claim.claim_id)
            raise QueuedWorkError("queue store unavailable")
        try:
            renewed = await self.inner.renew_queued_work_claim(claim, lease_ttl_ms)
        except QueuedWorkClaimExpired:
            self.refused.append(claim.claim_id)
            raise
        self.renewed.append(claim.claim_id)
        return renewed

    async def abandon_queued_work_claim(self, claim):
        self.calls.append(("abandon", claim.claim_id))
        await self.inner.abandon_queued_work_claim(claim)

    async def complete_queued_work(self, completion):
        self.calls.append(("complete", completion.claim_id))
        await self.inner.complete_queued_work(completion)

    async def cancel_queued_work_batch(self, session_id, batch_id):
        return await self.inner.cancel_queued_work_batch(session_id, batch_id)

    async def list_queued_work(self, session_id):
        return await self.inner.list_queued_work(session_id)

    async def list_pending_queued_work(self, session_id):
        return await self.inner.list_pending_queued_work(session_id)


class GatedModel:
    """Request ``n`` plays ``replies[n]``: a ``(tool, args)`` pair is a tool call; a string is an
    answer that streams a first delta, then waits for ``gate`` before the rest."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies) or ["done"]
        self.requests = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.cancelled = False

    async def stream(self, request):
        reply = self.replies[min(self.requests, len(self.replies) - 1)]
        self.requests += 1
        if isinstance(reply, tuple):
            yield ModelToolCall(f"call-{self.requests}", reply[0], reply[1])
            return
        self.started.set()
        yield ModelTextDelta("working: ")
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        yield ModelTextDelta(reply)
        yield ModelUsage(TokenUsage(input_tokens=5, output_tokens=2))


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.publishes = 0

    def record_turn_activity(self, activity) -> None:
        self.events.append(activity.event)

    def publish_from(self, runtime) -> None:
        self.publishes += 1


@dataclasses.dataclass
class Backend:
    """One queue backend on the fake clock; ``open()`` is another worker's view of the same queue."""

    kind: str
    clock: FakeClock
    open: Callable[[], Any]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    clock = FakeClock()
    opened: list[Any] = []

    def open_store() -> Any:
        if request.param == "memory":
            if not opened:
                opened.append(InMemoryQueueStore(clock_ms=clock.ms))
            return opened[0]  # every worker of one process shares the object
        store = SqliteQueueStore(tmp_path / "queue.sqlite3", clock_ms=clock.ms)
        opened.append(store)  # another connection to the same file
        return store

    yield Backend(request.param, clock, open_store)
    if request.param == "sqlite":
        for store in opened:
            store.close()


# --- helpers --------------------------------------------------------------------------------------


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for ``predicate`` (SQLite calls finish on a worker thread); bounded, never timed."""
    for attempt in range(5_000):
        if predicate():
            return
        await asyncio.sleep(0 if attempt < 50 else 0.001)
    raise AssertionError(f"timed out waiting for {what}")


async def finish(task: asyncio.Task[Any]) -> Any:
    """The task's result; a turn that never ends fails the test instead of hanging it."""
    return await asyncio.wait_for(task, 10)


def heartbeat_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(HEARTBEAT_TASK_NAME)]


async def build(store: Any, model: Any, timer: ManualTimer, *, owner: str = "worker-1", **tools) -> LashRuntime:
    builder = (
        LashRuntime.builder()
        .with_session_id(SID)
        .with_owner_id(owner)
        .with_model(model)
        .with_queue_store(store)
        .with_queued_work_lease(TTL_MS)
        .with_sleep(timer.sleep)
    )
    for name, fn in tools.items():
        builder = builder.with_tool(name, fn)
    return await builder.build()


def draft(text: str) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft(
        SID, DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN, [TurnInput.text(text)]
    )


async def start_drain(rt: LashRuntime, model: GatedModel, timer: ManualTimer, sink: RecordingSink):
    """Start draining; return once the turn streams and the heartbeat waits for its first tick."""
    drain = asyncio.create_task(rt.drain_queued_work(sink=sink))
    await until(lambda: model.started.is_set() and timer.sleepers == 1, "the turn and its heartbeat")
    return drain


async def tick(timer: ManualTimer, seconds: float = TICK) -> None:
    """Move time; wait until the heartbeat has renewed and gone back to sleep."""
    sleeps = timer.sleeps
    timer.advance(seconds)
    await until(lambda: timer.sleeps > sleeps and timer.sleepers == 1, "the heartbeat's next sleep")


# --- renewal keeps a long turn's work ---------------------------------------------------------------


async def test_a_turn_longer_than_its_lease_keeps_its_claim(backend):
    store = SpyStore(backend.open())
    timer = ManualTimer(backend.clock)
    model = GatedModel("all done")
    rt = await build(store, model, timer)
    other = await build(backend.open(), ScriptedModel.from_replies(["stolen"]), timer, owner="worker-2")
    batch = await store.enqueue_queued_work(draft("a long job"))
    sink = RecordingSink()
    assert heartbeat_tasks() == []

    drain = await start_drain(rt, model, timer, sink)
    (claim,) = store.claims
    assert claim.expires_at_epoch_ms - claim.claimed_at_epoch_ms == TTL_MS
    assert len(heartbeat_tasks()) == 1

    for n in range(1, 7):  # six seconds: twice the lease
        await tick(timer)
        assert store.renewed == [claim.claim_id] * n
        assert await other.drain_queued_work() == 0  # a second worker finds nothing to claim
        assert await store.list_pending_queued_work(SID) == []  # the store's verdict: live
    assert other.revision == 0 and not drain.done()
    assert backend.clock.ms() > claim.expires_at_epoch_ms  # the first lease ran out long ago

    model.gate.set()
    assert await finish(drain) == 1
    assert store.completed == [claim.claim_id] and store.abandoned == []
    assert await store.list_queued_work(SID) == []
    assert rt.revision == 1 and sink.publishes == 1
    assert sink.events[0] == QueuedWorkStarted("idle", (batch.batch_id,))
    assert heartbeat_tasks() == [] and timer.sleepers == 0


async def test_a_turn_without_claims_starts_no_heartbeat():
    clock = FakeClock()
    timer = ManualTimer(clock)
    store = SpyStore(InMemoryQueueStore(clock_ms=clock.ms))
    model = GatedModel("hi")
    rt = await build(store, model, timer)
    turn = asyncio.create_task(rt.run_turn("hello"))
    await until(model.started.is_set, "the model")
    assert heartbeat_tasks() == [] and timer.sleeps == 0
    model.gate.set()
    assert (await finish(turn)).text == "working: hi"
    assert store.calls == [] and timer.sleeps == 0


# --- a refused renewal ends the turn -----------------------------------------------------------------


async def test_a_refused_renewal_stops_the_turn_without_completing(backend, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    store = SpyStore(backend.open())
    other = backend.open()
    timer = ManualTimer(backend.clock)
    model = GatedModel("never said")
    rt = await build(store, model, timer)
    batch = await store.enqueue_queued_work(draft("contested"))
    sink = RecordingSink()
    drain = await start_drain(rt, model, timer, sink)
    (claim,) = store.claims

    store.renew_down = True  # the store is unreachable: renewals fail, the turn goes on
    await tick(timer)
    await tick(timer)
    await tick(timer, 1.5)  # 3.5 s after the claim: the lease has run out
    assert store.failed == [claim.claim_id] * 3 and not drain.done()
    taken = await other.claim_ready_queued_work(SID, "worker-2", IDLE, TTL_MS, 64)
    assert taken is not None and taken.batch_ids == (batch.batch_id,)  # another worker took over

    store.renew_down = False
    timer.advance(TICK)  # the store is back and refuses: the claim is not ours any more
    with pytest.raises(LashRuntimeError, match="lost queued work claim") as err:
        await finish(drain)
    assert err.value.code is RuntimeErrorCode.STORE_COMMIT_FAILED
    assert isinstance(err.value.__cause__, QueuedWorkClaimExpired)
    assert store.refused == [claim.claim_id]

    # not the owner any more: no completion, no abandon, nothing committed, the model stopped
    assert store.completed == [] and store.abandoned == []
    assert rt.revision == 0 and sink.publishes == 0 and model.cancelled
    (error,) = [e for e in sink.events if isinstance(e, TurnError)]
    assert error == sink.events[-1]
    assert claim.claim_id in error.message and batch.batch_id in error.message
    assert "no longer held" in error.message and len(error.message) < 1_000
    lost = [r for r in caplog.records if r.name == LOGGER and "lost queued work claim" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert SID in lost[0].getMessage() and claim.claim_id in lost[0].getMessage()
    retried = [r for r in caplog.records if "could not renew" in r.getMessage()]
    assert len(retried) == 3
    assert heartbeat_tasks() == [] and timer.sleepers == 0

    # the new holder still owns the work and completes it
    assert await other.list_pending_queued_work(SID) == []
    await other.complete_queued_work(taken.completion())
    assert await other.list_queued_work(SID) == []


async def test_store_errors_during_renewal_are_retried_and_the_store_decides(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = FakeClock()
    timer = ManualTimer(clock)
    inner = InMemoryQueueStore(clock_ms=clock.ms)
    store = SpyStore(inner)
    model = GatedModel("finished")
    rt = await build(store, model, timer)
    await store.enqueue_queued_work(draft("patience"))
    drain = await start_drain(rt, model, timer, RecordingSink())
    (claim,) = store.claims

    store.renew_down = True
    for _ in range(4):  # four seconds without a renewal: past the lease, yet nobody took the work
        await tick(timer)
    assert store.failed == [claim.claim_id] * 4 and store.renewed == []
    assert clock.ms() > claim.expires_at_epoch_ms
    store.renew_down = False
    await tick(timer)  # an expired lease nobody re-claimed is still ours: the store renews it
    assert store.renewed == [claim.claim_id]
    assert await inner.claim_ready_queued_work(SID, "worker-2", IDLE, TTL_MS, 64) is None

    model.gate.set()
    assert await finish(drain) == 1
    assert store.completed == [claim.claim_id] and rt.revision == 1
    assert await inner.list_queued_work(SID) == []
    assert len([r for r in caplog.records if "could not renew" in r.getMessage()]) == 4
    assert not [r for r in caplog.records if "lost queued work claim" in r.getMessage()]


async def test_a_checkpoint_claim_is_renewed_and_losing_it_ends_the_turn(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = FakeClock()
    timer = ManualTimer(clock)
    inner = InMemoryQueueStore(clock_ms=clock.ms)
    store = SpyStore(inner)
    model = GatedModel(("wait", {}), "never said")
    tool_started, tool_gate = asyncio.Event(), asyncio.Event()

    async def wait() -> str:
        tool_started.set()
        await tool_gate.wait()
        return "waited"

    rt = await build(store, model, timer, wait=wait)
    first = await store.enqueue_queued_work(draft("first"))
    sink = RecordingSink()
    drain = asyncio.create_task(rt.drain_queued_work(sink=sink))
    await until(tool_started.is_set, "the tool")
    second = await store.enqueue_queued_work(draft("joins at the checkpoint"))
    tool_gate.set()
    await until(lambda: model.started.is_set() and timer.sleepers == 1, "the second request")
    idle_claim, joined = store.claims
    assert joined.batch_ids == (second.batch_id,)
    assert QueuedWorkStarted("active_turn_checkpoint", (second.batch_id,)) in sink.events

    await tick(timer)
    assert store.renewed == [idle_claim.claim_id, joined.claim_id]  # both claims, every tick

    await inner.abandon_queued_work_claim(joined)  # an operator hands the joined work back
    taken = await inner.claim_ready_queued_work(SID, "worker-2", IDLE, TTL_MS, 64)
    assert taken.batch_ids == (second.batch_id,)
    timer.advance(TICK)
    with pytest.raises(LashRuntimeError, match=joined.claim_id):
        await finish(drain)

    assert store.renewed == [idle_claim.claim_id, joined.claim_id, idle_claim.claim_id]
    assert store.refused == [joined.claim_id]
    # the claim it still held is handed back; the lost one is left alone; nothing completes
    assert store.abandoned == [idle_claim.claim_id] and store.completed == []
    assert [b.batch_id for b in await inner.list_pending_queued_work(SID)] == [first.batch_id]
    assert rt.revision == 0 and sink.publishes == 0 and model.cancelled
    assert isinstance(sink.events[-1], TurnError) and second.batch_id in sink.events[-1].message
    assert any(joined.claim_id in r.getMessage() and SID in r.getMessage() for r in caplog.records)
    assert heartbeat_tasks() == [] and timer.sleepers == 0


# --- the heartbeat never outlives its turn -------------------------------------------------------


async def test_cancelling_the_turn_stops_the_heartbeat_and_hands_the_claim_back():
    clock = FakeClock()
    timer = ManualTimer(clock)
    store = SpyStore(InMemoryQueueStore(clock_ms=clock.ms))
    model = GatedModel("never")
    rt = await build(store, model, timer)
    batch = await store.enqueue_queued_work(draft("cancel me"))
    drain = await start_drain(rt, model, timer, RecordingSink())
    await tick(timer)
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finish(drain)
    assert model.cancelled and heartbeat_tasks() == [] and timer.sleepers == 0
    assert store.abandoned == [store.claims[0].claim_id] and store.completed == []
    assert [b.batch_id for b in await store.list_pending_queued_work(SID)] == [batch.batch_id]


async def test_a_broken_timer_is_logged_and_the_turn_still_commits(caplog):
    caplog.set_level(logging.ERROR, logger=LOGGER)
    clock = FakeClock()
    store = SpyStore(InMemoryQueueStore(clock_ms=clock.ms))

    async def broken_sleep(seconds: float) -> None:
        raise RuntimeError("no timers today")

    rt = await (
        LashRuntime.builder()
        .with_session_id(SID)
        .with_model(ScriptedModel.from_replies(["ok"]))
        .with_queue_store(store)
        .with_sleep(broken_sleep)
        .build()
    )
    await store.enqueue_queued_work(draft("x"))
    assert await rt.drain_queued_work() == 1
    assert store.completed == [store.claims[0].claim_id]
    assert any("lease heartbeat stopped" in r.getMessage() for r in caplog.records)
    assert heartbeat_tasks() == []


# --- configuration -----------------------------------------------------------------------------------


async def test_lease_configuration_is_validated_and_used():
    rt = await LashRuntime.builder().build()
    assert rt.queued_work_lease_ms == QUEUED_WORK_CLAIM_TTL_MS
    assert rt.queued_work_renew_interval_ms == QUEUED_WORK_CLAIM_TTL_MS // 3
    rt = await LashRuntime.builder().with_queued_work_lease(10_000, renew_interval_ms=2_500).build()
    assert (rt.queued_work_lease_ms, rt.queued_work_renew_interval_ms) == (10_000, 2_500)
    rt = await LashRuntime.builder().with_queued_work_lease(2).build()
    assert rt.queued_work_renew_interval_ms == 1  # never zero

    for ttl, interval, match in [
        (0, None, "queued work lease"),
        (True, None, "queued work lease"),
        (1.5, None, "queued work lease"),
        (1, None, "renew interval"),  # a third of 1 ms is still 1 ms: no renewal before expiry
        (3_000, 3_000, "renew interval"),
        (3_000, 0, "renew interval"),
    ]:
        builder = LashRuntime.builder().with_queued_work_lease(ttl, renew_interval_ms=interval)
        with pytest.raises(LashRuntimeError, match=match) as err:
            await builder.build()
        assert err.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    with pytest.raises(LashRuntimeError, match="sleep must be a callable"):
        await LashRuntime.builder().with_sleep(5).build()  # type: ignore[arg-type]


def test_the_loss_message_is_bounded():
    lost = ClaimLost(
        SID,
        "qwc-1",
        tuple(f"qwb-{i}" for i in range(64)),
        QueuedWorkClaimExpired(SID, "qwc-1"),
    )
    assert f"qwb-{MAX_LOSS_BATCH_IDS - 1}," not in lost.message  # the eighth is the last shown
    assert f"qwb-{MAX_LOSS_BATCH_IDS - 1} and 56 more" in lost.message
    assert "qwc-1" in lost.message and "no longer held" in lost.reason
    long = ClaimLost(SID, "qwc-2", (), RuntimeError("x" * 10_000))
    assert len(long.message) < 1_000 and "batches: none" in long.message
