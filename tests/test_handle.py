"""RuntimeHandle and RuntimeObservation (spec section 4) against a real runtime."""

import asyncio
import logging

import pytest

from lash_core import (
    AgentFrameSwitched,
    AssistantProseDelta,
    Committed,
    DeliveryPolicy,
    Gap,
    GapResume,
    InMemoryLiveReplayStore,
    LashRuntime,
    LashRuntimeError,
    LiveReplayGapReason,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ModelSpec,
    ProcessChanged,
    ProcessScope,
    QueueChanged,
    Replayed,
    RuntimeErrorCode,
    RuntimeHandle,
    ScriptedModel,
    SessionCursor,
    SessionPolicy,
    SessionProcessEventKind,
    SessionQueueEventKind,
    SessionRevision,
    SlotPolicy,
    Subscribed,
    TurnActivity,
    TurnActivityPayload,
    TurnInput,
    WrongSessionError,
)
from lash_core.testing import FakeClock, Scenario


async def build_runtime(session_id="session-a", **extra):
    builder = (
        LashRuntime.builder()
        .with_session_id(session_id)
        .with_policy(SessionPolicy(model=ModelSpec.from_token_limits("test-model", None, 1024, None)))
    )
    if "model" in extra:
        builder = builder.with_model(extra["model"])
    return await builder.build()


class PanicLiveReplayStore:
    """Fails loudly if the handle touches it where it must not."""

    def append(self, session_id, revision, payload):
        raise AssertionError("append should not be called by cursor rejection tests")

    def replay_after_cursor(self, cursor):
        raise AssertionError("replay_after_cursor should not be called for rejected cursors")

    def subscribe_after_cursor(self, cursor):
        raise AssertionError("subscribe_after_cursor should not be called for rejected cursors")

    def current_cursor(self, session_id, revision):
        return SessionCursor.new(session_id, revision, 0)

    def trim_session(self, session_id):
        return None


class FailingStore(PanicLiveReplayStore):
    def append(self, session_id, revision, payload):
        raise LiveReplayStoreFailure("disk on fire")


def texts(events):
    return [
        e.payload.activity.event.text
        for e in events
        if isinstance(e.payload, TurnActivityPayload)
        and isinstance(e.payload.activity.event, AssistantProseDelta)
    ]


async def test_runtime_rejects_bad_cursors_before_the_store_is_touched():
    handle = RuntimeHandle(await build_runtime(), PanicLiveReplayStore())
    wrong_session = SessionCursor.new("session-b", SessionRevision(0), 99)
    malformed = SessionCursor("bad")
    with pytest.raises(WrongSessionError):
        handle.resume_session_observation(wrong_session)
    with pytest.raises(WrongSessionError):
        handle.subscribe_session_observation(wrong_session)
    with pytest.raises(MalformedCursorError):
        handle.resume_session_observation(malformed)
    with pytest.raises(MalformedCursorError):
        handle.subscribe_session_observation(malformed)
    with pytest.raises(MalformedCursorError):
        handle.resume_session_observation("lashsc1:1:x:session-a")  # raw strings too


async def test_initial_observation():
    runtime = await build_runtime()
    store = InMemoryLiveReplayStore()
    handle = RuntimeHandle(runtime, store)
    obs = handle.observe()
    assert obs.session_id == "session-a"
    assert obs.revision == 0
    assert str(obs.cursor) == "lashsc1:0:0:session-a"
    assert obs.read_view == runtime.read_view()
    assert obs.persisted_state == runtime.export_persisted_state()
    assert obs.session_observation().cursor == obs.cursor
    assert obs.process_scope() == ProcessScope("session-a")
    assert obs.process_scope_id() == "session:session-a"
    assert await obs.list_process_handles() == []
    assert handle.current_session_observation().cursor == obs.cursor


async def test_publish_from_appends_frame_switch_then_commit_and_moves_the_cursor():
    s = await Scenario.create(session_id="s1")
    handle = s.handle
    start = handle.current_session_observation().cursor
    async with handle.writer() as runtime:
        runtime.open_agent_frame("frame-2")
        handle.publish_from(runtime)
    events = handle.resume_session_observation(start).events
    assert [type(e.payload) for e in events] == [AgentFrameSwitched, Committed]
    assert events[0].payload.frame_id == "frame-2"
    assert handle.observe().cursor == events[1].cursor
    # publishing again with the same frame appends only the commit
    async with handle.writer() as runtime:
        handle.publish_from(runtime)
    again = handle.resume_session_observation(events[1].cursor).events
    assert [type(e.payload) for e in again] == [Committed]


async def test_a_turn_streams_activities_then_commits():
    s = await Scenario.create(session_id="s1", replies=["Hello world"], chunk_size=6, cycle=False)
    handle = s.handle
    start = handle.current_session_observation().cursor
    outcome = await handle.run_turn(TurnInput.text("hi"))
    assert outcome.ok and outcome.text == "Hello world"
    events = handle.resume_session_observation(start).events
    assert isinstance(events[-1].payload, Committed)
    assert "".join(texts(events)) == "Hello world"
    obs = handle.observe()
    assert obs.revision == 1 and obs.cursor == events[-1].cursor
    # activities were appended at the revision before the commit, the commit at the new one
    assert {e.revision for e in events[:-1]} == {0}
    assert events[-1].revision == 1
    assert events[-1].payload.read_view == obs.read_view
    assert [m.content for m in obs.read_view.messages][-1] == "Hello world"


async def test_failing_store_logs_and_falls_back_without_failing_the_commit(caplog):
    runtime = await build_runtime(model=ScriptedModel.from_replies(["ok"]))
    handle = RuntimeHandle(runtime, FailingStore())
    with caplog.at_level(logging.WARNING, logger="lash_core.observation"):
        outcome = await handle.run_turn("hi")
        handle.record_queue_changed(SessionQueueEventKind.ENQUEUED, ["b"])
        handle.record_process_changed(SessionProcessEventKind.STARTED, ["p"])
    assert outcome.ok
    assert handle.observe().revision == 1
    assert str(handle.observe().cursor) == "lashsc1:1:0:session-a"  # current_cursor fallback
    messages = [r.getMessage() for r in caplog.records]
    assert any("commit event" in m and "disk on fire" in m for m in messages)
    assert any("turn activity" in m for m in messages)
    assert any("queue observation" in m for m in messages)
    assert any("process observation" in m for m in messages)


async def test_records_append_at_the_current_revision():
    s = await Scenario.create()
    h = s.handle
    start = h.current_session_observation().cursor
    h.record_turn_activity(TurnActivity.independent(AssistantProseDelta("x")))
    h.record_queue_changed(SessionQueueEventKind.CANCELLED, ["b1", "b2"])
    h.record_process_changed(SessionProcessEventKind.STARTED, ["p1"])
    events = h.resume_session_observation(start).events
    assert [e.payload for e in events[1:]] == [
        QueueChanged(SessionQueueEventKind.CANCELLED, ("b1", "b2")),
        ProcessChanged(SessionProcessEventKind.STARTED, ("p1",)),
    ]
    assert all(e.revision == h.observe().revision for e in events)


async def test_resume_replays_or_returns_gap_with_fresh_observation():
    s = await Scenario.create(max_events=4)
    h = s.handle
    start = h.current_session_observation().cursor
    h.record_queue_changed(SessionQueueEventKind.ENQUEUED, ["a"])
    assert isinstance(h.resume_session_observation(start), Replayed)
    for i in range(5):
        h.record_queue_changed(SessionQueueEventKind.ENQUEUED, [str(i)])
    result = h.resume_session_observation(start)
    assert isinstance(result, GapResume)
    assert result.gap.reason is LiveReplayGapReason.TRIMMED
    assert result.gap.requested_cursor == start
    assert str(result.gap.latest_cursor) == "lashsc1:0:6:demo-session"
    assert result.gap.latest_revision == 0
    assert result.gap.session_id == "demo-session"
    assert result.gap.missed_events == 6
    assert result.observation.cursor == result.gap.latest_cursor
    assert result.observation.read_view == h.observe().read_view
    sub = h.subscribe_session_observation(start)
    assert isinstance(sub, GapResume) and sub.gap.reason is LiveReplayGapReason.TRIMMED
    future = SessionCursor.new("demo-session", 0, 99)
    assert h.resume_session_observation(future).gap.reason is LiveReplayGapReason.UNAVAILABLE


async def test_subscribe_session_observation_streams_live():
    s = await Scenario.create(replies=["a b c d"], chunk_size=2, cycle=False)
    h = s.handle
    result = h.subscribe_session_observation(h.current_session_observation().cursor)
    assert isinstance(result, Subscribed)
    turn = asyncio.create_task(h.run_turn("go"))
    seen = []
    async for event in result.subscription:
        seen.append(event)
        if isinstance(event.payload, Committed):
            break
    await turn
    assert "".join(texts(seen)) == "a b c d"


async def test_tool_state_is_reused_while_the_generation_is_unchanged():
    s = await Scenario.create()
    h = s.handle
    first = h.observe().tool_state
    assert first is not None
    async with h.writer() as runtime:
        h.publish_from(runtime)
    assert h.observe().tool_state is first  # same object: reused
    async with h.writer() as runtime:
        runtime.register_tool("mul", lambda a, b: a * b)
        h.publish_from(runtime)
    changed = h.observe().tool_state
    assert changed is not first and changed.generation != first.generation


async def test_catalog_error_gives_empty_catalog_and_message():
    s = await Scenario.create()
    h = s.handle
    async with h.writer() as runtime:
        runtime.register_tool("broken", lambda: 1, schema={"type": 12})
        h.publish_from(runtime)
    obs = h.observe()
    assert obs.tool_catalog == ()
    assert "broken" in obs.tool_catalog_error


async def test_observe_never_waits_for_the_writer():
    s = await Scenario.create()
    h = s.handle
    async with h.writer():
        assert h.observe().session_id == "demo-session"  # no await, no deadlock
        other = asyncio.create_task(h.drain_queued_work())
        await asyncio.sleep(0.01)
        assert not other.done()  # a second writer waits its turn
    assert await asyncio.wait_for(other, 1) == 0


async def test_try_into_runtime():
    runtime = await build_runtime()
    h = RuntimeHandle(runtime)
    clone = h.clone()
    assert h.try_into_runtime() is h  # two handles
    del clone
    import gc

    gc.collect()
    assert h.try_into_runtime() is runtime
    with pytest.raises(LashRuntimeError):
        h.writer()


async def test_enqueue_and_cancel_record_queue_events():
    s = await Scenario.create()
    h = s.handle
    start = h.current_session_observation().cursor
    batch = await h.enqueue_turn_input(
        TurnInput.text("later"), DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE, "k1"
    )
    again = await h.enqueue_turn_input("other", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE, "k1")
    assert again == batch  # idempotent by source key
    cancelled = await h.cancel_queued_work_batch(h.session_id, batch.batch_id)
    assert cancelled == batch
    assert await h.cancel_queued_work_batch(h.session_id, batch.batch_id) is None
    assert await h.cancel_queued_work_batch(h.session_id, "qwb-unknown") is None
    payloads = [e.payload for e in h.resume_session_observation(start).events]
    assert payloads == [
        QueueChanged(SessionQueueEventKind.ENQUEUED, (batch.batch_id,)),
        QueueChanged(SessionQueueEventKind.ENQUEUED, (batch.batch_id,)),
        QueueChanged(SessionQueueEventKind.CANCELLED, (batch.batch_id,)),
    ]


async def test_cancel_of_a_claimed_batch_is_refused_and_not_recorded():
    s = await Scenario.create()
    h = s.handle
    batch = await h.enqueue_turn_input("x", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN)
    claim = await s.queue.claim_ready_queued_work(h.session_id, "other-owner", "idle", 60_000, 8)
    assert claim is not None
    mark = h.current_session_observation().cursor
    assert await h.cancel_queued_work_batch(h.session_id, batch.batch_id) is None
    assert h.resume_session_observation(mark).events == ()


async def test_queue_operations_without_a_store_raise_store_commit_failed():
    h = RuntimeHandle(await build_runtime())
    with pytest.raises(LashRuntimeError, match="queued turn input requires a persistent runtime store") as info:
        await h.enqueue_turn_input("x", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN)
    assert info.value.code is RuntimeErrorCode.STORE_COMMIT_FAILED
    assert info.value.code == "store_commit_failed"
    with pytest.raises(LashRuntimeError, match="persistent runtime store"):
        await h.cancel_queued_work_batch("session-a", "b")


async def test_queue_worker_runs_enqueued_input_as_a_turn():
    s = await Scenario.create(replies=["done"], cycle=True)
    h = s.handle
    stop = asyncio.Event()
    worker = asyncio.create_task(h.run_queue_worker(stop_event=stop, poll_interval=0.05))
    start = h.current_session_observation().cursor
    await h.enqueue_turn_input("queued!", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    for _ in range(100):
        if h.observe().revision == 1:
            break
        await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(worker, 2) == 1
    kinds = [e.type for e in h.resume_session_observation(start).events]
    assert kinds[0] == "queue_changed" and kinds[-1] == "committed"
    first_activity = next(e for e in h.resume_session_observation(start).events if e.type == "turn_activity")
    assert first_activity.payload.activity.event.type == "queued_work_started"
    assert await s.queue.list_queued_work(h.session_id) == []


async def test_process_handles_list_root_and_frame_scopes_merged():
    s = await Scenario.create(session_id="s")
    h = s.handle
    start = h.current_session_observation().cursor
    root = h.start_process("indexer")
    await h.open_agent_frame("f1")
    framed = h.start_process("crawler")  # defaults to the frame's scope
    s.processes.grant_handle(root.process_id, ProcessScope.for_agent_frame("s", "f1"))
    live = await h.observe().list_process_handles()
    assert [p.process_id for p in live] == sorted({root.process_id, framed.process_id})
    h.cancel_process(framed.process_id)
    h.cancel_process(framed.process_id)  # already cancelled: no second event
    assert [p.process_id for p in await h.observe().list_process_handles()] == [root.process_id]
    assert len(await h.observe().list_all_process_handles()) == 2
    process_events = [e.payload for e in h.resume_session_observation(start).events if e.type == "process_changed"]
    assert process_events == [
        ProcessChanged(SessionProcessEventKind.STARTED, (root.process_id,)),
        ProcessChanged(SessionProcessEventKind.STARTED, (framed.process_id,)),
        ProcessChanged(SessionProcessEventKind.CANCELLED, (framed.process_id,)),
    ]


async def test_simulated_clients_replay_or_gap_and_reconstruct_the_view():
    s = await Scenario.create(max_events=6, max_age=30.0, backend="memory")
    h = s.handle
    alice, bob = s.client("alice"), s.client("bob")
    await h.run_turn("hello")
    alice.pump()
    bob.pump()
    assert alice.view_matches_server() and bob.view_matches_server()
    alice.disconnect()
    bob.disconnect()
    h.record_queue_changed(SessionQueueEventKind.ENQUEUED, ["x"])
    outcome = alice.reconnect()
    assert outcome.kind == "replayed" and [e.type for e in outcome.replayed] == ["queue_changed"]
    await h.run_turn("again")
    s.clock.advance(31)
    s.store.trim_session(h.session_id)
    outcome = bob.reconnect()
    assert outcome.kind == "gap" and outcome.gap.reason is LiveReplayGapReason.TRIMMED
    assert bob.view_matches_server()
    alice.pump()
    assert alice.view_matches_server()
    s.restart_store()
    charlie_outcome = bob.reconnect()
    assert charlie_outcome.gap.reason is LiveReplayGapReason.UNAVAILABLE
    assert bob.view_matches_server()


# -- failure paths, with a runtime whose every part the test controls -------------------------------

import copy
import dataclasses


@dataclasses.dataclass
class State:
    session_id: str = "fake"
    head_revision: int | None = None
    turn_index: int = 0
    current_agent_frame_id: str = ""


class ToolSnapshot:
    def __init__(self, generation):
        self.generation = generation


class FakeRuntime:
    """Just the surface RuntimeHandle reads, with knobs for the failure cases."""

    def __init__(self):
        self.session_id = "fake"
        self.policy = None
        self.state = State()
        self.generation: int | None = 1
        self.tool_state_error: Exception | None = None
        self.process_registry = self.queue_store = self.queued_work_poke = None

    def export_persisted_state(self):
        return dataclasses.replace(self.state)

    def read_view(self):
        return ("view", self.state.turn_index)

    def usage_report(self):
        return None

    def tool_registry_generation(self):
        return self.generation

    def tool_state(self):
        if self.tool_state_error is not None:
            raise self.tool_state_error
        return ToolSnapshot(self.generation)

    def active_tool_catalog(self):
        return ()


class SelectiveStore(InMemoryLiveReplayStore):
    """Appends fail for the payload types named in ``fail``, with the exception given."""

    def __init__(self, fail=(), error=ConnectionError("redis went away")):
        super().__init__()
        self.fail, self.error = set(fail), error

    def append(self, session_id, revision, payload):
        if payload.type in self.fail:
            raise self.error
        return super().append(session_id, revision, payload)


async def test_head_revision_wins_over_turn_index_and_records_use_the_current_revision():
    runtime = FakeRuntime()
    runtime.state.turn_index, runtime.state.head_revision = 3, 7
    h = RuntimeHandle(runtime)
    assert h.observe().revision == 7
    start = h.current_session_observation().cursor
    assert str(start) == "lashsc1:7:0:fake"
    runtime.state.head_revision = 9
    h.publish_from(runtime)
    h.record_queue_changed(SessionQueueEventKind.ENQUEUED, ["b"])
    events = h.resume_session_observation(start).events
    assert [int(e.revision) for e in events] == [9, 9]


async def test_gap_reports_the_snapshot_revision():
    runtime = FakeRuntime()
    runtime.state.turn_index = 4
    h = RuntimeHandle(runtime, InMemoryLiveReplayStore.with_bounds(1, 60))
    start = h.current_session_observation().cursor
    h.publish_from(runtime)
    h.publish_from(runtime)
    result = h.resume_session_observation(start)
    assert result.gap.latest_revision == 4 and str(result.gap.latest_cursor) == "lashsc1:4:2:fake"


async def test_empty_frame_id_appends_no_frame_switch():
    runtime = FakeRuntime()
    h = RuntimeHandle(runtime)
    start = h.current_session_observation().cursor
    runtime.state.current_agent_frame_id = "f1"
    h.publish_from(runtime)
    runtime.state.current_agent_frame_id = ""  # back to no frame: nothing to announce
    h.publish_from(runtime)
    assert [e.type for e in h.resume_session_observation(start).events] == [
        "agent_frame_switched",
        "committed",
        "committed",
    ]


async def test_any_store_exception_is_logged_and_the_snapshot_still_moves(caplog):
    runtime = FakeRuntime()
    store = SelectiveStore(fail={"committed", "queue_changed"}, error=TimeoutError("slow disk"))
    h = RuntimeHandle(runtime, store)
    runtime.state.turn_index = 1
    runtime.state.current_agent_frame_id = "f1"
    with caplog.at_level(logging.WARNING, logger="lash_core.observation"):
        h.publish_from(runtime)
        h.record_queue_changed(SessionQueueEventKind.ENQUEUED, ["b"])
    obs = h.observe()
    assert obs.revision == 1 and obs.read_view == ("view", 1)
    # the frame switch (position 1) was appended; the commit failed: the cursor falls back to the tail
    assert str(obs.cursor) == "lashsc1:1:1:fake"
    assert any("slow disk" in r.getMessage() for r in caplog.records)


async def test_frame_switch_failure_does_not_stop_the_commit(caplog):
    runtime = FakeRuntime()
    h = RuntimeHandle(runtime, SelectiveStore(fail={"agent_frame_switched"}))
    start = h.current_session_observation().cursor
    runtime.state.current_agent_frame_id = "f1"
    with caplog.at_level(logging.WARNING, logger="lash_core.observation"):
        h.publish_from(runtime)
    assert [e.type for e in h.resume_session_observation(start).events] == ["committed"]
    assert any("agent-frame" in r.getMessage() for r in caplog.records)


async def test_tool_state_failure_or_no_registry_omits_the_snapshot(caplog):
    runtime = FakeRuntime()
    h = RuntimeHandle(runtime)
    assert h.observe().tool_state.generation == 1
    runtime.generation, runtime.tool_state_error = 2, RuntimeError("registry locked")
    with caplog.at_level(logging.WARNING, logger="lash_core.observation"):
        h.publish_from(runtime)
    assert h.observe().tool_state is None
    assert any("tool state" in r.getMessage() for r in caplog.records)
    runtime.generation, runtime.tool_state_error = None, None
    h.publish_from(runtime)
    assert h.observe().tool_state is None


class SyncQueueStore:
    """A queue store with plain (non-coroutine) methods: every ``QueuedWorkStore`` method must be a
    coroutine function, so the builder refuses it, naming the first plain method."""

    def __init__(self):
        from lash_core import InMemoryQueueStore

        self.inner = InMemoryQueueStore()

    def __getattr__(self, name):
        return getattr(self.inner, name)  # the other eight methods: the in-memory store's coroutines

    def enqueue_queued_work(self, draft):
        return self.inner.state.enqueue(draft, 1_000)

    def cancel_queued_work_batch(self, session_id, batch_id):
        return self.inner.state.cancel(session_id, batch_id, 1_000)


async def test_synchronous_queue_stores_are_refused_and_store_failures_are_store_commit_failed():
    builder = LashRuntime.builder().with_session_id("session-a").with_queue_store(SyncQueueStore())
    with pytest.raises(
        LashRuntimeError, match=r"SyncQueueStore\.enqueue_queued_work must be a coroutine function"
    ) as info:
        await builder.build()
    assert info.value.code is RuntimeErrorCode.INVALID_CONFIGURATION

    class Broken:
        async def enqueue_queued_work(self, draft):
            raise OSError("connection refused")

    runtime = FakeRuntime()
    runtime.queue_store = Broken()
    h = RuntimeHandle(runtime)
    with pytest.raises(LashRuntimeError, match="connection refused") as info:
        await h.enqueue_turn_input("x", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN)
    assert info.value.code is RuntimeErrorCode.STORE_COMMIT_FAILED
    assert isinstance(info.value.__cause__, OSError)


async def test_try_into_runtime_respects_writers_copies_and_detaches():
    import gc

    runtime = FakeRuntime()
    h = RuntimeHandle(runtime)
    writer = h.writer()  # created, not entered: still a reference to the runtime
    assert h.try_into_runtime() is h
    del writer
    gc.collect()
    other = copy.copy(h)  # copies are clones
    assert h.try_into_runtime() is h
    del other
    gc.collect()
    async with h.writer():
        assert h.try_into_runtime() is h  # a writer is inside
    gc.collect()
    assert h.try_into_runtime() is runtime
    with pytest.raises(LashRuntimeError, match="gave its runtime back"):
        h.record_queue_changed(SessionQueueEventKind.ENQUEUED, ["b"])
    with pytest.raises(LashRuntimeError, match="gave its runtime back"):
        h.resume_session_observation(SessionCursor.new("fake", 0, 0))


# --- hardening (issue 6) ------------------------------------------------------------------------


class DownStore:
    """A store that is down: every method raises a foreign error, from the start or after ``up``
    is switched off."""

    def __init__(self, up=False):
        self.inner = InMemoryLiveReplayStore()
        self.up = up
        self.calls = []

    def _call(self, name, *args):
        self.calls.append(name)
        if not self.up:
            raise ConnectionError(f"{name}: connection refused")
        return getattr(self.inner, name)(*args)

    def append(self, session_id, revision, payload):
        return self._call("append", session_id, revision, payload)

    def replay_after_cursor(self, cursor):
        return self._call("replay_after_cursor", cursor)

    def subscribe_after_cursor(self, cursor):
        return self._call("subscribe_after_cursor", cursor)

    def current_cursor(self, session_id, revision):
        return self._call("current_cursor", session_id, revision)

    def trim_session(self, session_id):
        return self._call("trim_session", session_id)


@pytest.mark.parametrize("fails_from_start", [True, False])
async def test_a_store_that_is_down_never_fails_a_commit(caplog, fails_from_start):
    from lash_core import encode_json

    store = DownStore(up=not fails_from_start)
    model = ScriptedModel.from_replies(["first answer", "second answer"])
    with caplog.at_level(logging.WARNING, logger="lash_core.observation"):
        h = RuntimeHandle(await build_runtime(model=model), store)
        if not fails_from_start:
            outcome = await h.run_turn("one")  # appends work while the store is up
            assert outcome.revision == 1
            known = h.observe().cursor.parse().live_position
            assert known > 0
            store.up = False  # ... then it goes down after the handle was built
        else:
            known = 0
            assert h.observe().cursor == SessionCursor.new("session-a", 0, 0)
        outcome = await h.run_turn("two")
    obs = h.observe()
    assert outcome.text in ("first answer", "second answer") and obs.revision == outcome.revision
    assert obs.read_view.messages[-1].content == outcome.text  # the new snapshot was published
    # the best cursor available: this session, the new revision, the last position the handle knew
    parsed = obs.cursor.parse()
    assert (parsed.session_id, parsed.revision, parsed.live_position) == ("session-a", outcome.revision, known)
    assert {"append", "current_cursor"} <= set(store.calls)
    assert any("connection refused" in r.getMessage() for r in caplog.records)
    # the fresh observation works, and reads that need the store fail with the typed error
    assert h.current_session_observation().cursor == obs.cursor
    with pytest.raises(LiveReplayStoreFailure, match="ConnectionError"):
        h.resume_session_observation(obs.cursor)
    with pytest.raises(LiveReplayStoreFailure, match="ConnectionError"):
        h.subscribe_session_observation(obs.cursor)
    # records are logged, never raised
    h.record_queue_changed(SessionQueueEventKind.ENQUEUED, ["qwb-1"])
    h.record_turn_activity(TurnActivity.independent(AssistantProseDelta("x")))
    encode_json(h.observe().session_observation().to_dict())


async def test_a_store_answering_with_garbage_is_a_typed_failure():
    class Garbage(PanicLiveReplayStore):
        def append(self, session_id, revision, payload):
            return "not an event"

        def current_cursor(self, session_id, revision):
            return "lashsc1:0:0:someone-else"

        def replay_after_cursor(self, cursor):
            return ["not", "a", "result"]

    h = RuntimeHandle(await build_runtime(), Garbage())
    assert h.observe().cursor == SessionCursor.new("session-a", 0, 0)
    h.record_turn_activity(TurnActivity.independent(AssistantProseDelta("x")))  # logged
    with pytest.raises(LiveReplayStoreFailure, match="list"):
        h.resume_session_observation(SessionCursor.new("session-a", 0, 0))


async def test_record_methods_validate_their_arguments_before_the_store():
    from lash_core import InvalidObservationError

    h = RuntimeHandle(await build_runtime(), PanicLiveReplayStore())
    cases = [
        lambda: h.record_queue_changed("enqueued", "qwb-123"),
        lambda: h.record_queue_changed("enqueued", b"qwb-123"),
        lambda: h.record_queue_changed("enqueued", [1, 2]),
        lambda: h.record_queue_changed("enqueued", ["ok", ""]),
        lambda: h.record_queue_changed("enqueued", ["\ud800"]),
        lambda: h.record_queue_changed("queued", ["qwb-1"]),
        lambda: h.record_queue_changed(["deep"], ["qwb-1"]),
        lambda: h.record_process_changed("started", "proc-1"),
        lambda: h.record_process_changed("exploded", ["proc-1"]),
        lambda: h.record_process_changed("started", None),
        lambda: h.record_turn_activity({"type": "assistant_prose_delta", "text": "hi"}),
        lambda: h.record_turn_activity(AssistantProseDelta("hi")),
        lambda: h.record_turn_activity(None),
    ]
    for case in cases:
        with pytest.raises(InvalidObservationError):
            case()  # PanicLiveReplayStore.append would raise AssertionError if it were reached
    h2 = RuntimeHandle(await build_runtime(), InMemoryLiveReplayStore())
    start = h2.observe().cursor
    h2.record_queue_changed("enqueued", ("qwb-1", "qwb-2"))
    h2.record_process_changed(SessionProcessEventKind.STARTED, iter(["proc-1"]))
    payloads = [e.payload for e in h2.resume_session_observation(start).events]
    assert payloads == [
        QueueChanged(SessionQueueEventKind.ENQUEUED, ("qwb-1", "qwb-2")),
        ProcessChanged(SessionProcessEventKind.STARTED, ("proc-1",)),
    ]


@pytest.mark.parametrize("bad", ["\ud800", "chat-\udcff", "", 7])
async def test_session_ids_that_are_not_utf8_are_refused_when_built(bad):
    with pytest.raises(LashRuntimeError) as info:
        await build_runtime(session_id=bad)
    assert info.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    # a runtime from elsewhere with such an id is refused by the handle
    runtime = FakeRuntime()
    runtime.session_id = bad
    with pytest.raises(LashRuntimeError) as info:
        RuntimeHandle(runtime)
    assert info.value.code is RuntimeErrorCode.INVALID_CONFIGURATION


async def test_other_ids_that_are_not_utf8_are_refused_too():
    from lash_core import InvalidProcessError

    with pytest.raises(LashRuntimeError):
        await LashRuntime.builder().with_owner_id("owner-\ud800").build()
    runtime = await build_runtime()
    with pytest.raises(LashRuntimeError, match="UTF-8"):
        runtime.open_agent_frame("frame-\ud800")
    with pytest.raises(InvalidProcessError):
        ProcessScope("session-\ud800")
    s = await Scenario.create()
    with pytest.raises(InvalidProcessError):
        s.handle.start_process("name-\ud800")


async def test_a_handle_refuses_to_act_on_another_session():
    from lash_core import ForeignSessionError, InvalidQueuedWorkError

    mine = await Scenario.create(session_id="mine")
    theirs_handle = RuntimeHandle(
        await LashRuntime.builder().with_session_id("theirs").with_queue_store(mine.queue)
        .with_process_registry(mine.processes).build()
    )
    theirs = await theirs_handle.enqueue_turn_input("x", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    mark = mine.handle.current_session_observation().cursor
    with pytest.raises(ForeignSessionError) as info:
        await mine.handle.cancel_queued_work_batch("theirs", theirs.batch_id)
    assert (info.value.expected_session_id, info.value.actual_session_id) == ("mine", "theirs")
    assert info.value.code == "invalid_input"
    assert [b.batch_id for b in await mine.queue.list_queued_work("theirs")] == [theirs.batch_id]
    for session_id, batch_id in ((None, theirs.batch_id), ("mine", ""), ("mine", None), ("mine", "\ud800")):
        with pytest.raises((ForeignSessionError, InvalidQueuedWorkError)):
            await mine.handle.cancel_queued_work_batch(session_id, batch_id)
    # processes: another session's process cannot be cancelled, nor started in its scope, here
    process = theirs_handle.start_process("their-job")
    with pytest.raises(ForeignSessionError):
        mine.handle.cancel_process(process.process_id)
    assert not mine.processes.get_process(process.process_id).is_terminal
    with pytest.raises(ForeignSessionError):
        mine.handle.start_process("sneaky", scope=ProcessScope("theirs"))
    assert mine.handle.resume_session_observation(mark).events == ()
