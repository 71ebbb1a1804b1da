"""LashRuntime and its asyncio driver: turns, observation surface, tools and queued work."""

from __future__ import annotations

import asyncio
import threading

import pytest
from unencodable import BAD_VALUES

from lash_core._errors import LashRuntimeError, RuntimeErrorCode
from lash_core._events import (
    AssistantProseDelta,
    ModelRequestStarted,
    QueuedInputAccepted,
    QueuedWorkStarted,
    ReasoningDelta,
    RetryStatus,
    TokenUsage,
    ToolCallCompleted,
    ToolCallStarted,
    TurnError,
    Usage,
)
from lash_core._input import TurnInput
from lash_core._queue import (
    DeliveryPolicy,
    InMemoryQueueStore,
    QueuedWorkBatchDraft,
    SlotPolicy,
)
from lash_core._runtime import (
    ChatMessage,
    ChatRole,
    LashRuntime,
    ModelRetry,
    ModelSpec,
    ModelTextDelta,
    ModelToolCall,
    ModelUsage,
    ObservationSink,
    OpenAgentFrameResult,
    QueuedWorkPoke,
    RuntimeSessionState,
    ScriptedModel,
    ScriptedReply,
    SessionPolicy,
    SessionUsageReport,
    ToolCall,
    ToolSpec,
    ToolState,
    TurnStatus,
    TurnUsageEntry,
    tool_failure,
    tool_success,
)

SID = "chat-1"
FRAME0 = "chat-1:frame:initial"
NOW_MS = 1_700_000_000_000


class RecordingSink:
    """Records every call in order; ``publish`` entries capture what the runtime shows then."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def record_turn_activity(self, activity) -> None:
        self.calls.append(("activity", activity))

    def publish_from(self, runtime) -> None:
        self.calls.append(("publish", runtime.export_persisted_state(), runtime.read_view()))

    @property
    def activities(self):
        return [c[1] for c in self.calls if c[0] == "activity"]

    @property
    def events(self):
        return [a.event for a in self.activities]

    @property
    def kinds(self):
        return [c[1].event.type if c[0] == "activity" else "publish" for c in self.calls]

    @property
    def publishes(self):
        return [c for c in self.calls if c[0] == "publish"]


def usage(i: int, o: int) -> TokenUsage:
    return TokenUsage(input_tokens=i, output_tokens=o)


def reply(text: str, u: TokenUsage) -> list:
    return [ModelTextDelta(text), ModelUsage(u)]


async def build(model=None, **options) -> LashRuntime:
    builder = LashRuntime.builder().with_session_id(SID).with_owner_id("owner-1")
    if model is not None:
        builder = builder.with_model(model)
    for name, fn in options.pop("tools", {}).items():
        builder = builder.with_tool(name, fn)
    if "store" in options:
        builder = builder.with_queue_store(options.pop("store"))
    if "policy" in options:
        builder = builder.with_policy(options.pop("policy"))
    assert not options
    return await builder.build()


def store() -> InMemoryQueueStore:
    return InMemoryQueueStore(clock_ms=lambda: NOW_MS)


def draft(text: str, delivery=DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, slot=SlotPolicy.JOIN):
    return QueuedWorkBatchDraft(SID, delivery, slot, [TurnInput.text(text)])


# --- values ---------------------------------------------------------------------------------------


def test_model_spec_from_token_limits_validates():
    spec = ModelSpec.from_token_limits("gpt-x", "fast", 128_000, 4096)
    assert spec == ModelSpec("gpt-x", 128_000, variant="fast", output_token_capacity=4096)
    assert spec.to_dict() == {
        "id": "gpt-x",
        "variant": "fast",
        "limits": {"context_window_tokens": 128_000, "output_token_capacity": 4096},
    }
    assert ModelSpec.from_token_limits("m", None, 10, None).output_token_capacity is None
    with pytest.raises(LashRuntimeError, match="context_window_tokens must be greater than zero") as err:
        ModelSpec.from_token_limits("m", None, 0, None)
    assert err.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    with pytest.raises(LashRuntimeError, match="output_token_capacity must be greater than zero"):
        ModelSpec.from_token_limits("m", None, 10, 0)
    with pytest.raises(LashRuntimeError, match="must be an int"):
        ModelSpec.from_token_limits("m", None, True, None)
    with pytest.raises(LashRuntimeError, match="max_turns must be greater than zero"):
        SessionPolicy(max_turns=0)
    assert SessionPolicy().model.context_window_tokens > 1


def test_chat_messages_validate_roles():
    with pytest.raises(ValueError, match="only assistant"):
        ChatMessage(ChatRole.USER, "x", tool_calls=(ToolCall("c", "t", {}),))
    with pytest.raises(TypeError):
        ChatMessage.tool("out", tool_call_id=None, tool_name="t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only tool messages"):
        ChatMessage(ChatRole.USER, "x", tool_call_id="c")


# --- the observation surface ----------------------------------------------------------------------


async def test_fresh_runtime_surface():
    rt = await build(ScriptedModel(), tools={"add": lambda a, b: a + b})
    assert rt.session_id == SID
    assert rt.policy == SessionPolicy()
    assert rt.export_persisted_state() == RuntimeSessionState(
        session_id=SID,
        head_revision=None,
        turn_index=0,
        agent_frames=(FRAME0,),
        current_agent_frame_id=FRAME0,
        policy=SessionPolicy(),
        token_usage=TokenUsage(),
    )
    assert rt.revision == 0
    view = rt.read_view()
    assert (view.session_id, view.turn_index, view.messages, view.usage) == (SID, 0, (), TokenUsage())
    assert view.current_agent_frame_id == FRAME0
    assert rt.usage_report() == SessionUsageReport(TokenUsage(), (), 0)
    assert rt.tool_registry_generation() == 1
    assert rt.tool_state() == ToolState(1, (ToolSpec("add", "", {"type": "object", "properties": {}}),))
    assert rt.active_tool_catalog() == (
        {"name": "add", "description": "", "input_schema": {"type": "object", "properties": {}}},
    )
    assert (rt.queue_store, rt.process_registry, rt.queued_work_poke) == (None, None, None)
    assert isinstance(RecordingSink(), ObservationSink)


async def test_builder_defaults_and_poke():
    rt = await LashRuntime.builder().with_queue_store(store()).build()
    assert rt.session_id.startswith("session-")
    assert isinstance(rt.queued_work_poke, QueuedWorkPoke)
    with pytest.raises(LashRuntimeError, match="session id") as err:
        await LashRuntime.builder().with_session_id("").build()
    assert err.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    with pytest.raises(LashRuntimeError, match="already registered"):
        await LashRuntime.builder().with_tool("t", print).with_tool("t", print).build()


async def test_open_agent_frame_switches_and_records_frames():
    rt = await build()
    assert rt.open_agent_frame("frame-2") == OpenAgentFrameResult("frame-2", True)
    state = rt.export_persisted_state()
    assert (state.agent_frames, state.current_agent_frame_id) == ((FRAME0, "frame-2"), "frame-2")
    assert rt.read_view().current_agent_frame_id == "frame-2"
    assert rt.open_agent_frame("frame-2") == OpenAgentFrameResult("frame-2", False)
    assert rt.open_agent_frame("  ") == OpenAgentFrameResult("frame-2", False)
    assert rt.open_agent_frame(FRAME0) == OpenAgentFrameResult(FRAME0, True)
    assert rt.export_persisted_state().agent_frames == (FRAME0, "frame-2")
    assert rt.revision == 0  # frames do not commit a turn


# --- turns ----------------------------------------------------------------------------------------


async def test_text_turn_streams_then_commits_then_publishes():
    model = ScriptedModel([reply("Hello there", usage(10, 3)), reply("Again", usage(20, 1))])
    rt = await build(model)
    sink = RecordingSink()

    outcome = await rt.run_turn([TurnInput.text("hi")], sink=sink)

    assert sink.kinds == ["model_request_started", "assistant_prose_delta", "usage", "publish"]
    assert sink.events[:3] == [
        ModelRequestStarted(0),
        AssistantProseDelta("Hello there"),
        Usage(0, usage(10, 3), usage(10, 3)),
    ]
    _, state, view = sink.publishes[0]
    assert (state.turn_index, view.turn_index) == (1, 1)  # publish sees the commit
    assert view.messages == (ChatMessage.user("hi"), ChatMessage.assistant("Hello there"))
    assert (outcome.status, outcome.text, outcome.revision, outcome.turn_index) == (
        TurnStatus.FINISHED,
        "Hello there",
        1,
        1,
    )
    assert outcome.usage == usage(10, 3) and outcome.requests == 1 and outcome.ok

    sink2 = RecordingSink()
    outcome2 = await rt.run_turn("more", sink=sink2)  # a bare string is one text input
    assert sink2.events[2] == Usage(0, usage(20, 1), usage(30, 4))  # cumulative over the session
    assert outcome2.revision == 2
    assert rt.read_view().usage == usage(30, 4)
    assert rt.usage_report() == SessionUsageReport(
        usage(30, 4), (TurnUsageEntry(1, usage(10, 3), 1), TurnUsageEntry(2, usage(20, 1), 1)), 2
    )
    assert [m.content for m in rt.read_view().messages] == ["hi", "Hello there", "more", "Again"]
    assert model.requests[1].messages[:2] == (ChatMessage.user("hi"), ChatMessage.assistant("Hello there"))


async def test_scripted_replies_stream_in_chunks_with_estimated_usage():
    model = ScriptedModel.from_replies(
        [ScriptedModel.reply("Hello there, friend", reasoning="think")], chunk_size=5, delay=0.001
    )
    rt = await build(model)
    sink = RecordingSink()
    outcome = await rt.run_turn("hi", sink=sink)
    prose = [a for a in sink.activities if isinstance(a.event, AssistantProseDelta)]
    assert [a.event.text for a in prose] == ["Hello", " ther", "e, fr", "iend"]
    assert len({a.correlation_id for a in prose}) == 1
    assert [e for e in sink.events if isinstance(e, ReasoningDelta)] == [ReasoningDelta("think")]
    assert outcome.usage == TokenUsage(input_tokens=1, output_tokens=6, reasoning_output_tokens=2)
    assert model.remaining == 0


async def test_tool_turn_sync_and_async_tools_with_correlated_activities():
    async def lookup(city: str) -> dict:
        await asyncio.sleep(0)
        return {"city": city, "temp": 21}

    model = ScriptedModel.from_replies(
        [
            [ModelTextDelta("Checking."), ModelToolCall("c1", "add", {"a": 2, "b": 3}),
             ModelToolCall("c2", "weather", {"city": "Oslo"})],
            "5, and 21 degrees.",
        ]
    )
    rt = await build(model, tools={"add": lambda a, b: a + b, "weather": lookup})
    sink = RecordingSink()
    outcome = await rt.run_turn("go", sink=sink)

    assert sink.kinds == [
        "model_request_started", "assistant_prose_delta", "usage",
        "tool_call_started", "tool_call_completed",
        "tool_call_started", "tool_call_completed",
        "model_request_started", "assistant_prose_delta", "assistant_prose_delta",
        "assistant_prose_delta", "usage", "publish",
    ]
    tools = [a for a in sink.activities if isinstance(a.event, (ToolCallStarted, ToolCallCompleted))]
    assert [a.correlation_id for a in tools] == ["tool:c1", "tool:c1", "tool:c2", "tool:c2"]
    assert tools[1].event.output == tool_success(5)
    assert tools[3].event.output == tool_success({"city": "Oslo", "temp": 21})
    assert [(r.call_id, r.output) for r in outcome.tool_calls] == [
        ("c1", tool_success(5)), ("c2", tool_success({"city": "Oslo", "temp": 21}))
    ]
    assert [m.role for m in rt.read_view().messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert model.requests[1].messages[-1] == ChatMessage.tool(
        '{"city": "Oslo", "temp": 21}', tool_call_id="c2", tool_name="weather"
    )
    assert model.requests[0].tool_names == ("add", "weather")


async def test_tool_failures_are_observed_never_crash_the_turn():
    def explode(**_):
        raise RuntimeError("kaboom")

    model = ScriptedModel.from_replies(
        [
            ScriptedModel.tool_call("explode", {}, call_id="c1"),
            ScriptedModel.tool_call("missing", {"x": 1}, call_id="c2"),
            ScriptedModel.tool_call("bad_output", {}, call_id="c3"),
            "Recovered.",
        ]
    )
    rt = await build(model, tools={"explode": explode, "bad_output": lambda: object()})
    sink = RecordingSink()
    outcome = await rt.run_turn("try", sink=sink)
    completed = [e for e in sink.events if isinstance(e, ToolCallCompleted)]
    assert completed[0].output == tool_failure("RuntimeError: kaboom")
    assert completed[1].output["outcome"]["payload"]["code"] == "unknown_tool"
    assert completed[2].output["outcome"]["payload"]["code"] == "invalid_output"
    assert outcome.ok and outcome.text == "Recovered." and not any(r.ok for r in outcome.tool_calls)
    tool_messages = [m for m in rt.read_view().messages if m.role is ChatRole.TOOL]
    assert tool_messages[0].content == "error: RuntimeError: kaboom"


async def test_model_error_records_turn_error_and_still_commits():
    model = ScriptedModel.from_replies([ScriptedModel.failure("rate limited", text="par")])
    rt = await build(model)
    sink = RecordingSink()
    outcome = await rt.run_turn("hi", sink=sink)
    assert sink.kinds == ["model_request_started", "assistant_prose_delta", "error", "publish"]
    assert sink.events[2] == TurnError("LLM error: rate limited")
    assert (outcome.status, outcome.error, outcome.revision) == (
        TurnStatus.PROVIDER_ERROR, "LLM error: rate limited", 1
    )
    assert rt.read_view().messages == (ChatMessage.user("hi"),)

    # an exhausted script is the same kind of failure
    outcome = await rt.run_turn("again", sink=sink)
    assert outcome.status is TurnStatus.PROVIDER_ERROR
    assert "scripted model has no reply left" in outcome.error


async def test_provider_exceptions_and_retries():
    class Flaky:
        def __init__(self):
            self.calls = 0

        async def stream(self, request):
            self.calls += 1
            yield ModelRetry(0.5, 1, 2, "overloaded")
            yield ModelTextDelta("ok so far")
            raise ConnectionError("socket closed")

    rt = await build(Flaky())
    sink = RecordingSink()
    outcome = await rt.run_turn("hi", sink=sink)
    assert RetryStatus(0.5, 1, 2, "overloaded") in sink.events
    assert outcome.error == "LLM error: socket closed"
    assert sink.kinds[-1] == "publish"


async def test_cycling_script_never_runs_out():
    model = ScriptedModel.from_replies(["a", "b"], cycle=True)
    rt = await build(model)
    texts = [(await rt.run_turn("x")).text for _ in range(3)]
    assert texts == ["a", "b", "a"] and model.remaining is None


async def test_policy_max_turns_caps_a_tool_loop():
    model = ScriptedModel.from_replies([ScriptedModel.tool_call("again")], cycle=True)
    rt = await build(model, tools={"again": lambda: "more"}, policy=SessionPolicy(max_turns=3))
    outcome = await rt.run_turn("loop")
    assert (outcome.status, outcome.requests, len(outcome.tool_calls)) == (TurnStatus.MAX_TURNS, 3, 3)
    assert rt.read_view().messages[-1].role is ChatRole.SYSTEM
    assert rt.revision == 1


async def test_bad_calls_raise_typed_errors():
    rt = await build()
    with pytest.raises(LashRuntimeError, match="no model provider") as err:
        await rt.run_turn("hi")
    assert err.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    rt = await build(ScriptedModel())
    with pytest.raises(LashRuntimeError, match="at least one input") as err:
        await rt.run_turn([])
    assert err.value.code is RuntimeErrorCode.INVALID_INPUT
    with pytest.raises(LashRuntimeError, match="persistent runtime store") as err:
        await rt.drain_queued_work()
    assert err.value.code is RuntimeErrorCode.STORE_COMMIT_FAILED


async def test_concurrent_turns_are_serialised():
    model = ScriptedModel.from_replies(["one two three", "four five six"], chunk_size=2)
    rt = await build(model)
    first, second = await asyncio.gather(rt.run_turn("a"), rt.run_turn("b"))
    assert {first.revision, second.revision} == {1, 2}
    assert [m.content for m in rt.read_view().messages] == ["a", "one two three", "b", "four five six"]


# --- tools and the catalog ------------------------------------------------------------------------


async def test_tool_state_generation_changes_only_when_tools_change():
    model = ScriptedModel.from_replies(["x"], cycle=True)
    rt = await build(model, tools={"a": lambda: 1})
    state = rt.tool_state()
    assert rt.tool_registry_generation() == state.generation == 1
    await rt.run_turn("hi")
    assert rt.tool_registry_generation() == 1 and rt.tool_state() == state

    def b():
        """Second tool.

        More text.
        """

    rt.register_tool("b", b)
    assert rt.tool_registry_generation() == 2
    assert rt.tool_state().names == ("a", "b")
    assert rt.tool_state().get("b").description == "Second tool."
    assert rt.unregister_tool("a") is True
    assert rt.tool_registry_generation() == 3
    assert rt.unregister_tool("a") is False
    assert rt.tool_registry_generation() == 3
    rt.register_tool("b", lambda: 2, replace=True)
    assert rt.tool_registry_generation() == 4


async def test_broken_schema_surfaces_as_catalog_error_and_fails_the_turn():
    model = ScriptedModel.from_replies(["never"])
    rt = await build(model)
    rt.register_tool("bad", lambda: 1, schema={"type": "string"})
    with pytest.raises(LashRuntimeError, match="tool `bad` has an invalid input schema") as err:
        rt.active_tool_catalog()
    assert err.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    assert rt.tool_state().names == ("bad",)  # the state itself is still readable

    sink = RecordingSink()
    with pytest.raises(LashRuntimeError, match="invalid input schema"):
        await rt.run_turn("hi", sink=sink)
    assert sink.kinds == ["model_request_started", "error"]  # no publish: nothing committed
    assert rt.revision == 0 and rt.read_view().messages == ()
    assert model.requests == ()

    rt.register_tool("bad", lambda: 1, replace=True)
    assert (await rt.run_turn("hi")).text == "never"


# --- queued work ----------------------------------------------------------------------------------


async def test_drain_at_idle_runs_one_turn_per_claim():
    qs = store()
    b1 = await qs.enqueue_queued_work(draft("first"))
    b2 = await qs.enqueue_queued_work(draft("second"))
    # earliest_safe_boundary work would join the first turn at its checkpoint; this one waits
    b3 = await qs.enqueue_queued_work(
        draft("alone", delivery=DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, slot=SlotPolicy.EXCLUSIVE)
    )
    model = ScriptedModel.from_replies(["joined answer", "alone answer"])
    rt = await build(model, store=qs)
    sink = RecordingSink()

    assert await rt.drain_queued_work(sink=sink) == 2

    started = [a for a in sink.activities if isinstance(a.event, QueuedWorkStarted)]
    assert [s.event for s in started] == [
        QueuedWorkStarted("idle", (b1.batch_id, b2.batch_id)),
        QueuedWorkStarted("idle", (b3.batch_id,)),
    ]
    assert sink.kinds[0] == "queued_work_started"
    assert sink.kinds.count("publish") == 2
    assert [m.content for m in rt.read_view().messages] == [
        "first", "second", "joined answer", "alone", "alone answer"
    ]
    assert await qs.list_queued_work(SID) == []
    assert rt.revision == 2
    assert await rt.drain_queued_work(sink=sink) == 0


async def test_checkpoint_accepts_earliest_safe_boundary_work_mid_turn():
    qs = store()
    enqueued = []

    async def slow_tool():
        enqueued.append(await qs.enqueue_queued_work(draft("btw, also this")))
        return "done"

    model = ScriptedModel.from_replies([ScriptedModel.tool_call("slow_tool", call_id="c1"), "All handled."])
    rt = await build(model, store=qs, tools={"slow_tool": slow_tool})
    sink = RecordingSink()
    outcome = await rt.run_turn("start", sink=sink)

    batch_id = enqueued[0].batch_id
    i = sink.kinds.index("tool_call_completed")
    assert sink.kinds[i + 1 : i + 4] == ["queued_work_started", "queued_input_accepted", "model_request_started"]
    assert sink.events[i + 1] == QueuedWorkStarted("active_turn_checkpoint", (batch_id,))
    assert sink.events[i + 2] == QueuedInputAccepted("after_work", (TurnInput.text("btw, also this"),))
    assert model.requests[1].messages[-1] == ChatMessage.user("btw, also this")
    assert outcome.queued_batch_ids == (batch_id,)
    assert await qs.list_queued_work(SID) == []  # completed with the commit
    assert rt.revision == 1


async def test_after_commit_work_waits_for_the_next_idle_drain():
    qs = store()
    enqueued = []

    async def slow_tool():
        enqueued.append(
            await qs.enqueue_queued_work(draft("later", delivery=DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT))
        )
        return "done"

    model = ScriptedModel.from_replies([ScriptedModel.tool_call("slow_tool"), "Finished.", "Now later."])
    rt = await build(model, store=qs, tools={"slow_tool": slow_tool})
    sink = RecordingSink()
    outcome = await rt.run_turn("start", sink=sink)
    assert outcome.queued_batch_ids == ()
    assert "queued_input_accepted" not in sink.kinds
    assert [b.batch_id for b in await qs.list_pending_queued_work(SID)] == [enqueued[0].batch_id]

    sink = RecordingSink()
    assert await rt.drain_queued_work(sink=sink) == 1
    assert sink.events[0] == QueuedWorkStarted("idle", (enqueued[0].batch_id,))
    assert rt.read_view().messages[-2:] == (ChatMessage.user("later"), ChatMessage.assistant("Now later."))
    assert await qs.list_queued_work(SID) == []


async def test_queued_input_before_completion_extends_the_turn():
    qs = store()
    model = ScriptedModel.from_replies(["first", "second"], delay=0.01)
    rt = await build(model, store=qs)
    sink = RecordingSink()
    turn = asyncio.create_task(rt.run_turn("go", sink=sink))
    await asyncio.sleep(0.005)  # the first reply is streaming
    await qs.enqueue_queued_work(draft("wait, one more"))
    outcome = await turn
    assert QueuedInputAccepted("before_completion", (TurnInput.text("wait, one more"),)) in sink.events
    assert (outcome.text, outcome.requests) == ("second", 2)


async def test_failed_turn_abandons_its_claim():
    qs = store()
    batch = await qs.enqueue_queued_work(draft("hello"))
    rt = await build(ScriptedModel.from_replies(["hi"]), store=qs)
    rt.register_tool("bad", lambda: 1, schema=["not", "a", "schema"])
    with pytest.raises(LashRuntimeError, match="invalid input schema"):
        await rt.drain_queued_work()
    assert [b.batch_id for b in await qs.list_pending_queued_work(SID)] == [batch.batch_id]
    assert rt.revision == 0

    rt.unregister_tool("bad")
    assert await rt.drain_queued_work() == 1
    assert await qs.list_queued_work(SID) == []


async def test_cancelled_turn_abandons_its_claim():
    qs = store()
    batch = await qs.enqueue_queued_work(draft("hello"))
    rt = await build(ScriptedModel.from_replies(["a long streamed reply"], chunk_size=1, delay=0.01), store=qs)
    drain = asyncio.create_task(rt.drain_queued_work())
    await asyncio.sleep(0.03)
    assert await qs.list_pending_queued_work(SID) == []  # claimed while the turn runs
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drain
    assert [b.batch_id for b in await qs.list_pending_queued_work(SID)] == [batch.batch_id]
    assert rt.revision == 0


async def test_store_failure_at_a_checkpoint_fails_the_turn():
    class BrokenStore(InMemoryQueueStore):
        async def claim_ready_queued_work(self, *args, **kwargs):
            raise OSError("disk gone")

    rt = await build(ScriptedModel.from_replies(["hi"]), store=BrokenStore(clock_ms=lambda: NOW_MS))
    sink = RecordingSink()
    with pytest.raises(LashRuntimeError, match="disk gone") as err:
        await rt.run_turn("x", sink=sink)
    assert err.value.code is RuntimeErrorCode.STORE_COMMIT_FAILED
    assert sink.events[-1] == TurnError("disk gone") and not sink.publishes


# --- the poke and the worker ----------------------------------------------------------------------


async def test_poke_coalesces_and_is_never_lost():
    poke = QueuedWorkPoke()
    poke.poke("a")
    poke.poke_session(SID, "b")
    assert poke.pending
    assert await poke.wait() == ("a", f"b ({SID})")
    assert not poke.pending and poke.pokes == 2

    waiter = asyncio.create_task(poke.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    threading.Thread(target=poke.poke, args=("from a thread",)).start()
    assert await asyncio.wait_for(waiter, 1) == ("from a thread",)


async def test_queue_worker_drains_on_poke_until_stopped():
    qs = store()
    model = ScriptedModel.from_replies(["one", "two"])
    rt = await build(model, store=qs)
    sink = RecordingSink()
    stop = asyncio.Event()
    worker = asyncio.create_task(rt.run_queue_worker(sink, stop_event=stop, poll_interval=None))
    await asyncio.sleep(0.01)
    assert rt.revision == 0

    for text in ("first", "second"):
        await qs.enqueue_queued_work(draft(text, slot=SlotPolicy.EXCLUSIVE))
        rt.queued_work_poke.poke("queued_turn_input")
        for _ in range(100):
            await asyncio.sleep(0.005)
            if await qs.list_queued_work(SID) == []:
                break
    stop.set()
    assert await asyncio.wait_for(worker, 1) == 2
    assert [m.content for m in rt.read_view().messages] == ["first", "one", "second", "two"]
    assert sink.kinds.count("publish") == 2


# --- values too deep or too large to encode (issue 6, fault 1) -----------------------------------


UNENCODABLE = {name: make for name, (make, _) in BAD_VALUES.items()}


@pytest.mark.parametrize("kind", sorted(UNENCODABLE))
async def test_a_tool_returning_an_unencodable_value_fails_that_call_and_the_turn_commits(kind):
    from lash_core import RuntimeHandle, SessionCursor, encode_json

    model = ScriptedModel.from_replies([ScriptedModel.tool_call("bad", {}, call_id="c1"), "Carried on."])
    rt = await build(model, tools={"bad": lambda: UNENCODABLE[kind]()})
    handle = RuntimeHandle(rt)
    outcome = await handle.run_turn("go")
    assert outcome.ok and outcome.text == "Carried on." and outcome.revision == 1
    events = handle.resume_session_observation(SessionCursor.new(SID, 0, 0)).events
    types = [e.payload.activity.event.type if e.type == "turn_activity" else e.type for e in events]
    assert types.index("tool_call_started") + 1 == types.index("tool_call_completed")
    assert types[-1] == "committed"
    completed = next(e.payload.activity.event for e in events if types[events.index(e)] == "tool_call_completed")
    assert completed.output["outcome"]["status"] == "failure"
    assert completed.output["outcome"]["payload"]["code"] == "invalid_output"
    for event in events:  # everything the turn recorded travels on the wire
        encode_json(event.to_dict())
    tool_message = next(m for m in rt.read_view().messages if m.role is ChatRole.TOOL)
    assert tool_message.content.startswith("error: tool `bad` returned a value that is not JSON")


@pytest.mark.parametrize("kind", sorted(UNENCODABLE))
async def test_tool_arguments_that_are_not_json_fail_that_call_without_running_it(kind):
    from lash_core import RuntimeHandle, SessionCursor, encode_json

    ran = []
    model = ScriptedModel.from_replies(
        [
            # two calls in one response: the bad one fails, the good one runs
            ScriptedReply(tool_calls=(ModelToolCall("c1", "t", UNENCODABLE[kind]()), ModelToolCall("c2", "t", {"n": 2}))),
            "Both handled.",
        ]
    )
    rt = await build(model, tools={"t": lambda **kw: ran.append(kw) or "ok"})
    handle = RuntimeHandle(rt)
    outcome = await handle.run_turn("go")
    assert outcome.ok and outcome.text == "Both handled."
    assert ran == [{"n": 2}]
    events = handle.resume_session_observation(SessionCursor.new(SID, 0, 0)).events
    tool_events = [
        e.payload.activity.event
        for e in events
        if e.type == "turn_activity" and e.payload.activity.event.type.startswith("tool_call")
    ]
    assert [(e.type, e.call_id) for e in tool_events] == [
        ("tool_call_started", "c1"), ("tool_call_completed", "c1"),
        ("tool_call_started", "c2"), ("tool_call_completed", "c2"),
    ]
    assert tool_events[0].args is None and tool_events[1].args is None
    failure = tool_events[1].output["outcome"]
    assert failure["status"] == "failure" and failure["payload"]["code"] == "invalid_output"
    assert "arguments that are not JSON" in failure["payload"]["message"]
    assert tool_events[3].output == tool_success("ok")
    for event in events:
        encode_json(event.to_dict())


async def test_a_tool_error_with_an_enormous_message_is_cut():
    def shout():
        raise ValueError("x" * 1_000_000)

    model = ScriptedModel.from_replies([ScriptedModel.tool_call("shout", {}, call_id="c1"), "ok"])
    rt = await build(model, tools={"shout": shout})
    sink = RecordingSink()
    await rt.run_turn("go", sink=sink)
    completed = next(e for e in sink.events if isinstance(e, ToolCallCompleted))
    message = completed.output["outcome"]["payload"]["message"]
    assert message.startswith("ValueError: xxx") and len(message) <= 4000


# --- outside text that is not UTF-8, and values whose own methods fail -------------------------------


async def test_a_tool_output_holding_a_lone_surrogate_fails_that_call_and_the_turn_commits():
    from lash_core import RuntimeHandle, SessionCursor, encode_json

    for output in ("file-\udcff.txt", {"k\ud800": 1}):
        model = ScriptedModel.from_replies([ScriptedModel.tool_call("ls", {}, call_id="c1"), "done"])
        rt = await build(model, tools={"ls": lambda output=output: output})
        handle = RuntimeHandle(rt)
        outcome = await handle.run_turn("list")
        assert outcome.ok and outcome.text == "done"
        events = handle.resume_session_observation(SessionCursor.new(SID, 0, 0)).events
        completed = [e.payload.activity.event for e in events if e.type == "turn_activity" and e.payload.activity.event.type == "tool_call_completed"]
        assert completed[0].output["outcome"]["payload"]["code"] == "invalid_output"
        assert "not_utf8" in completed[0].output["outcome"]["payload"]["message"]
        for event in events:
            encode_json(event.to_dict()).encode("utf-8")


async def test_model_text_with_lone_surrogates_is_repaired_and_bad_ids_are_a_provider_error():
    from lash_core import RuntimeHandle, SessionCursor, encode_json

    model = ScriptedModel.from_replies([[ModelTextDelta("caf\udce9 "), ModelTextDelta("ok")]])
    rt = await build(model)
    handle = RuntimeHandle(rt)
    outcome = await handle.run_turn("hi")
    assert outcome.ok and outcome.text == "caf\ufffd ok"
    for event in handle.resume_session_observation(SessionCursor.new(SID, 0, 0)).events:
        encode_json(event.to_dict()).encode("utf-8")
    with pytest.raises(ValueError, match="UTF-8"):
        ModelToolCall("c1", "bad\udcffname", {})

    class Provider:
        async def stream(self, request):
            yield ModelTextDelta("partial ")
            yield ModelToolCall("c\ud800", "t", {})  # raises inside the provider: its failure

    rt = await build(Provider())
    outcome = await rt.run_turn("hi")
    assert outcome.status is TurnStatus.PROVIDER_ERROR and "UTF-8" in outcome.error


async def test_a_provider_error_whose_message_cannot_be_read_still_commits():
    class Unreadable(Exception):
        def __str__(self):
            raise RuntimeError("no message")

    class Provider:
        async def stream(self, request):
            raise Unreadable()
            yield  # pragma: no cover

    rt = await build(Provider())
    outcome = await rt.run_turn("hi")
    assert outcome.status is TurnStatus.PROVIDER_ERROR and "message unavailable" in outcome.error


async def test_a_tool_value_whose_own_methods_fail_is_an_invalid_output():
    class Broken(dict):
        def items(self):
            raise ZeroDivisionError("boom")

        def keys(self):
            raise ZeroDivisionError("boom")

    model = ScriptedModel.from_replies([ScriptedModel.tool_call("t", {}, call_id="c1"), "ok"])
    rt = await build(model, tools={"t": lambda: Broken(a=1)})
    sink = RecordingSink()
    outcome = await rt.run_turn("go", sink=sink)
    assert outcome.ok
    completed = next(e for e in sink.events if isinstance(e, ToolCallCompleted))
    assert completed.output["outcome"]["payload"]["code"] == "invalid_output"


def test_retry_waits_must_be_finite_f64():
    with pytest.raises(ValueError, match="wait_seconds"):
        ModelRetry(10**400, 1, 3, "r")
