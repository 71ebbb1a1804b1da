"""lash_nb.remote: follow a runtime that lives in another, real Jupyter kernel.

The slow tests start kernel A with ``PeerKernel`` (one kernel for the module, one more for the
shutdown test), run a runtime there and follow it from this process through ``KernelSource``:
replay after a dropped connection, a gap past retention, errors by type, a monitor over it. The
fast tests drive kernel A's half (``serve_request``) in this process and check the arguments."""

from __future__ import annotations

import ast
import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lash_core import (
    AssistantProseDelta,
    GapResume,
    InvalidObservationError,
    LiveReplayGapReason,
    LiveReplayStoreFailure,
    MalformedCursorError,
    Reconnected,
    Replayed,
    RetryPolicy,
    SessionCursor,
    SessionFollower,
    SessionObservationEvent,
    StoreSource,
    TurnActivity,
    WrongSessionError,
)
from lash_core.testing import Scenario
from lash_nb import MonitorState, PeerKernel
from lash_nb.remote import (
    MAX_HANDLE_EXPR_CHARS,
    KernelHandleError,
    KernelSource,
    KernelSourceError,
    serve_request,
)
from lash_nb.remote import _handle_code

TRIMMED = LiveReplayGapReason.TRIMMED
FAST = RetryPolicy(initial_delay_s=0.02, max_delay_s=0.1)

#: Kernel A's side of the slow tests: sessions by name, each a memory scenario that keeps 16 events.
KERNEL_A_SETUP = """
from lash_core.testing import Scenario
from lash_core import TurnActivity, AssistantProseDelta, StoreSource, InMemoryLiveReplayStore

H = {}
SCENARIOS = {}

async def open_session(name, max_events=16):
    scenario = await Scenario.create(backend="memory", max_events=max_events, session_id=name)
    SCENARIOS[name] = scenario
    H[name] = scenario.handle

def deltas(name, n, prefix="d"):
    for i in range(n):
        H[name].record_turn_activity(TurnActivity.independent(AssistantProseDelta(f"{prefix}{i}")))

def tail(name):
    observation = H[name].current_session_observation()
    print(observation.cursor, observation.read_view.turn_index)

class AsyncSource:
    session_id = "async"
    async def current_session_observation(self): ...
    async def resume_session_observation(self, cursor): ...

closed_store = InMemoryLiveReplayStore()
closed_store.close()
broken = StoreSource(closed_store, "broken")
"""


def texts(items):
    return [i.payload.activity.event.text for i in items if isinstance(i, SessionObservationEvent)]


def frame_texts(frame):
    """The texts of the deltas among a history frame's rows, oldest first."""
    return frame[frame["event_type"] == "assistant_prose_delta"]["text"].tolist()


def a_tail(peer, name):
    """Kernel A's tail cursor and turn index of session ``name``."""
    cursor, turn_index = peer.run(f"tail({name!r})").split()
    return SessionCursor(cursor), int(turn_index)


async def items_until(follower, predicate, rounds=40):
    seen = []
    for _ in range(rounds):
        seen.extend(await asyncio.wait_for(follower.next_items(), 15))
        if predicate(seen):
            return seen
    raise AssertionError(f"not reached: {seen!r}")


async def wait_until(predicate, seconds=15.0):
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture(scope="module")
def peer():
    kernel = PeerKernel.start()
    try:
        kernel.run(KERNEL_A_SETUP)
        yield kernel
    finally:
        kernel.shutdown()


# -- following kernel A ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_dropped_connection_replays_while_retained_and_gaps_past_retention(peer):
    peer.run("await open_session('follow')")
    source = KernelSource(peer.connection_file, "H['follow']", timeout_s=10, poll_interval_s=0.02)
    follower = SessionFollower(source, retry=FAST)
    assert source.session_id == follower.session_id == "follow"  # read once from kernel A
    await follower.catch_up()  # an asynchronous source is read at the first await: A's tail
    peer.run("deltas('follow', 3, 'a')")
    first = await items_until(follower, lambda got: len(got) >= 3)
    assert texts(first) == ["a0", "a1", "a2"] and follower.cursor == a_tail(peer, "follow")[0]
    assert follower.connected

    # the connection drops; A goes on; it comes back: what was missed is replayed, once, no gap
    source.drop_connection()
    peer.run("deltas('follow', 4, 'b')")
    reader = asyncio.ensure_future(follower.next_items())
    await wait_until(lambda: source.statistics().failures >= 2)  # the read failed, then retries
    assert not reader.done() and not follower.connected and source.dropped
    source.restore_connection()
    items = [*await asyncio.wait_for(reader, 15)]
    items += await items_until(follower, lambda got: len(texts(items + got)) >= 4)
    assert isinstance(items[0], Reconnected) and items[0].cursor == first[-1].cursor
    assert texts(items) == ["b0", "b1", "b2", "b3"] and follower.gap_count == 0
    assert follower.cursor == a_tail(peer, "follow")[0]

    # dropped again while A appends more than it retains: a gap plus a fresh observation
    before, failures = follower.cursor, source.statistics().failures
    source.drop_connection()
    peer.run("deltas('follow', 40, 'c')")
    reader = asyncio.ensure_future(follower.next_items())
    await wait_until(lambda: source.statistics().failures >= failures + 2)
    source.restore_connection()
    items = await asyncio.wait_for(reader, 15)
    assert [type(i) for i in items] == [Reconnected, GapResume]
    gap = items[1].gap
    assert gap.reason == TRIMMED and gap.requested_cursor == before
    assert gap.missed_events == 40 and follower.gap_count == 1 and list(follower.gaps) == [gap]
    cursor, turn_index = a_tail(peer, "follow")
    assert follower.cursor == gap.latest_cursor == cursor == items[1].observation.cursor
    assert follower.read_view.turn_index == turn_index and follower.read_view.session_id == "follow"
    assert follower.reconnect_count == 2

    # and it follows on from the fresh cursor
    peer.run("deltas('follow', 2, 'd')")
    items = await items_until(follower, lambda got: len(got) >= 2)
    assert texts(items) == ["d0", "d1"] and follower.cursor == a_tail(peer, "follow")[0]
    follower.close()
    await source.aclose()
    assert source.statistics().subscriptions == 0 and not source.statistics().open


@pytest.mark.slow
async def test_a_gap_met_by_a_live_subscription_is_answered_to_the_follower_at_once(peer):
    peer.run("await open_session('kept')")
    source = KernelSource(peer.connection_file, "H['kept']", poll_interval_s=0.02)
    await source.connect()
    follower = SessionFollower(source)
    await follower.catch_up()
    peer.run("deltas('kept', 1, 'a')")
    first = await items_until(follower, lambda got: len(got) >= 1)
    assert texts(first) == ["a0"] and source.statistics().subscriptions == 1
    peer.run("deltas('kept', 40, 'b')")  # the follower holds its subscription; A moves past it
    requests = source.requests
    items = await asyncio.wait_for(follower.next_items(), 15)
    assert [type(i) for i in items] == [GapResume]
    gap = items[0].gap
    assert gap.reason == TRIMMED and gap.requested_cursor == first[0].cursor
    assert follower.gap_count == 1 and follower.connected and not source.statistics().kept_gap
    # one pull met the gap (the subscription ended), the resubscribe took it without asking A
    # again, and one pull subscribed from the fresh cursor
    assert source.requests - requests == 2
    assert follower.cursor == a_tail(peer, "kept")[0]
    peer.run("deltas('kept', 1, 'c')")
    assert texts(await items_until(follower, lambda got: len(got) >= 1)) == ["c0"]
    follower.close()
    source.close()


@pytest.mark.slow
async def test_pulls_are_bounded_and_a_resume_gathers_them(peer):
    peer.run("await open_session('big', max_events=3000)\ndeltas('big', 2500, 'x')")
    source = KernelSource(peer.connection_file, "H['big']")
    start = SessionCursor.new("big", 0, 0)
    requests = source.requests
    replayed = await source.resume_session_observation(start)
    assert isinstance(replayed, Replayed) and len(replayed.events) == 2500
    assert texts(replayed.events) == [f"x{i}" for i in range(2500)]
    assert source.requests - requests == 1 + 3  # describe, then three pulls of at most 1024
    subscribed = await source.subscribe_session_observation(start)
    async with subscribed.subscription as subscription:
        got = []
        while len(got) < 2500:
            got += await asyncio.wait_for(subscription.next_batch(600), 15)
        assert [e.cursor for e in got] == [e.cursor for e in replayed.events]
        assert subscription.next_batch_nowait() == [] and subscription.next_nowait() is None
    assert subscription.closed
    source.close()


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_errors_come_back_typed(peer):
    peer.run("await open_session('errors')")
    file = peer.connection_file
    with pytest.raises(KernelHandleError, match="NameError: name 'nowhere' is not defined"):
        await KernelSource(file, "nowhere").connect()  # its channel closes when it is collected
    with pytest.raises(KernelHandleError, match="it is a dict, which has no current_session"):
        KernelSource(file, "H").session_id  # the blocking read says the same
    async with KernelSource(file, "AsyncSource()") as not_synchronous:
        with pytest.raises(KernelHandleError, match="coroutines: serve a synchronous source"):
            await not_synchronous.current_session_observation()

    source = KernelSource(file, "H['errors']")
    with pytest.raises(MalformedCursorError, match="missing cursor prefix"):
        await source.resume_session_observation("garbage")
    with pytest.raises(WrongSessionError) as wrong:
        await source.subscribe_session_observation(SessionCursor.new("other", 0, 0))
    assert (wrong.value.expected_session_id, wrong.value.actual_session_id) == ("errors", "other")
    # the same errors raised by the handle in kernel A come back as the same classes, by name
    with pytest.raises(MalformedCursorError, match="missing cursor prefix"):
        await source._pull(SessionCursor("garbage"))
    with pytest.raises(WrongSessionError) as wrong:
        await source._pull(SessionCursor.new("other", 0, 0))
    assert (wrong.value.expected_session_id, wrong.value.actual_session_id) == ("errors", "other")
    # a store that fails in kernel A is a store failure here, and the source stays usable
    broken = KernelSource(file, "broken")
    with pytest.raises(LiveReplayStoreFailure, match="the live replay store is closed") as failed:
        await broken.resume_session_observation(SessionCursor.new("broken", 0, 0))
    assert type(failed.value) is LiveReplayStoreFailure
    assert (await source.resume_session_observation(a_tail(peer, "errors")[0])).events == ()
    source.close()
    broken.close()

    # a request in flight (A takes a second to evaluate this handle) when the connection drops
    # is a KernelSourceError at once; a caller's cancellation stays a cancellation
    slow = KernelSource(file, "__import__('time').sleep(1.0) or H['errors']")
    await slow.connect()
    waiting = asyncio.ensure_future(slow.current_session_observation())
    await asyncio.sleep(0.2)
    slow.drop_connection()
    with pytest.raises(KernelSourceError, match="closed while a request waited"):
        await asyncio.wait_for(waiting, 0.5)
    slow.restore_connection()
    waiting = asyncio.ensure_future(slow.current_session_observation())
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await slow.current_session_observation()).cursor == a_tail(peer, "errors")[0]
    slow.close()


@pytest.mark.slow
async def test_a_kernel_that_shut_down_is_a_kernel_source_error():
    other = PeerKernel.start()
    try:
        other.run(KERNEL_A_SETUP + "\nawait open_session('gone')")
        # generous while A is up (a loaded machine is slow to answer); 1 s once nobody answers
        source = KernelSource(other.connection_file, "H['gone']", timeout_s=30.0)
        follower = SessionFollower(source)
        await follower.catch_up()
        cursor = follower.cursor
    finally:
        other.shutdown()
    source.timeout_s = 1.0
    with pytest.raises(KernelSourceError, match="did not answer in 1 s") as err:
        await follower.next_items()  # the channel is still open: nobody answers
    assert err.value.connection_file == other.connection_file
    assert follower.cursor == cursor and not follower.connected  # the resume point is kept
    with pytest.raises(KernelSourceError, match="connection file does not exist"):
        await source.current_session_observation()  # reopening reads the (removed) file
    assert isinstance(err.value, LiveReplayStoreFailure) and source.statistics().failures == 2


# -- a monitor over kernel A ----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_monitor_state_and_a_read_only_monitor_follow_kernel_a(peer):
    from lash_nb import SessionMonitor

    peer.run("await open_session('watched')\nawait H['watched'].run_turn('hi')")
    source = KernelSource(peer.connection_file, "H['watched']", poll_interval_s=0.02)
    state = MonitorState(source, retry=FAST)
    assert state.read_only and "KernelSource, not a RuntimeHandle" in state.read_only_reason
    await state.follower.catch_up()
    assert state.observation.read_view.turn_index == 1  # the summary the wire carries
    peer.run("deltas('watched', 3, 'a')\nawait H['watched'].run_turn('again')")
    while state.event_count < 3 or state.frame()["payload_type"].iloc[-1] != "committed":
        state.apply(await asyncio.wait_for(state.follower.next_items(), 15))
    assert frame_texts(state.frame())[:3] == ["a0", "a1", "a2"]
    cursor, turn_index = a_tail(peer, "watched")
    assert state.cursor == cursor and state.read_view.turn_index == turn_index == 2
    peer.run("deltas('watched', 40, 'b')")  # past retention: the gap goes into the gap log
    while state.gaps == 0:
        state.apply(await asyncio.wait_for(state.follower.next_items(), 15))
    assert state.gap_log[-1].reason == TRIMMED and state.cursor == a_tail(peer, "watched")[0]
    stats = state.statistics()
    assert stats.read_only and stats.gaps == 1 and stats.last_gap == state.gap_log[-1]
    state.disconnect()

    monitor = SessionMonitor(source, controls=True)  # read-only: no controls are built
    assert monitor.read_only and monitor.read_only_note is not None
    assert "Read-only" in monitor.read_only_note.value and "KernelSource" in monitor.read_only_note.value
    assert monitor.enqueue_panel is None and monitor.queue_panel is None and monitor.simulator is None
    assert monitor.state.follower.retry == RetryPolicy()  # rides out outages by default
    await wait_until(lambda: monitor.state.follower.connected)  # its task read A's tail
    peer.run("deltas('watched', 2, '<b>c</b>')")
    await wait_until(lambda: monitor.event_count >= 2)
    monitor.flush()
    assert frame_texts(monitor.frame()) == ["<b>c</b>0", "<b>c</b>1"]
    # the grid holds the text as it is (Perspective shows it as text: tests/browser check that)
    grid_texts = [t for t in monitor.grid.frame()["text"] if isinstance(t, str)]
    assert grid_texts[-2:] == ["<b>c</b>0", "<b>c</b>1"]
    assert monitor.cursor == str(a_tail(peer, "watched")[0]) and monitor.connected
    with pytest.raises(RuntimeError, match="Read-only"):
        await monitor.enqueue("hello")
    with pytest.raises(RuntimeError, match="Read-only"):
        monitor.disconnect("A")
    with pytest.raises(RuntimeError, match="Read-only"):
        await monitor.refresh_processes()
    monitor.stop()
    assert not monitor.connected
    source.close()


@pytest.mark.slow
async def test_a_recorder_records_kernel_a_across_a_dropped_connection(peer, tmp_path):
    from lash_nb.forensics import Recorder

    peer.run("await open_session('recorded')")
    source = KernelSource(peer.connection_file, "H['recorded']", poll_interval_s=0.02)
    log = tmp_path / "recorded.jsonl"
    recorder = Recorder(source, log, cursor=a_tail(peer, "recorded")[0], retry=FAST)
    await recorder.start()
    peer.run("deltas('recorded', 3, 'a')")
    await wait_until(lambda: recorder.statistics().events >= 3)
    failures = source.statistics().failures
    source.drop_connection()
    peer.run("deltas('recorded', 2, 'b')")
    await wait_until(lambda: source.statistics().failures >= failures + 2)
    source.restore_connection()
    await wait_until(lambda: recorder.statistics().events >= 5)
    stats = await recorder.stop()
    assert (stats.events, stats.gaps, stats.reconnects) == (5, 0, 1)
    assert stats.last_cursor == a_tail(peer, "recorded")[0]
    text = log.read_text()
    assert [text.count(f'"{t}"') for t in ("a0", "a1", "a2", "b0", "b1")] == [1] * 5  # once each
    assert text.index('"a2"') < text.index('"b0"')
    source.close()


# -- kernel A's half, in this process (fast) ------------------------------------------------------


def _reply(handle, **request):
    return json.loads(repr(serve_request(handle, json.dumps({"v": 1, **request}))))


async def test_serve_request_answers_bounded_wire_documents():
    s = await Scenario.create(backend="memory")
    handle = s.handle
    start = handle.current_session_observation().cursor
    for i in range(5):
        handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta("x" * 1000 + str(i))))
    assert _reply(handle, op="describe") == {
        "v": 1, "kind": "describe", "session_id": s.session_id, "source": "RuntimeHandle"
    }
    current = _reply(handle, op="current")
    assert current["observation"] == handle.current_session_observation().to_dict()
    reply = _reply(handle, op="resume", cursor=str(start), max_events=2)
    assert [r["type"] for r in reply["rows"]] == ["replay_cursor", "observation", "observation"]
    assert reply["rows"][0]["cursor"] == str(start) and reply["more"] is True
    reply = _reply(handle, op="resume", cursor=str(start), max_events=10, max_chars=1500)
    assert len(reply["rows"]) == 2 and reply["more"] is True  # one event always goes
    reply = _reply(handle, op="resume", cursor=reply["rows"][1]["event"]["cursor"])
    assert len(reply["rows"]) == 5 and reply["more"] is False
    error = _reply(handle, op="resume", cursor="garbage")
    assert error["kind"] == "error" and error["classes"][:2] == ["MalformedCursorError", "SessionCursorError"]
    assert error["fields"] == {"message": "missing cursor prefix"}
    assert _reply(handle, op="nonsense")["kind"] == "error"
    assert _reply(object(), op="describe")["kind"] == "not_a_handle"
    assert json.loads(repr(serve_request(handle, "{not json")))["kind"] == "error"
    # a StoreSource serves too, and a gap travels as a replay_gap row
    store_source = StoreSource(s.store, s.session_id)
    s.store.reconfigure(max_events_per_session=1)
    gap = _reply(store_source, op="resume", cursor=str(start))
    assert [r["type"] for r in gap["rows"]] == ["replay_cursor", "replay_gap"]
    assert gap["rows"][1]["gap"]["reason"] == "trimmed"
    s.close()


def test_arguments_are_checked_before_kernel_a_is_contacted(tmp_path):
    file = tmp_path / "kernel.json"
    for bad in ("1 +", "a) , (b", "x = 1", "await h", "", "   ", 7, "h" * (MAX_HANDLE_EXPR_CHARS + 1)):
        with pytest.raises(KernelHandleError):
            KernelSource(file, bad)
    assert "handle=\"H['a']\"" in repr(KernelSource(file, "H['a']  # a comment stays out"))
    for kwargs in ({"timeout_s": 0}, {"timeout_s": float("nan")}, {"poll_interval_s": 0.001}, {"timeout_s": True}):
        with pytest.raises(InvalidObservationError, match="seconds"):
            KernelSource(file, "h", **kwargs)
    with pytest.raises(InvalidObservationError, match="connection_file"):
        KernelSource(7, "h")


async def test_a_missing_or_unreadable_connection_file_is_a_kernel_source_error(tmp_path):
    missing = KernelSource(tmp_path / "none.json", "h", timeout_s=2)
    with pytest.raises(KernelSourceError, match="does not exist"):
        await missing.connect()
    with pytest.raises(KernelSourceError, match="does not exist"):
        missing.session_id  # the blocking read too
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KernelSourceError, match="cannot read the connection file"):
        await KernelSource(bad, "h").current_session_observation()
    dropped = KernelSource(bad, "h")
    dropped.drop_connection()
    with pytest.raises(KernelSourceError, match="dropped"):
        await dropped.connect()
    assert dropped.statistics().dropped and dropped.statistics().failures == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40) | st.sampled_from(["h # c", "h)\n(", "a[0].b", "(x)", "lambda: 1", "h if x else y"]))
def test_a_handle_expression_is_one_expression_or_refused(text):
    try:
        code = _handle_code("k.json", text)
    except KernelHandleError:
        return
    # what goes to kernel A is one argument of one call, and it is the expression given
    call = ast.parse(f"f(({code}), 'request')", mode="eval").body
    assert isinstance(call, ast.Call) and len(call.args) == 2
    assert ast.dump(call.args[0]) == ast.dump(ast.parse(text.strip(), mode="eval").body)
