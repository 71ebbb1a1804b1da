"""The pure turn machine, driven input by input with the whole state asserted after each step."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lash_core._errors import LashError, RuntimeErrorCode
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
from lash_core._runtime import (
    TURN_TRANSITIONS,
    AbortTurn,
    CallTool,
    ChatMessage,
    ChatRole,
    Checkpoint,
    CheckpointKind,
    CheckpointResolved,
    CommitTurn,
    Emit,
    FailTurn,
    IllegalTurnInput,
    ModelError,
    ModelReasoningDelta,
    ModelResponseEnded,
    ModelRetry,
    ModelTextDelta,
    ModelToolCall,
    ModelUsage,
    RequestModel,
    StartTurn,
    ToolCall,
    ToolCallRecord,
    ToolResult,
    TurnMachine,
    TurnMachineSnapshot,
    TurnState,
    TurnStatus,
    tool_failure,
    tool_success,
)
from lash_core._runtime._machine import EMPTY_RESPONSE_MESSAGE, _HANDLERS

HELLO = TurnInput.text("hello")
USER_HELLO = ChatMessage.user("hello")


def id_factory():
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


def machine(**kwargs) -> TurnMachine:
    kwargs.setdefault("new_id", id_factory())
    return TurnMachine(**kwargs)


def emitted(outputs):
    """(event, correlation_id) of each Emit, in order."""
    return [(o.activity.event, o.activity.correlation_id) for o in outputs if isinstance(o, Emit)]


def requests(outputs):
    return [o for o in outputs if not isinstance(o, Emit)]


def snapshot(**overrides) -> TurnMachineSnapshot:
    base = dict(
        state=TurnState.NOT_STARTED,
        protocol_iteration=0,
        requests=0,
        messages=(),
        usage=TokenUsage(),
        current_call_id=None,
        queued_call_ids=(),
        checkpoint=None,
        tool_calls=(),
        queued_batch_ids=(),
    )
    base.update(overrides)
    return TurnMachineSnapshot(**base)


# --- the table ------------------------------------------------------------------------------------


def test_every_listed_input_has_a_handler_and_terminal_states_take_nothing():
    for state, moves in TURN_TRANSITIONS.items():
        for input_type, targets in moves.items():
            assert input_type in _HANDLERS
            assert targets <= set(TurnState)
    assert TURN_TRANSITIONS[TurnState.FINISHED] == {}
    assert TURN_TRANSITIONS[TurnState.ABORTED] == {}
    assert set(TURN_TRANSITIONS) == set(TurnState)


# --- text only ------------------------------------------------------------------------------------


def test_text_only_turn_step_by_step():
    prior = (ChatMessage.user("earlier"), ChatMessage.assistant("before"))
    m = machine(history=prior, session_usage=TokenUsage(input_tokens=5, output_tokens=5))
    assert m.snapshot() == snapshot()

    out = m.send(StartTurn([HELLO]))
    assert emitted(out) == [(ModelRequestStarted(0), "id-2")]
    assert requests(out) == [RequestModel(0, prior + (USER_HELLO,))]
    assert m.snapshot() == snapshot(state=TurnState.AWAITING_MODEL, requests=1, messages=(USER_HELLO,))

    out1 = m.send(ModelTextDelta("Hel"))
    out2 = m.send(ModelTextDelta("lo"))
    assert emitted(out1) == [(AssistantProseDelta("Hel"), "id-3")]
    assert emitted(out2) == [(AssistantProseDelta("lo"), "id-3")]  # one block, one correlation
    assert requests(out1) == requests(out2) == []

    usage = TokenUsage(input_tokens=10, output_tokens=2)
    out = m.send(ModelUsage(usage))
    assert [e for e, _ in emitted(out)] == [
        Usage(0, usage, TokenUsage(input_tokens=15, output_tokens=7))
    ]
    assert m.snapshot() == snapshot(
        state=TurnState.AWAITING_MODEL, requests=1, messages=(USER_HELLO,), usage=usage
    )

    out = m.send(ModelResponseEnded())
    assert out == [Checkpoint(CheckpointKind.BEFORE_COMPLETION, 0)]
    answer = ChatMessage.assistant("Hello")
    assert m.snapshot() == snapshot(
        state=TurnState.AWAITING_CHECKPOINT,
        requests=1,
        messages=(USER_HELLO, answer),
        usage=usage,
        checkpoint=CheckpointKind.BEFORE_COMPLETION,
    )

    out = m.send(CheckpointResolved())
    assert out == [
        CommitTurn(
            messages=(USER_HELLO, answer),
            usage=usage,
            text="Hello",
            status=TurnStatus.FINISHED,
            requests=1,
            tool_calls=(),
            queued_batch_ids=(),
        )
    ]
    assert m.snapshot() == snapshot(
        state=TurnState.FINISHED, requests=1, messages=(USER_HELLO, answer), usage=usage
    )


def test_activity_ids_are_unique_and_other_events_are_independent():
    m = TurnMachine()
    outs = m.send(StartTurn([HELLO])) + m.send(ModelTextDelta("a")) + m.send(ModelUsage(TokenUsage()))
    activities = [o.activity for o in outs if isinstance(o, Emit)]
    assert len({a.id for a in activities}) == 3
    assert len({a.correlation_id for a in activities}) == 3


def test_reasoning_has_its_own_correlation_and_lands_in_the_message():
    m = machine()
    m.send(StartTurn([HELLO]))
    r1 = emitted(m.send(ModelReasoningDelta("think ")))
    t1 = emitted(m.send(ModelTextDelta("answer")))
    r2 = emitted(m.send(ModelReasoningDelta("more")))
    assert r1[0][0] == ReasoningDelta("think ") and r2[0][0] == ReasoningDelta("more")
    assert r1[0][1] == r2[0][1] != t1[0][1]
    m.send(ModelResponseEnded())
    assert m.snapshot().messages[-1] == ChatMessage.assistant("answer", reasoning="think more")


def test_reasoning_only_response_is_an_answer():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelReasoningDelta("just thinking"))
    assert m.send(ModelResponseEnded()) == [Checkpoint(CheckpointKind.BEFORE_COMPLETION, 0)]
    (commit,) = m.send(CheckpointResolved())
    assert commit.status is TurnStatus.FINISHED and commit.text == ""


def test_empty_deltas_emit_nothing():
    m = machine()
    m.send(StartTurn([HELLO]))
    assert m.send(ModelTextDelta("")) == []
    assert m.send(ModelReasoningDelta("")) == []


# --- tools ----------------------------------------------------------------------------------------


def test_tool_round_trip_with_correlation_ids():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelTextDelta("Checking."))
    assert m.send(ModelToolCall("c1", "add", {"a": 1, "b": 2})) == []
    assert m.send(ModelToolCall("c2", "mul", {"a": 3, "b": 4})) == []

    out = m.send(ModelResponseEnded())
    assert emitted(out) == [(ToolCallStarted("c1", "add", {"a": 1, "b": 2}), "tool:c1")]
    assert requests(out) == [CallTool("c1", "add", {"a": 1, "b": 2})]
    calls = (ToolCall("c1", "add", {"a": 1, "b": 2}), ToolCall("c2", "mul", {"a": 3, "b": 4}))
    asked = ChatMessage.assistant("Checking.", tool_calls=calls)
    assert m.snapshot() == snapshot(
        state=TurnState.AWAITING_TOOL,
        requests=1,
        messages=(USER_HELLO, asked),
        current_call_id="c1",
        queued_call_ids=("c2",),
    )

    out = m.send(ToolResult("c1", tool_success(3), 7))
    assert emitted(out) == [
        (ToolCallCompleted("c1", "add", {"a": 1, "b": 2}, tool_success(3), 7), "tool:c1"),
        (ToolCallStarted("c2", "mul", {"a": 3, "b": 4}), "tool:c2"),
    ]
    assert requests(out) == [CallTool("c2", "mul", {"a": 3, "b": 4})]

    out = m.send(ToolResult("c2", tool_success({"product": 12}), 1))
    assert emitted(out) == [
        (ToolCallCompleted("c2", "mul", {"a": 3, "b": 4}, tool_success({"product": 12}), 1), "tool:c2")
    ]
    assert requests(out) == [Checkpoint(CheckpointKind.AFTER_WORK, 0)]
    tool_messages = (
        ChatMessage.tool("3", tool_call_id="c1", tool_name="add"),
        ChatMessage.tool('{"product": 12}', tool_call_id="c2", tool_name="mul"),
    )
    records = (
        ToolCallRecord("c1", "add", {"a": 1, "b": 2}, tool_success(3), 7),
        ToolCallRecord("c2", "mul", {"a": 3, "b": 4}, tool_success({"product": 12}), 1),
    )
    assert m.snapshot() == snapshot(
        state=TurnState.AWAITING_CHECKPOINT,
        requests=1,
        messages=(USER_HELLO, asked) + tool_messages,
        checkpoint=CheckpointKind.AFTER_WORK,
        tool_calls=records,
    )

    out = m.send(CheckpointResolved())
    assert emitted(out)[0][0] == ModelRequestStarted(1)
    assert requests(out) == [RequestModel(1, (USER_HELLO, asked) + tool_messages)]
    assert m.protocol_iteration == 1

    m.send(ModelTextDelta("3 and 12"))
    m.send(ModelResponseEnded())
    (commit,) = m.send(CheckpointResolved())
    assert commit.tool_calls == records
    assert commit.requests == 2
    assert commit.text == "3 and 12"
    assert commit.messages[-1] == ChatMessage.assistant("3 and 12")
    assert all(record.ok for record in commit.tool_calls)


def test_tool_error_is_shown_to_the_model_and_the_turn_goes_on():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "boom", {}))
    m.send(ModelResponseEnded())
    failure = tool_failure("ValueError: nope")
    out = m.send(ToolResult("c1", failure, 0))
    assert emitted(out)[0][0] == ToolCallCompleted("c1", "boom", {}, failure, 0)
    assert m.snapshot().messages[-1] == ChatMessage.tool("error: ValueError: nope", tool_call_id="c1", tool_name="boom")
    assert m.snapshot().tool_calls[0].ok is False
    assert m.state is TurnState.AWAITING_CHECKPOINT


def test_empty_answer_after_a_tool_result_finishes_the_turn():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "noop", {}))
    m.send(ModelResponseEnded())
    m.send(ToolResult("c1", tool_success(None), 0))
    m.send(CheckpointResolved())
    assert m.send(ModelResponseEnded()) == [Checkpoint(CheckpointKind.BEFORE_COMPLETION, 1)]
    (commit,) = m.send(CheckpointResolved())
    assert (commit.status, commit.text) == (TurnStatus.FINISHED, "")


def test_duplicate_tool_call_ids_are_a_provider_error():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "a", {}))
    m.send(ModelToolCall("c1", "b", {}))
    out = m.send(ModelResponseEnded())
    assert [e for e, _ in emitted(out)] == [TurnError("LLM error: duplicate tool call id `c1`")]
    assert requests(out)[0].status is TurnStatus.PROVIDER_ERROR


# --- failures -------------------------------------------------------------------------------------


def test_model_error_records_turn_error_and_commits_as_provider_error():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelTextDelta("partial"))
    out = m.send(ModelError("rate limited"))
    assert [e for e, _ in emitted(out)] == [TurnError("LLM error: rate limited")]
    assert requests(out) == [
        CommitTurn(
            messages=(USER_HELLO,),  # the partial response is not kept
            usage=TokenUsage(),
            text="",
            status=TurnStatus.PROVIDER_ERROR,
            requests=1,
            tool_calls=(),
            queued_batch_ids=(),
            error="LLM error: rate limited",
        )
    ]
    assert m.snapshot() == snapshot(state=TurnState.FINISHED, requests=1, messages=(USER_HELLO,))


def test_empty_response_is_a_provider_error():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelTextDelta("   "))
    out = m.send(ModelResponseEnded())
    assert [e for e, _ in emitted(out)] == [TurnError(EMPTY_RESPONSE_MESSAGE)]
    assert requests(out)[0].status is TurnStatus.PROVIDER_ERROR


def test_retry_drops_what_the_attempt_streamed():
    m = machine()
    m.send(StartTurn([HELLO]))
    first = emitted(m.send(ModelTextDelta("garbled")))
    out = m.send(ModelRetry(1.5, 1, 3, "overloaded"))
    assert [e for e, _ in emitted(out)] == [RetryStatus(1.5, 1, 3, "overloaded")]
    second = emitted(m.send(ModelTextDelta("clean")))
    assert first[0][1] != second[0][1]  # a new attempt is a new text block
    m.send(ModelResponseEnded())
    assert m.snapshot().messages[-1] == ChatMessage.assistant("clean")


def test_abort_fails_the_turn_without_a_commit():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "t", {}))
    m.send(ModelResponseEnded())
    out = m.send(AbortTurn(RuntimeErrorCode.STORE_COMMIT_FAILED, "store down"))
    assert [e for e, _ in emitted(out)] == [TurnError("store down")]
    assert requests(out) == [FailTurn(RuntimeErrorCode.STORE_COMMIT_FAILED, "store down")]
    assert m.state is TurnState.ABORTED
    assert m.snapshot().current_call_id is None


# --- the iteration cap ----------------------------------------------------------------------------


def test_iteration_cap_stops_a_tool_loop():
    m = machine(max_protocol_iterations=2)
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "again", {}))
    m.send(ModelResponseEnded())
    assert requests(m.send(ToolResult("c1", tool_success(1), 0))) == [Checkpoint(CheckpointKind.AFTER_WORK, 0)]
    m.send(CheckpointResolved())
    m.send(ModelToolCall("c2", "again", {}))
    m.send(ModelResponseEnded())
    out = m.send(ToolResult("c2", tool_success(2), 0))
    (commit,) = requests(out)  # no checkpoint, no third request
    assert commit.status is TurnStatus.MAX_TURNS
    assert commit.requests == 2
    assert commit.messages[-1] == ChatMessage(
        ChatRole.SYSTEM, "Turn limit reached (2) before a final assistant response."
    )
    assert m.state is TurnState.FINISHED


def test_answer_at_the_cap_commits_without_a_checkpoint():
    m = machine(max_protocol_iterations=1)
    m.send(StartTurn([HELLO]))
    m.send(ModelTextDelta("done"))
    (commit,) = m.send(ModelResponseEnded())
    assert isinstance(commit, CommitTurn) and commit.status is TurnStatus.FINISHED


def test_cap_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        TurnMachine(max_protocol_iterations=0)


# --- queued input ---------------------------------------------------------------------------------


def test_idle_claim_batches_open_the_turn():
    m = machine()
    out = m.send(StartTurn([HELLO, TurnInput.text("and more")], ("b1", "b2")))
    assert [e for e, _ in emitted(out)] == [QueuedWorkStarted("idle", ("b1", "b2")), ModelRequestStarted(0)]
    assert m.snapshot().messages == (USER_HELLO, ChatMessage.user("and more"))
    assert m.snapshot().queued_batch_ids == ("b1", "b2")


def test_checkpoint_between_iterations_accepts_queued_input():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "t", {}))
    m.send(ModelResponseEnded())
    out = m.send(ToolResult("c1", tool_success("ok"), 0))
    assert requests(out) == [Checkpoint(CheckpointKind.AFTER_WORK, 0)]

    extra = TurnInput.text("also this")
    out = m.send(CheckpointResolved([extra], ["b9"]))
    assert [e for e, _ in emitted(out)] == [
        QueuedWorkStarted("active_turn_checkpoint", ("b9",)),
        QueuedInputAccepted("after_work", (extra,)),
        ModelRequestStarted(1),
    ]
    (request,) = requests(out)
    assert request.protocol_iteration == 1
    assert request.messages[-1] == ChatMessage.user("also this")
    assert m.snapshot().queued_batch_ids == ("b9",)


def test_queued_input_before_completion_continues_the_turn():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelTextDelta("first answer"))
    m.send(ModelResponseEnded())
    extra = TurnInput.text("one more thing")
    out = m.send(CheckpointResolved([extra], ["b1"]))
    assert [e for e, _ in emitted(out)][1] == QueuedInputAccepted("before_completion", (extra,))
    assert requests(out)[0].messages[-2:] == (ChatMessage.assistant("first answer"), ChatMessage.user("one more thing"))
    m.send(ModelTextDelta("second answer"))
    m.send(ModelResponseEnded())
    (commit,) = m.send(CheckpointResolved())
    assert commit.text == "second answer" and commit.queued_batch_ids == ("b1",) and commit.requests == 2


# --- illegal input --------------------------------------------------------------------------------


def test_illegal_inputs_raise_and_leave_the_machine_unchanged():
    m = machine()
    with pytest.raises(IllegalTurnInput, match="`not_started` cannot take `ModelTextDelta`"):
        m.send(ModelTextDelta("early"))
    assert m.snapshot() == snapshot()

    m.send(StartTurn([HELLO]))
    before = m.snapshot()
    for bad in (StartTurn([HELLO]), ToolResult("c1", tool_success(1)), CheckpointResolved()):
        with pytest.raises(IllegalTurnInput) as err:
            m.send(bad)
        assert err.value.state is TurnState.AWAITING_MODEL
        assert m.snapshot() == before

    m.send(ModelToolCall("c1", "t", {}))
    m.send(ModelResponseEnded())
    before = m.snapshot()
    with pytest.raises(IllegalTurnInput, match="waiting on call `c1`, got `c2`"):
        m.send(ToolResult("c2", tool_success(1)))
    assert m.snapshot() == before

    m.send(ToolResult("c1", tool_success(1)))
    before = m.snapshot()
    with pytest.raises(IllegalTurnInput, match="batches delivered without inputs"):
        m.send(CheckpointResolved(batch_ids=["b1"]))
    assert m.snapshot() == before

    m.send(AbortTurn(RuntimeErrorCode.MODEL_FAILED, "stop"))
    before = m.snapshot()
    with pytest.raises(IllegalTurnInput, match="`aborted` cannot take `AbortTurn`"):
        m.send(AbortTurn(RuntimeErrorCode.MODEL_FAILED, "again"))
    assert m.snapshot() == before
    assert isinstance(IllegalTurnInput(TurnState.ABORTED, "x"), LashError)


def test_inputs_validate_when_built():
    with pytest.raises(ValueError, match="at least one input"):
        StartTurn([])
    with pytest.raises(TypeError, match="TurnInput"):
        StartTurn(["raw string"])
    # arguments are the model's data: not JSON fails that call inside the turn, not the stream
    assert ModelToolCall("c1", "t", {"x": object()}).name == "t"
    with pytest.raises(ValueError, match="must not be empty"):
        ModelToolCall("", "t", {})
    with pytest.raises(ValueError, match="wait_seconds"):
        ModelRetry(-1, 1, 2, "r")
    with pytest.raises(ValueError, match="duration_ms"):
        ToolResult("c1", {}, -5)
    with pytest.raises(ValueError, match="duration_ms"):
        ToolResult("c1", {}, 2**64)


# --- property: any input sequence either advances or raises without a trace ------------------------

_INPUTS = st.sampled_from(
    [
        StartTurn([HELLO]),
        ModelTextDelta("t"),
        ModelReasoningDelta("r"),
        ModelToolCall("c1", "t", {}),
        ModelToolCall("c2", "t", {}),
        ModelUsage(TokenUsage(input_tokens=1)),
        ModelRetry(0, 1, 2, "again"),
        ModelError("down"),
        ModelResponseEnded(),
        ToolResult("c1", tool_success(1)),
        ToolResult("c2", tool_success(2)),
        CheckpointResolved(),
        CheckpointResolved([TurnInput.text("q")], ["b"]),
        AbortTurn(RuntimeErrorCode.MODEL_FAILED, "x"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_INPUTS, max_size=40), st.integers(min_value=1, max_value=4))
def test_random_input_sequences_keep_the_machine_consistent(inputs, cap):
    m = TurnMachine(max_protocol_iterations=cap)
    activity_ids: set[str] = set()
    finals = 0
    for event in inputs:
        before = m.snapshot()
        try:
            out = m.send(event)
        except IllegalTurnInput:
            assert m.snapshot() == before
            continue
        for output in out:
            if isinstance(output, Emit):
                assert output.activity.id not in activity_ids
                activity_ids.add(output.activity.id)
            if isinstance(output, (CommitTurn, FailTurn)):
                finals += 1
        snap = m.snapshot()
        assert snap.requests <= cap
        assert snap.protocol_iteration == max(0, snap.requests - 1)
    assert finals == (1 if m.state in (TurnState.FINISHED, TurnState.ABORTED) else 0)


def test_a_driver_result_that_is_not_json_completes_the_call_as_invalid_output():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "deep", {}))
    m.send(ModelResponseEnded())
    out = m.send(ToolResult("c1", tool_success(deep), 3))
    completed = emitted(out)[0][0]
    assert isinstance(completed, ToolCallCompleted) and completed.duration_ms == 3
    assert completed.output["outcome"]["payload"]["code"] == "invalid_output"
    assert "too_deep" in completed.output["outcome"]["payload"]["message"]
    assert m.snapshot().tool_calls[0].ok is False
    assert m.state is TurnState.AWAITING_CHECKPOINT


def test_tool_arguments_that_are_not_json_complete_at_once_without_a_call_tool_request():
    m = machine()
    m.send(StartTurn([HELLO]))
    m.send(ModelToolCall("c1", "t", {"x": float("nan")}))
    out = m.send(ModelResponseEnded())
    assert [type(e).__name__ for e, _ in emitted(out)] == ["ToolCallStarted", "ToolCallCompleted"]
    assert not any(isinstance(r, CallTool) for r in requests(out))
    assert requests(out) == [Checkpoint(CheckpointKind.AFTER_WORK, 0)]
    started, completed = (e for e, _ in emitted(out))
    assert started.args is None and completed.output["outcome"]["payload"]["code"] == "invalid_output"


def test_id_lists_refuse_a_bare_string():
    from lash_core._runtime import RuntimeSessionState

    with pytest.raises(ValueError, match="queued_batch_ids"):
        StartTurn([HELLO], "qwb-1")
    with pytest.raises(ValueError, match="batch_ids"):
        CheckpointResolved([HELLO], "qwb-1")
    with pytest.raises(ValueError, match="agent_frames"):
        RuntimeSessionState("s", None, 0, "frame", "frame")
    assert StartTurn([HELLO], iter(["qwb-1"])).queued_batch_ids == ("qwb-1",)


def test_many_tool_calls_are_checked_for_duplicates_in_one_pass():
    m = machine()
    m.send(StartTurn([HELLO]))
    for i in range(20_000):
        m.send(ModelToolCall(f"c{i}", "t", {}))
    m.send(ModelToolCall("c7", "t", {}))
    (commit_or_error, *_rest) = [o for o in m.send(ModelResponseEnded())]
    assert m.state is TurnState.FINISHED  # the duplicate `c7` is a provider error
