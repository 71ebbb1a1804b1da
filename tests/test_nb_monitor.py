"""SessionMonitor and its controls, driven through their methods in a real loop with a real
runtime; asserted on the monitor's ``MonitorState`` and on traits (the markup itself is
tests/test_nb_render.py's). A few checks on what the widgets send stay here: escaping, and sizes
that must not grow with the data."""

import asyncio
import re

import ipywidgets as widgets
import traitlets

import pytest
from sources import MovingOnSource, delta
from unencodable import BAD_VALUES, deep_list

from lash_core import (
    AssistantProseDelta,
    DeliveryPolicy,
    FinalValue,
    GapResume,
    InvalidTurnInputError,
    LiveReplayStoreFailure,
    LiveReplayGapReason,
    QueuedWorkClaimBoundary,
    SessionFollower,
    SlotPolicy,
    ToolCallStarted,
    TurnActivity,
)
from lash_core.testing import Scenario
import lash_nb
from lash_nb import CancelOutcome, MonitorState, SessionMonitor, render, start_producer

TRIMMED, UNAVAILABLE = LiveReplayGapReason.TRIMMED, LiveReplayGapReason.UNAVAILABLE


class ManualTime:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


async def settle(monitor, rounds=5):
    """Let the monitor's task read everything that is ready, then draw."""
    for _ in range(rounds):
        await asyncio.sleep(0.01)
    monitor.flush()


async def make(grid="html", **kw):
    """A scenario and its monitor; the HTML table by default (these tests read its markup;
    tests/test_nb_monitor_grid.py runs the Perspective grid)."""
    scenario = await Scenario.create(**kw)
    monitor = SessionMonitor(scenario.handle, clock=scenario.clock, grid=grid)
    return scenario, monitor


def texts(frame):
    return frame["text"].tolist()


def assert_traits_match_state(m):
    """Every synced counter is the state's (what the frontend shows is what the state holds)."""
    st = m.state
    assert m.event_count == st.event_count and m.revision == st.revision
    assert m.dropped_rows == st.dropped_rows and m.fallback_rows == st.fallback_rows
    assert m.lagged == st.lagged and m.gaps == st.gaps and m.redraws == st.redraws
    assert m.connected == st.connected
    assert m.cursor == ("" if st.cursor is None else str(st.cursor))
    assert m.payload_types == list(st.payload_types) and m.event_types == list(st.event_types)
    assert m.visible_rows == st.visible_rows and m.max_redraw_hz == st.throttle.max_hz


async def test_monitor_follows_a_turn_and_shows_cursor_revision_and_view():
    s, m = await make(replies=["Hello from the model"], cycle=False)
    assert m.connected and m.state.connected and isinstance(m.state, MonitorState)
    assert m.cursor == "" and m.state.resume_cursor == s.handle.current_session_observation().cursor
    await s.handle.run_turn("hi")
    await settle(m)
    st = m.state
    assert m.revision == st.revision == 1
    assert m.cursor == str(st.cursor) == str(s.handle.observe().cursor)
    assert m.event_count == len(m.history) == st.event_count > 3
    frame = m.frame()
    assert frame["payload_type"].iloc[-1] == "committed"
    assert "assistant_prose_delta" in set(frame["event_type"].dropna())
    # the committed read view is the server's, drawn (not dirty), and the table drew every event
    assert st.read_view == s.handle.observe().read_view
    assert st.read_view.messages[-1].content == "Hello from the model"
    assert not st.view_dirty and st.undrawn == 0
    assert st.table()["payload_type"].iloc[-1] == "committed"
    assert st.statistics().connected and st.statistics().event_count == m.event_count
    assert_traits_match_state(m)
    m.stop()
    assert not m.connected and not st.connected


async def test_enqueue_shows_batch_and_queue_changed_event():
    s, m = await make()
    batch = await m.enqueue("later please", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    panel = m.enqueue_panel
    assert panel.last_batch_id == batch.batch_id and panel.enqueued == 1 and not panel.matched_existing
    await settle(m)
    assert m.queue_panel.batch_count == 1 and m.queue_panel.pending_count == 1
    assert m.queue_panel.listed == [batch.batch_id]
    frame = m.frame()
    assert frame["payload_type"].iloc[-1] == "queue_changed"
    assert frame["batch_ids"].iloc[-1] == (batch.batch_id,)


async def test_enqueue_button_uses_the_form_and_clears_it_only_on_success():
    s, m = await make()
    panel = m.enqueue_panel
    panel.text.value = "from the form"
    panel.source_key.value = "k1"
    panel.button.click()
    await settle(m)
    assert panel.enqueued == 1 and panel.text.value == ""
    [batch] = await s.queue.list_queued_work(s.session_id)
    assert batch.source_key == "k1" and batch.items[0].payload.content == "from the form"
    panel.text.value = "   "
    panel.button.click()
    await settle(m)
    assert panel.enqueued == 1
    assert panel.last_error == "Type some text to enqueue."
    # shown as a plain sentence: no error class name, no error code
    assert "Type some text to enqueue." in panel.result.value and "lash-refusal" in panel.result.value
    assert "Error" not in panel.result.value and "invalid_input" not in panel.result.value
    with pytest.raises(InvalidTurnInputError, match="Type some text to enqueue"):
        await panel.enqueue("")
    with pytest.raises(InvalidTurnInputError):
        await panel.enqueue("bad \ud800 surrogate")
    assert panel.text.value == "   "  # nothing the user typed is lost


async def test_cancel_pending_refused_and_unknown_are_all_visible():
    s, m = await make()
    a = await m.enqueue("a", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    b = await m.enqueue("b", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    claim = await s.queue.claim_ready_queued_work(s.session_id, "other", QueuedWorkClaimBoundary.IDLE, 60_000, 1)
    assert [x.batch_id for x in claim.batches] == [a.batch_id]
    panel = m.queue_panel
    assert await m.cancel(a.batch_id) is CancelOutcome.REFUSED and panel.last_cancelled is None
    assert panel.last_cancel == "refused"
    assert await m.cancel(b.batch_id) is CancelOutcome.CANCELLED
    assert panel.last_cancelled.batch_id == b.batch_id and panel.last_cancel == "cancelled"
    assert await m.cancel("qwb-nope") is CancelOutcome.UNKNOWN and panel.last_cancelled is None
    assert panel.last_cancel == "unknown"
    assert list(panel.outcomes) == [(a.batch_id, "refused"), (b.batch_id, "cancelled"), ("qwb-nope", "unknown")]
    assert all(type(o) is CancelOutcome for _, o in panel.outcomes)
    assert panel.cancel_count == 3
    assert panel.batch_count == 1 and panel.listed == [a.batch_id]  # the claimed one
    # the log: one line per cancel, each saying what it came to, none twice
    texts = [line for line in re.findall(r">([^<>]+)</div>", panel.cancel_log.value)]
    assert texts == [
        f"{a.batch_id}: {CancelOutcome.REFUSED.meaning}",
        f"{b.batch_id}: cancelled",
        f"qwb-nope: {CancelOutcome.UNKNOWN.meaning}",
    ]
    assert "a worker holds its claim" in texts[0] and "not in the queue" in texts[2]
    # a refused batch whose claim is finished is no longer in the queue: unknown from then on
    await s.queue.complete_queued_work(claim.completion())
    assert await m.cancel(a.batch_id) is CancelOutcome.UNKNOWN
    assert panel.cancel_log.value.count(f"{a.batch_id}: ") == 2  # one line per cancel


async def test_retention_slider_starts_at_one_and_zero_is_a_plain_error():
    s, m = await make(max_events=50, max_age=60.0, backend="memory")
    sim = m.simulator
    assert sim.retention.min == 1 and sim.retention.value == 50
    sim.retention.value = 0  # what a drag to the far left does: clamped to the minimum
    assert sim.retention.value == 1 and s.store.config.max_events_per_session == 1
    for bad in (0, -3, 2.5, True, "5"):
        with pytest.raises(ValueError, match=r"^Retention must keep at least 1 event: give a whole number"):
            sim.set_retention(max_events=bad)
        assert sim.last_error.startswith("Retention must keep at least 1 event")
        assert "ValueError" not in sim.error_view.value and "lash-refusal" in sim.error_view.value
    assert s.store.config.max_events_per_session == 1 and sim.retention.value == 1  # unchanged
    sim.set_retention(max_events=4)
    assert sim.last_error == "" and sim.error_view.value == "" and sim.retention.value == 4


async def test_a_negative_clock_step_is_refused_by_the_input_and_plainly_by_the_method():
    s, m = await make(max_events=50, max_age=60.0, backend="memory")
    sim = m.simulator
    assert isinstance(sim.advance_seconds, widgets.BoundedFloatText) and sim.advance_seconds.min == 0.0
    sim.advance_seconds.value = -5  # the input itself refuses it: clamped to 0
    assert sim.advance_seconds.value == 0.0
    before = s.clock.now
    with pytest.raises(ValueError, match=r"^The clock only moves forward: give a finite number of seconds, 0 or more \(got -5\)\.$"):
        sim.advance_clock(-5)
    assert s.clock.now == before
    assert sim.last_error == "The clock only moves forward: give a finite number of seconds, 0 or more (got -5)."
    assert "ValueError" not in sim.error_view.value and "lash-refusal" in sim.error_view.value
    sim.advance_clock(1)  # a step that works clears the line
    assert s.clock.now == before + 1 and sim.last_error == ""


def test_cancel_outcome_values_and_meanings():
    assert [o.value for o in CancelOutcome] == ["cancelled", "refused", "unknown"]
    assert lash_nb.CancelOutcome is CancelOutcome and "CancelOutcome" in lash_nb.__all__
    assert CancelOutcome("refused") is CancelOutcome.REFUSED and CancelOutcome.REFUSED == "refused"
    assert "live lease" in CancelOutcome.__doc__ and "no such batch" in CancelOutcome.__doc__


async def test_cancel_button_per_batch():
    s, m = await make()
    batch = await m.enqueue("x", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    await m.queue_panel.refresh()
    m.queue_panel.cancel_button(batch.batch_id).click()
    await settle(m)
    assert list(m.queue_panel.outcomes) == [(batch.batch_id, "cancelled")]
    assert m.queue_panel.batch_count == 0 and m.queue_panel.listed == []
    with pytest.raises(KeyError, match="not listed"):
        m.queue_panel.cancel_button(batch.batch_id)


async def test_reconnect_replay_then_trimmed_gap_then_unavailable():
    # memory: live retention changes, and a restarted store that lost everything (unavailable)
    s, m = await make(max_events=50, max_age=60.0, backend="memory")
    sim = m.simulator
    await s.handle.run_turn("one")
    await settle(m)
    m.disconnect("A")
    await s.handle.run_turn("two")
    outcome = m.reconnect("A")
    assert outcome.kind == "replayed" and len(outcome.replayed) > 0
    assert sim.last is outcome and sim.last_outcome == "replayed"
    assert sim.view_matches("A")

    m.disconnect("B")
    sim.set_retention(max_events=3)
    assert sim.retention.value == 3 and s.store.config.max_events_per_session == 3
    await s.handle.run_turn("three")
    outcome = m.reconnect("B")
    assert outcome.gap.reason is TRIMMED
    assert sim.last is outcome and sim.last_outcome == "gap"
    assert outcome.gap.missed_events and outcome.gap.missed_events > 3
    assert sim.view_matches("B")
    assert sim.gap_count == 1 and list(sim.gap_entries) == [("B", outcome.gap)]

    s.restart_store()
    outcome = m.reconnect("A")
    assert outcome.gap.reason is UNAVAILABLE
    assert sim.view_matches("A")
    assert sim.gap_count == 2 and sim.gap_entries[-1] == ("A", outcome.gap)


async def test_sliders_and_clock_force_age_trimming():
    s, m = await make(max_events=100, max_age=60.0, backend="memory")  # sliders reconfigure it
    sim = m.simulator
    m.disconnect("A")
    await s.handle.run_turn("x")
    sim.max_age.value = 10.0  # the slider itself
    assert s.store.config.max_age == 10.0
    sim.advance_seconds.value = 11
    sim.advance_button.click()
    assert s.store.statistics(s.session_id).retained_events == 0
    assert m.reconnect("A").gap.reason is TRIMMED


async def test_filters_limit_the_table():
    s, m = await make(replies=["text <b>bold</b>"], cycle=False)
    await s.handle.run_turn("go")
    await settle(m)
    st = m.state
    m.set_filter(payload_types=["committed"])
    assert m.payload_types == ["committed"] and st.payload_types == ("committed",)
    assert set(st.table()["payload_type"]) == {"committed"}
    m.set_filter(event_types=["assistant_prose_delta"])
    assert st.payload_types == () and st.event_types == ("assistant_prose_delta",)
    table = st.table()
    assert set(table["event_type"]) == {"assistant_prose_delta"} and len(table) > 1
    assert "".join(texts(table)) == "text <b>bold</b>"  # the data, unescaped; the markup escapes it
    assert "<b>bold" not in m.table.value  # escaped, never injected
    m.set_filter()
    assert {"committed", "turn_activity"} <= set(st.table()["payload_type"])
    assert st.undrawn == 0 and m.redraws == st.redraws
    with pytest.raises(ValueError, match="unknown type"):
        m.set_filter(payload_types=["nope"])
    assert st.payload_types == () and st.event_types == ()
    assert_traits_match_state(m)


async def test_html_injection_in_a_delta_renders_as_text():
    payload = "<img src=x onerror=alert(1)>"
    s, m = await make(replies=[payload], chunk_size=100, cycle=False)
    await s.handle.run_turn("go")
    await settle(m)
    for value in (m.table.value, m.session_view.value):
        assert "<img" not in value
    assert "&lt;img src=x onerror=alert(1)&gt;" in m.table.value


async def test_redraws_are_throttled_and_the_last_batch_is_always_drawn():
    s = await Scenario.create()
    clock = ManualTime()
    m = SessionMonitor(s.handle, time_source=clock, controls=False, max_redraw_hz=10, start=False)
    st = m.state
    feed = SessionFollower(s.handle)  # hands the monitor batches by hand
    base = m.redraws
    h = s.handle
    clock.now = 1.0  # well after the initial draw
    for i in range(50):  # a burst inside one throttle window
        h.record_queue_changed("enqueued", [f"b{i}"])
        m.ingest(feed.poll())
    assert m.redraws == base + 1  # the first drew at once, the rest wait
    assert m.redraw_pending and st.undrawn == 49
    clock.now = 1.1  # the window ends: the pending redraw fires with the last batch
    await asyncio.sleep(0.15)
    assert not m.redraw_pending
    assert m.redraws == st.redraws == base + 2
    assert st.undrawn == 0 and st.table()["batch_ids"].iloc[-1] == ("b49",)
    # a batch arriving after a window's due time but before its timer ran must not draw twice
    clock.now = 1.15
    h.record_queue_changed("enqueued", ["late-1"])
    m.ingest(feed.poll())
    assert m.redraw_pending and m.redraws == base + 2
    clock.now = 1.5  # past due, timer not yet run
    h.record_queue_changed("enqueued", ["late-2"])
    m.ingest(feed.poll())
    assert m.redraws == base + 2 and st.undrawn == 2  # still only the timer's redraw to come
    await asyncio.sleep(0.15)
    assert m.redraws == base + 3 and st.undrawn == 0
    assert st.throttle.last == 1.5
    m.stop()


async def test_monitor_survives_lag_by_resubscribing():
    s = await Scenario.create(subscriber_backlog=8, max_events=4)
    m = SessionMonitor(s.handle, controls=False)
    for i in range(30):  # no await: the monitor cannot read in between
        s.handle.record_queue_changed("enqueued", [str(i)])
    await settle(m)
    st = m.state
    assert m.lagged == st.lagged == 22 and st.lag_count == 1  # told it missed events beyond the backlog
    # resubscribing from its cursor met a trimmed gap and reloaded
    assert m.gaps == st.gaps == 1 and [g.reason for g in st.gap_log] == [TRIMMED]
    assert m.cursor == str(s.handle.current_session_observation().cursor)
    assert st.follower.lag_count == 1 and st.follower.gap_count == 1  # the follower's policy did it
    assert m.connected
    assert_traits_match_state(m)


async def test_background_producer_keeps_rows_arriving():
    s, m = await make(delay=0.001)
    producer = start_producer(s.handle, interval=0.01, max_turns=3, queue_worker=False)
    assert await asyncio.wait_for(producer.wait(), 10) == 3
    await settle(m)
    assert m.revision == 3
    assert (m.frame()["payload_type"] == "committed").sum() == 3
    producer.stop()


async def test_rollover_is_visible():
    s = await Scenario.create()
    m = SessionMonitor(s.handle, controls=False, max_rows=10)
    for i in range(25):
        s.handle.record_queue_changed("enqueued", [str(i)])
    await settle(m)
    stats = m.state.statistics()
    assert len(m.history) == stats.rows == 10 and m.dropped_rows == stats.dropped_rows == 15
    assert stats.event_count == 25


def test_widgets_need_a_running_loop():
    import asyncio as aio

    s = aio.run(Scenario.create())
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        SessionMonitor(s.handle)


async def test_a_monitor_is_a_view_over_a_given_state():
    s = await Scenario.create(session_id="shown")
    state = MonitorState(s.handle, max_rows=5, visible_rows=3)
    state.set_filter(payload_types="queue_changed")
    for i in range(8):
        s.handle.record_queue_changed("enqueued", [str(i)])
    state.poll()  # the state alone follows the session
    assert state.event_count == 8 and len(state.history) == 5
    m = SessionMonitor(s.handle, controls=False, state=state)
    assert m.state is state and m.event_count == 8 and m.visible_rows == 3
    assert m.payload_types == ["queue_changed"] and m.payload_filter.value == ("queue_changed",)
    assert state.undrawn == 0
    assert_traits_match_state(m)
    other = await Scenario.create(session_id="other")
    with pytest.raises(ValueError, match="follows session"):
        SessionMonitor(other.handle, controls=False, state=state, start=False)


async def test_a_monitor_of_an_asynchronous_source_subscribes_from_its_task():
    class AsyncSource:  # the handle behind awaitables, as a client of a remote service would be
        def __init__(self, handle):
            self.handle, self.session_id = handle, handle.session_id

        async def current_session_observation(self):
            return self.handle.current_session_observation()

        async def resume_session_observation(self, cursor):
            return self.handle.resume_session_observation(cursor)

        async def subscribe_session_observation(self, cursor):
            return self.handle.subscribe_session_observation(cursor)

    s = await Scenario.create(replies=["async hello"], cycle=False)
    state = MonitorState(AsyncSource(s.handle))
    assert state.follower.cursor is None and state.read_view is None  # read at the first await
    m = SessionMonitor(s.handle, controls=False, state=state)
    assert not m.connected
    await asyncio.sleep(0.01)
    await s.handle.run_turn("go")
    await settle(m)
    assert m.connected and m.revision == 1 and m.cursor == str(s.handle.observe().cursor)
    assert state.read_view == s.handle.observe().read_view
    m.stop()


# -- robustness -----------------------------------------------------------------------------------


async def test_a_lone_surrogate_in_an_event_is_escaped_and_the_monitor_lives_on():
    s, m = await make(backend="memory")  # a SQLite store refuses to keep text that is not UTF-8
    bad = "bad\ud800id"  # valid in JSON, not in UTF-8 (ids refuse it; a delta's text may hold it)
    s.handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(bad)))
    await settle(m)
    assert texts(m.state.table())[-1] == bad  # the data as it is
    assert "bad\\ud800id" in m.table.value  # shown, escaped as text, encodable
    m.table.value.encode("utf-8")  # what the frontend message needs
    await s.handle.run_turn("still alive?")
    await settle(m)
    assert m.connected and m.revision == 1


async def test_a_failing_batch_is_reported_and_the_stream_continues(monkeypatch):
    s, m = await make()
    history_type = type(m.history)
    real_append = history_type.append
    calls = {"n": 0}

    def flaky(self, events, received_at=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("history exploded")
        return real_append(self, events, received_at)

    monkeypatch.setattr(history_type, "append", flaky)
    s.handle.record_queue_changed("enqueued", ["a"])
    await settle(m)
    assert m.last_error == m.state.last_error == "RuntimeError: history exploded"
    s.handle.record_queue_changed("enqueued", ["b"])
    await settle(m)
    assert m.connected and "b" in set(m.frame()["text"].str.split().str[-1])
    assert m.state.statistics().last_error == "RuntimeError: history exploded"  # still shown


async def test_store_restart_is_followed_by_monitor_and_clients():
    s, m = await make(backend="memory")  # the restarted store lost everything: unavailable
    await s.handle.run_turn("one")
    await settle(m)
    s.restart_store()
    await settle(m)
    assert m.connected and m.gaps == 1 and m.gap_log[-1].reason is UNAVAILABLE
    assert m.state.follower.gap_count == 1
    sim = m.simulator
    assert sim.reconnect("A").gap.reason is UNAVAILABLE
    await s.handle.run_turn("two")
    await settle(m)
    assert m.revision == 2 and m.connected
    assert not sim.clients["B"].connected  # its server went away: disconnected, cursor kept
    assert sim.clients["A"].connected and sim.view_matches("A")
    sim.set_retention(max_events=3)
    assert s.store.config.max_events_per_session == 3  # the sliders act on the new store
    assert_traits_match_state(m)


async def test_a_closed_store_stops_the_monitor_and_says_why():
    s, m = await make()
    delta(s.handle)
    await settle(m)
    s.store.close()  # no restart: nothing to follow any more
    await settle(m)
    assert not m.connected and not m.state.connected
    assert "LiveReplayStoreFailure" in m.last_error and "closed" in m.last_error
    assert m.event_count == 1 and m.cursor == str(m.state.cursor)


async def test_enqueue_button_never_double_submits_and_keeps_newer_typing():
    s, m = await make()
    panel = m.enqueue_panel
    panel.text.value = "first"
    panel.source_key.value = "k"
    panel.button.click()
    panel.button.click()  # a double click while the first is in flight
    assert panel.busy and panel.button.disabled
    panel.text.value = "typed meanwhile"
    await settle(m)
    assert panel.enqueued == 1 and not panel.busy and not panel.button.disabled
    assert [b.items[0].payload.content for b in await s.queue.list_queued_work(s.session_id)] == ["first"]
    assert panel.text.value == "typed meanwhile"  # not wiped
    assert panel.source_key.value == ""  # the key was used: cleared with the submission
    again = await panel.enqueue("different text", source_key="k")
    assert again.items[0].payload.content == "first"
    assert panel.matched_existing and panel.enqueued == 2


async def test_bad_inputs_are_typed_errors_and_change_nothing():
    from lash_core import InvalidQueuedWorkError

    s, m = await make()
    with pytest.raises(InvalidTurnInputError, match="must be text"):
        await m.enqueue(123)
    with pytest.raises(InvalidQueuedWorkError):
        await m.enqueue("x", "sometime")
    with pytest.raises(InvalidQueuedWorkError, match="batch.id"):
        await m.cancel(None)
    with pytest.raises(traitlets.TraitError):
        m.max_redraw_hz = 0
    with pytest.raises(traitlets.TraitError):
        m.max_redraw_hz = float("nan")
    with pytest.raises(traitlets.TraitError):
        m.visible_rows = 0
    with pytest.raises(traitlets.TraitError, match="unknown type"):
        m.payload_types = ["nope"]
    assert m.max_redraw_hz == 10 and m.payload_types == []
    m.set_filter(payload_types="committed")  # a single name is fine
    assert m.payload_types == ["committed"] and m.payload_filter.value == ("committed",)
    m.event_types = ["usage"]  # setting the trait moves the widget too
    assert m.event_filter.value == ("usage",)
    m.visible_rows = 7
    m.max_redraw_hz = 4
    assert m.state.visible_rows == 7 and m.state.throttle.max_hz == 4.0
    assert_traits_match_state(m)
    before = s.clock.now
    with pytest.raises(ValueError, match="finite"):
        m.simulator.advance_clock(float("nan"))
    assert s.clock.now == before
    with pytest.raises(KeyError, match="no simulated client named 'Z'"):
        m.reconnect("Z")
    assert await s.queue.list_queued_work(s.session_id) == []


async def test_simulated_clients_keep_a_bounded_history():
    from lash_core.testing import SimulatedClient

    s = await Scenario.create()
    client = SimulatedClient(s.handle, "c", keep_events=5)
    for i in range(20):
        s.handle.record_queue_changed("enqueued", [str(i)])
    client.pump()
    assert client.received == 20 and len(client.events) == 5
    assert client.events[-1].payload.batch_ids == ("19",)


async def test_queue_panel_refreshes_are_coalesced():
    s, m = await make()
    calls = {"n": 0}
    real = m.queue_panel.refresh

    async def counted():
        calls["n"] += 1
        return await real()

    m.queue_panel.refresh = counted
    for i in range(100):
        await s.handle.enqueue_turn_input(f"q{i}", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    await settle(m, rounds=20)
    await asyncio.sleep(0.2)
    m.flush()
    await settle(m)
    assert 1 <= calls["n"] <= 10  # not one per event
    assert m.queue_panel.batch_count == 100  # and the last state is shown
    assert not m.state.queue_dirty


async def test_restarting_the_monitor_does_not_leak_subscriptions():
    s, m = await make(backend="memory")  # its statistics count subscribers
    before = s.store.statistics(s.session_id).subscribers
    m.stop()
    m.start()
    m.stop()
    m.start()
    assert s.store.statistics(s.session_id).subscribers == before
    assert m.state.follower.gap_count == 0 and m.gaps == 0


async def test_simulator_buttons_do_what_their_methods_do():
    s, m = await make(max_events=100, max_age=60.0, backend="memory")
    sim = m.simulator
    sim.picker.value = "B"
    assert sim.selected == "B"
    sim.disconnect_button.click()
    assert not sim.clients["B"].connected and sim.clients["A"].connected
    await s.handle.run_turn("x")
    sim.reconnect_button.click()
    assert sim.last_outcome == "replayed" and sim.clients["B"].connected
    sim.disconnect_button.click()
    await s.handle.run_turn("y")
    sim.advance_seconds.value = 61
    sim.advance_button.click()
    sim.trim_button.click()
    assert s.store.statistics(s.session_id).retained_events == 0
    sim.reconnect_button.click()
    assert sim.last_outcome == "gap" and sim.last.gap.reason is TRIMMED and sim.last.client == "B"
    m.queue_panel.refresh_button.click()
    await settle(m)
    assert m.queue_panel.batch_count == 0


# -- a SQLite-backed scenario (the default) -------------------------------------------------------


async def test_the_simulator_on_a_sqlite_store_degrades_gracefully():
    """The SQLite store has no ``reconfigure`` and no ``statistics``: the sliders are off, the
    status names the store and its file, and retention changes are refused with a typed error."""
    s, m = await make(max_events=50, max_age=60.0)
    sim = m.simulator
    assert s.backend == "sqlite"
    assert sim.retention_fixed and sim.retention.disabled and sim.max_age.disabled
    assert (sim.retention.value, sim.max_age.value) == (50, 60.0)  # the bounds it opened with
    assert "SqliteLiveReplayStore" in sim.status.value and s.path in sim.status.value
    assert sim.store_error == ""
    with pytest.raises(LiveReplayStoreFailure, match="fixes its retention"):
        sim.set_retention(max_events=3)
    assert "fixes its retention" in sim.last_error
    assert s.store.config.max_events_per_session == 50  # unchanged
    # the rest works: replay, and a trimmed gap by age on the fake clock
    await s.handle.run_turn("one")
    await settle(m)
    m.disconnect("A")
    await s.handle.run_turn("two")
    assert m.reconnect("A").kind == "replayed" and sim.view_matches("A")
    m.disconnect("B")
    await s.handle.run_turn("three")
    sim.advance_clock(61)
    outcome = m.reconnect("B")
    assert outcome.gap.reason is TRIMMED and sim.view_matches("B")
    m.stop()
    s.close()


async def test_a_sqlite_store_restart_is_durable_for_monitor_and_clients():
    s, m = await make()
    sim = m.simulator
    await s.handle.run_turn("one")
    await settle(m)
    m.disconnect("A")
    s.handle.record_queue_changed("enqueued", ["while A is away"])
    s.restart_store()  # the same file: positions continue, nothing is lost
    await settle(m)
    assert m.connected and m.gaps == 0
    outcome = m.reconnect("A")
    assert outcome.kind == "replayed" and [e.type for e in outcome.replayed] == ["queue_changed"]
    assert sim.view_matches("A")
    await s.handle.run_turn("two")
    await settle(m)
    assert m.revision == 2 and m.connected and m.gaps == 0 and sim.view_matches("A")
    assert sim.retention_fixed  # the new store's abilities are read again
    m.stop()
    s.close()


# -- two gaps in a row ----------------------------------------------------------------------------


async def test_two_gaps_in_a_row_reach_the_follower_the_simulator_and_the_monitor():
    s = await Scenario.create(max_age=5.0, backend="memory")  # its restart answers unavailable
    source = MovingOnSource(s)  # the handle, until told to move on before its next subscribes
    m = SessionMonitor(source, clock=s.clock)  # its follower and its simulated clients read through it
    sim = m.simulator
    # a follower of its own
    follower = SessionFollower(source)
    source.times = 2
    assert isinstance(follower.connect(), GapResume)
    assert follower.gap_count == 2 and [g.reason for g in follower.gaps] == [TRIMMED, TRIMMED]
    assert follower.gaps[1].requested_cursor == follower.gaps[0].latest_cursor  # from the fresh cursor

    # the simulator: one reconnect of A meets both
    sim.disconnect("A")
    source.times = 2
    outcome = sim.reconnect("A")
    client = sim.clients["A"]
    assert outcome.kind == "gap" and sim.last_outcome == "gap" and outcome.gap is client.follower.gaps[0]
    assert client.gap_count == 2 and client.connected and sim.view_matches("A")
    assert sim.gap_count == 2 and [(n, g.reason) for n, g in sim.gap_entries] == [("A", TRIMMED)] * 2
    assert list(sim.gap_entries) == [("A", g) for g in client.follower.gaps]

    # the monitor: started again from its cursor, its follower meets both and the state records both
    m.stop()
    source.times = 2
    m.start()
    st = m.state
    assert st.gaps == m.gaps == 2 and st.follower.gap_count == 2
    assert [g.reason for g in st.gap_log] == [TRIMMED, TRIMMED] and list(st.gap_log) == list(st.follower.gaps)
    assert st.gap_log[1].requested_cursor == st.gap_log[0].latest_cursor
    assert st.cursor == st.follower.cursor == s.handle.current_session_observation().cursor
    assert st.read_view == s.handle.observe().read_view and m.connected

    # all three follow on from there, and nobody recorded more than the two
    delta(s.handle, "after")
    await settle(m)
    assert texts(m.frame())[-1] == "after"
    # (the moves of the others were live events to it: it was subscribed all along)
    assert [e.payload.activity.event.text for e in follower.poll()][-1] == "after"
    assert client.events[-1].payload.activity.event.text == "after"  # pumped with the monitor's batch
    assert (follower.gap_count, sim.gap_count, m.gaps) == (2, 2, 2)

    # the same through the monitor's task: the store restarts, and moves on once more on the way
    source.times = 2
    s.restart_store()
    await settle(m)
    assert [g.reason for g in list(st.gap_log)[-2:]] == [UNAVAILABLE, TRIMMED]
    assert m.gaps == st.follower.gap_count == 4 and m.connected and st.statistics().last_gap is st.gap_log[-1]
    assert_traits_match_state(m)


# -- values that cannot be encoded, strings and logs without bounds -------------------------------------


NB_BAD = ("deep", "nan", "huge_int", "object", "circular")
BAD_VALUES = {name: BAD_VALUES[name] for name in NB_BAD}


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
async def test_a_bad_event_becomes_a_counted_fallback_row_and_its_batch_still_goes_in(bad):
    make_value, kind = BAD_VALUES[bad]
    s, m = await make(backend="memory")  # a SQLite store refuses what the wire cannot carry
    h = s.handle
    # no await in between: the monitor reads all four as one batch
    h.record_queue_changed("enqueued", ["before"])
    h.record_turn_activity(TurnActivity.independent(ToolCallStarted(call_id="c", name="t", args=make_value())))
    h.record_turn_activity(TurnActivity.independent(FinalValue(make_value())))
    h.record_queue_changed("enqueued", ["after"])
    await settle(m)
    frame = m.frame()
    assert m.event_count == len(frame) == 4 and m.last_error == ""
    assert texts(frame)[0] == "enqueued before" and texts(frame)[-1] == "enqueued after"
    assert m.fallback_rows == m.history.statistics().fallback_rows == m.state.statistics().fallback_rows == 2
    shown = texts(m.state.table())
    assert sum(f"<value not shown: {kind}>" in t for t in shown) == 2 and shown[-1] == "enqueued after"
    position = int(frame["position"].iloc[1])
    detail = m.detail(position)
    assert detail == m.detail_view.value == render.event_detail_html(m.event(position), with_style=False)
    assert m.cursor == str(h.current_session_observation().cursor)
    await h.run_turn("still alive?")
    await settle(m)
    assert m.connected and m.revision == 1


async def test_a_row_builder_failing_for_one_event_costs_that_event_only(monkeypatch):
    from lash_nb import _frames

    s = await Scenario.create()
    m = SessionMonitor(s.handle, controls=False, grid="html")
    real = _frames.event_row

    def flaky(event, received_at):
        if event.payload.type == "queue_changed" and event.payload.batch_ids == ("boom",):
            raise RuntimeError("unforeseen")
        return real(event, received_at)

    monkeypatch.setattr(_frames, "event_row", flaky)
    for name in ("a", "boom", "c"):
        s.handle.record_queue_changed("enqueued", [name])
    await settle(m)
    assert texts(m.frame()) == ["enqueued a", "<event not shown: RuntimeError>", "enqueued c"]
    assert m.fallback_rows == m.state.statistics().fallback_rows == 1 and m.last_error == ""


async def test_a_two_million_character_delta_keeps_the_live_table_small():
    s = await Scenario.create()
    m = SessionMonitor(s.handle, controls=False, grid="html")
    big = "<b>" + "x" * (2_000_000 - 3)
    s.handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(big)))
    for i in range(10):
        s.handle.record_queue_changed("enqueued", [f"q{i}"])
    await settle(m)
    assert len(m.table.value) < 20_000, len(m.table.value)
    assert "<b>" not in m.table.value
    frame = m.frame()
    delta_row = frame[frame["event_type"] == "assistant_prose_delta"]
    assert delta_row["text"].iloc[0] == big  # the whole text stays in the DataFrame
    position = int(delta_row["position"].iloc[0])
    assert m.event(position).payload.activity.event.text == big  # and the whole event
    detail = m.detail(position)
    assert len(detail) < render.DETAIL_MAX_CHARS + 10_000
    m.flush()
    assert len(m.table.value) < 20_000  # every redraw stays small
    # forty of them, the whole visible table: still some tens of KB
    for _ in range(40):
        s.handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(big)))
    await settle(m)
    assert len(m.table.value) < 60_000, len(m.table.value)
    # the Show event button does what detail() does; an unknown position says so
    m.detail_position.value = position
    m.detail_button.click()
    assert m.detail_view.value == detail
    m.detail_position.value = 10**6
    m.detail_button.click()
    assert m.detail_view.value == render.note_html("no kept event at position 1000000")
    with pytest.raises(KeyError):
        m.detail(10**6)


async def test_error_lines_are_bounded(monkeypatch):
    s, m = await make()
    history_type = type(m.history)
    real_append = history_type.append

    def failing(self, events, received_at=None):
        raise RuntimeError("<b>" + "x" * 1_000_000)

    monkeypatch.setattr(history_type, "append", failing)
    s.handle.record_queue_changed("enqueued", ["a"])
    await settle(m)
    assert len(m.last_error) < render.ERROR_MAX_CHARS + 100
    assert m.last_error.endswith("999,003 more characters") and m.state.last_error == m.last_error
    assert len(m.header.value) < render.ERROR_MAX_CHARS + 5_000 and "<b>x" not in m.header.value
    m.last_error = "y" * 1_000_000  # set on the trait directly: the header still cuts it
    m.flush()
    assert len(m.header.value) < 3 * render.ERROR_MAX_CHARS + 5_000
    monkeypatch.setattr(history_type, "append", real_append)
    sim = m.simulator
    sim._guard(lambda: (_ for _ in ()).throw(ValueError("y" * 1_000_000)))
    assert sim.last_error.startswith("ValueError: yyy") and len(sim.last_error) < render.ERROR_MAX_CHARS + 100
    assert len(sim.error_view.value) < render.ERROR_MAX_CHARS + 1_000


async def test_the_monitor_keeps_only_the_newest_gaps():
    from lash_nb._state import GAP_LOG_KEPT

    s = await Scenario.create(backend="memory")  # each restart answers unavailable
    m = SessionMonitor(s.handle, controls=False)
    for i in range(GAP_LOG_KEPT + 5):
        s.handle.record_queue_changed("enqueued", [str(i)])
        await settle(m, rounds=2)
        s.restart_store()
        await settle(m, rounds=2)
    assert m.gaps == GAP_LOG_KEPT + 5 and len(m.gap_log) == GAP_LOG_KEPT
    assert m.gap_log[-1].reason is UNAVAILABLE and m.connected


async def test_the_gap_log_costs_the_same_after_2000_gaps_as_after_30():
    from lash_nb import ReconnectSimulator
    from lash_nb._controls import GAP_LOG_ROWS

    async def simulate(gaps: int) -> ReconnectSimulator:
        s = await Scenario.create(max_events=1)
        sim = ReconnectSimulator(s.handle, clock=s.clock, clients=("A", "B"))
        for i in range(gaps):
            name = "AB"[i % 2]
            sim.disconnect(name)
            s.handle.record_queue_changed("enqueued", ["x"])
            s.handle.record_queue_changed("enqueued", ["y"])
            assert sim.reconnect(name).kind == "gap"
        return sim

    few, many = await simulate(30), await simulate(2_000)
    for sim, gaps in ((few, 30), (many, 2_000)):
        clients = list(sim.clients.values())
        assert sim.gap_count == gaps == sum(c.gap_count for c in clients)
        assert sim.reconnect_count == sum(c.reconnects for c in clients) == gaps + 2  # + first connects
        assert len(sim.gap_entries) == GAP_LOG_ROWS  # the newest gaps only
        newest_name, newest = sim.gap_entries[-1]
        assert newest_name == "B" and newest == sim.clients["B"].gaps[-1].gap
    # what is sent: the same rows; only the numbers in them are longer
    assert abs(len(many.gap_log.value) - len(few.gap_log.value)) < 400
    assert len(many.gap_log.value) < 10_000


async def test_queue_panel_logs_and_rows_are_bounded():
    from lash_nb._controls import CANCEL_LOG_LINES, CANCEL_OUTCOMES_KEPT, ERROR_LOG_LINES, QUEUE_ROWS_MAX

    s, m = await make()
    panel = m.queue_panel
    for i in range(CANCEL_OUTCOMES_KEPT + 30):
        assert await panel.cancel(f"qwb-nope-{i}") is CancelOutcome.UNKNOWN
    assert panel.cancel_count == CANCEL_OUTCOMES_KEPT + 30 and len(panel.outcomes) == CANCEL_OUTCOMES_KEPT
    assert panel.outcomes[-1] == (f"qwb-nope-{CANCEL_OUTCOMES_KEPT + 29}", "unknown")
    for _ in range(50):
        panel._show_error(RuntimeError("x" * 100_000))  # what a failing button task reports
    assert len(panel.errors) == ERROR_LOG_LINES
    log = panel.cancel_log.value
    assert len(log) < ERROR_LOG_LINES * (render.ERROR_MAX_CHARS + 200) + CANCEL_LOG_LINES * 200 + 1_000
    for i in range(QUEUE_ROWS_MAX + 7):
        await s.handle.enqueue_turn_input(f"q{i}", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    await panel.refresh()
    assert panel.batch_count == QUEUE_ROWS_MAX + 7 and len(panel.listed) == QUEUE_ROWS_MAX
    assert len(panel.rows_box.children) == QUEUE_ROWS_MAX  # one widget row per listed batch, no more


async def test_a_long_replay_lists_the_newest_events_and_counts_the_rest():
    from lash_nb._render import REPLAY_LIST_LIMIT

    s, m = await make()
    m.disconnect("A")
    for i in range(REPLAY_LIST_LIMIT + 12):
        s.handle.record_queue_changed("enqueued", [f"r{i}"])
    outcome = m.reconnect("A")
    assert len(outcome.replayed) == REPLAY_LIST_LIMIT + 12
    assert m.simulator.replayed_view.value == render.replayed_html("A", outcome.replayed)


async def test_bad_arguments_fail_with_short_typed_messages():
    from lash_core import InvalidQueuedWorkError

    s, m = await make()
    deep = deep_list()
    with pytest.raises(InvalidQueuedWorkError, match="delivery policy must be one of") as caught:
        await m.enqueue("x", deep)
    assert len(str(caught.value)) < 300 and "delivery policy" in m.enqueue_panel.last_error
    with pytest.raises(ValueError, match="unknown type") as caught:
        m.set_filter(payload_types=[deep, 10**5000])
    assert len(str(caught.value)) < 400
    with pytest.raises(traitlets.TraitError, match="at least 1"):
        m.visible_rows = -(10**5000)
    with pytest.raises(KeyError, match="no simulated client named") as caught:
        m.reconnect(deep)
    assert len(str(caught.value)) < 300
    assert len(repr(m)) < 200 and len(repr(m.enqueue_panel)) < 200 and len(repr(m.simulator)) < 200
    assert len(repr(m.state)) < 200


# -- a replay store that is down ------------------------------------------------------------------------


class DownStore:
    """A live replay store that went away after the widgets were built: every method (and
    ``config``) raises what a network store's driver raises. ``calls`` counts what was asked."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name == "config":
            raise ConnectionError("replay store unreachable (config)")

        def unreachable(*args, **kwargs):
            self.calls.append(name)
            raise ConnectionError(f"replay store unreachable ({name})")

        return unreachable


def take_store_down(s):
    """Swap the scenario's replay store for a ``DownStore``; returns a function that brings the
    real one back."""
    real, down = s.store, DownStore()
    s.handle._shared.store = down

    def restore():
        s.handle._shared.store = real

    return down, restore


async def test_an_enqueue_while_the_replay_store_is_down_is_done_once_with_a_note():
    s, m = await make()
    panel = m.enqueue_panel
    down, restore = take_store_down(s)
    panel.text.value = "while down"
    panel.source_key.value = "k-down"
    batch = await panel.enqueue()  # the form, as the button sends it
    assert "replay_after_cursor" in down.calls  # it did try to read back what was recorded
    queued = await s.queue.list_queued_work(s.session_id)
    assert [b.batch_id for b in queued] == [batch.batch_id]
    assert (panel.enqueued, panel.last_batch_id, panel.last_error) == (1, batch.batch_id, "")
    assert panel.replay_note.startswith("enqueued; the events it recorded could not be read from the stream")
    assert "ConnectionError: replay store unreachable" in panel.replay_note
    assert (panel.text.value, panel.source_key.value, panel.busy) == ("", "", False)  # cleared as on success
    # a second click finds nothing to send: no second batch
    panel.button.click()
    await settle(m)
    assert panel.enqueued == 1 and panel.last_error == "Type some text to enqueue."
    assert len(await s.queue.list_queued_work(s.session_id)) == 1
    # the button path while down: one batch per click, each reported done
    panel.text.value = "by the button"
    panel.button.click()
    await settle(m)
    assert panel.enqueued == 2 and panel.text.value == "" and panel.last_error == ""
    assert len(await s.queue.list_queued_work(s.session_id)) == 2
    # the store is back: the recorded events are read again and the note goes away
    restore()
    again = await panel.enqueue("store is back")
    assert panel.replay_note == "" and panel.last_batch_id == again.batch_id and panel.enqueued == 3


async def test_a_replay_store_that_is_down_is_shown_by_the_monitor_never_raised():
    from lash_core import LiveReplayStoreFailure

    s, m = await make()
    sim = m.simulator
    down, restore = take_store_down(s)
    m.flush()  # the redraw reads the store's statistics: shown as unavailable
    assert "ConnectionError: replay store unreachable (statistics)" in sim.store_error
    assert sim.last_error == "" and m.last_error == ""
    m.disconnect("A")  # needs no store
    assert not sim.clients["A"].connected and sim.last_error == ""
    with pytest.raises(LiveReplayStoreFailure, match="trimming the session: ConnectionError") as caught:
        sim.trim()
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert sim.last_error == render.error_text(caught.value)
    with pytest.raises(LiveReplayStoreFailure, match="ConnectionError"):
        m.reconnect("A")
    assert not sim.clients["A"].connected and "subscribe_after_cursor" in down.calls
    with pytest.raises(LiveReplayStoreFailure, match="changing retention"):
        sim.set_retention(max_events=3)
    # buttons and sliders show what failed, never raise
    sim.last_error = ""
    for button in (sim.trim_button, sim.reconnect_button):
        sim.picker.value = "A"
        button.click()
        assert "ConnectionError" in sim.last_error
        sim.last_error = ""
    sim.retention.value = 5
    assert "changing retention" in sim.last_error
    sim.pump()  # B's subscription (on the real store) still reads; nothing raises
    # stop() completes, and start() while down stays stopped and says why
    m.stop()
    assert not m.connected and not m.state.connected and not m.redraw_pending
    m.start()
    assert not m.connected and m.last_error.startswith("LiveReplayStoreFailure: ")
    assert "ConnectionError" in m.last_error and m.state.last_error == m.last_error
    # a monitor created while the store is down comes up, disconnected, saying why
    m2 = SessionMonitor(s.handle, clock=s.clock)
    assert not m2.connected and "ConnectionError" in m2.last_error
    assert not any(c.connected for c in m2.simulator.clients.values())
    assert "ConnectionError" in m2.simulator.last_error and m2.simulator.retention.value == 2048
    # the store comes back: starting and reconnecting recover, and the errors clear
    restore()
    m.start()
    m2.start()
    assert m.connected and m2.connected
    assert m2.simulator.reconnect("A").kind == "replayed" and m2.simulator.last_error == ""
    m2.flush()
    assert m2.simulator.store_error == "" and m2.simulator.clients["A"].connected
    delta(s.handle, "after the outage")
    await settle(m)
    await settle(m2)
    assert texts(m.frame())[-1] == texts(m2.frame())[-1] == "after the outage"
    m.stop()
    m2.stop()


async def test_a_subscription_that_fails_to_close_still_stops_the_monitor():
    class BrokenClose:  # a store's subscription whose close fails after releasing what it held
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def close(self):
            self.inner.close()
            raise ConnectionError("close failed")

    s, m = await make()
    follower = m.state.follower
    follower._subscription = BrokenClose(follower._subscription)
    m.stop()
    assert not m.connected and not m.state.connected and m._task is None
    assert "LiveReplayStoreFailure" in m.last_error and "close failed" in m.last_error
    m.start()
    assert m.connected


async def test_queue_store_and_process_registry_failures_are_typed_and_shown(monkeypatch):
    from lash_core import ProcessRegistryError, QueuedWorkError

    from lash_nb import QueuePanel

    s, m = await make()
    panel = QueuePanel(s.handle)  # alone: no monitor refreshing it on queue events
    batch = await s.handle.enqueue_turn_input("q", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)

    async def unreachable(*args, **kwargs):
        raise ConnectionError("queue store unreachable")

    monkeypatch.setattr(s.queue, "list_queued_work", unreachable)
    with pytest.raises(QueuedWorkError, match="listing queued work: ConnectionError: queue store unreachable"):
        await panel.refresh()
    assert "queue store unreachable" in panel.last_error and len(panel.errors) == 1
    with pytest.raises(QueuedWorkError, match="cancelling queued work"):
        await panel.cancel("qwb-nope")  # refused or unknown? the look that tells them apart fails
    assert len(panel.errors) == 2 and panel.cancel_count == 0
    panel.refresh_button.click()  # the button's task: shown once, never raised
    await asyncio.sleep(0.05)
    assert len(panel.errors) == 3 and "queue store unreachable" in panel.last_error
    monkeypatch.undo()
    await panel.refresh()
    assert panel.last_error == "" and panel.listed == [batch.batch_id]

    class Registry:
        async def list_process_handles(self):
            raise ConnectionError("registry unreachable")

    monkeypatch.setattr(type(s.handle), "observe", lambda self: Registry())
    with pytest.raises(ProcessRegistryError, match="listing processes: ConnectionError: registry unreachable"):
        await m.refresh_processes()


async def test_the_monitor_never_adopts_another_sessions_cursor():
    from lash_core import Committed, SessionObservationEvent, SessionRevision, SessionCursor

    s, m = await make()
    delta(s.handle, "mine")
    await settle(m)
    mine = m.cursor
    other = SessionObservationEvent("other", SessionRevision(9), SessionCursor("lashsc1:9:999:other"), Committed(None))
    junk = SessionObservationEvent(s.session_id, SessionRevision(9), SessionCursor("junk"), Committed(None))
    m.ingest([other])
    m.ingest([junk])
    assert m.cursor == mine == str(m.state.resume_cursor) and m.revision == 0
    assert m.state.foreign_events == 1 and m.event_count == 3
    m.stop()
    m.start()  # resubscribes from this session's cursor
    delta(s.handle, "after")
    await settle(m)
    assert m.connected and m.last_error == "" and texts(m.frame())[-1] == "after"
    assert m.cursor == str(s.handle.current_session_observation().cursor)
    assert_traits_match_state(m)
    m.stop()


# -- the redraw rate ----------------------------------------------------------------------------------


async def test_a_new_redraw_rate_reschedules_the_pending_redraw():
    from lash_nb._state import MAX_REDRAW_HZ, MIN_REDRAW_HZ

    s = await Scenario.create()
    clock = ManualTime()
    m = SessionMonitor(s.handle, time_source=clock, controls=False, max_redraw_hz=MIN_REDRAW_HZ, start=False)
    feed = SessionFollower(s.handle)
    clock.now = 100.0
    for name in ("a", "b"):  # the first draws, the second waits 1 / 0.1 = 10 s
        s.handle.record_queue_changed("enqueued", [name])
        m.ingest(feed.poll())
    base = m.redraws
    assert m.redraw_pending and m.state.undrawn == 1
    loop = asyncio.get_running_loop()
    assert m._timer.when() - loop.time() > 9
    m.max_redraw_hz = 10  # back to live: the pending redraw is due in 0.1 s, not 10 s
    assert m.state.throttle.max_hz == 10.0 and m.redraw_pending
    assert m._timer.when() - loop.time() <= 0.1 + 1e-3
    await asyncio.sleep(0.2)
    assert not m.redraw_pending and m.redraws == base + 1 and m.state.undrawn == 0
    for bad in (1e-320, 0.001, MAX_REDRAW_HZ + 1, float("inf")):
        with pytest.raises(traitlets.TraitError, match="max_redraw_hz must be a number from 0.1 to 60"):
            m.max_redraw_hz = bad
    with pytest.raises(ValueError, match="max_redraw_hz"):
        SessionMonitor(s.handle, controls=False, max_redraw_hz=0.001, start=False)
    with pytest.raises(traitlets.TraitError, match="at most 1000"):
        m.visible_rows = 10**100
    assert m.max_redraw_hz == 10 and m.visible_rows == m.state.visible_rows
    m.max_redraw_hz = MAX_REDRAW_HZ  # no redraw pending: nothing is scheduled
    assert not m.redraw_pending


# -- bare strings and bad numbers at every entry point -----------------------------------------------------


async def test_a_bare_string_of_names_and_bad_numbers_are_typed_errors_at_every_entry_point():
    from lash_core import InvalidObservationError
    from lash_nb import ReconnectSimulator

    s = await Scenario.create(backend="memory")  # its statistics count subscribers
    h = s.handle
    with pytest.raises(InvalidObservationError, match="clients must be a list of strings, not a single str 'Alice'"):
        ReconnectSimulator(h, clients="Alice")
    for controls in (True, False):
        with pytest.raises(InvalidObservationError, match="clients must be a list"):
            SessionMonitor(h, clients="Alice", controls=controls, start=False)
    with pytest.raises(InvalidObservationError, match="must not repeat"):
        ReconnectSimulator(h, clients=["A", "A"])
    with pytest.raises(InvalidObservationError, match="non-empty strings"):
        ReconnectSimulator(h, clients=["A", 7])
    assert s.store.statistics(s.session_id).subscribers == 0  # nothing was built
    sim = ReconnectSimulator(h, clock=s.clock, clients=["Alice", "Bob"])
    assert list(sim.clients) == ["Alice", "Bob"] and sim.picker.options == ("Alice", "Bob")
    before = s.clock.now
    for bad in (True, float("nan"), float("inf"), -1, "30"):
        with pytest.raises(ValueError, match="The clock only moves forward: give a finite number of seconds"):
            sim.advance_clock(bad)
    assert s.clock.now == before
    sim.advance_seconds.value = float("nan")
    sim.advance_button.click()  # shown, not raised
    assert "finite number" in sim.last_error and s.clock.now == before


async def test_start_producer_checks_its_arguments_before_starting_anything():
    from lash_core import InvalidTurnInputError

    s = await Scenario.create()
    tasks = len(asyncio.all_tasks())
    with pytest.raises(InvalidTurnInputError, match="prompts must be a list of strings, not a single str 'Say hello'"):
        start_producer(s.handle, prompts="Say hello")
    for prompts in ([], ["ok", 3], [""]):
        with pytest.raises(InvalidTurnInputError, match="prompts"):
            start_producer(s.handle, prompts=prompts)
    for interval in (float("nan"), float("inf"), -1, True, "1"):
        with pytest.raises(ValueError, match="interval must be a finite number of seconds >= 0"):
            start_producer(s.handle, interval=interval)
    for max_turns in (True, -1, 1.5):
        with pytest.raises(ValueError, match="max_turns"):
            start_producer(s.handle, max_turns=max_turns)
    with pytest.raises(ValueError, match="queue_worker must be a bool"):
        start_producer(s.handle, queue_worker="yes")
    assert len(asyncio.all_tasks()) == tasks  # nothing started
    producer = start_producer(s.handle, interval=0, prompts=["Say hello", "Say hello"], max_turns=2, queue_worker=False)
    assert await asyncio.wait_for(producer.wait(), 10) == 2
    assert s.handle.observe().revision == 2


# -- a source that is not a RuntimeHandle: read-only ----------------------------------------------


async def test_a_monitor_over_a_source_that_is_not_a_handle_is_read_only():
    from lash_core import RetryPolicy, StoreSource

    s = await Scenario.create(backend="memory")
    m = SessionMonitor(StoreSource(s.store, s.session_id), clock=s.clock, grid="html")  # controls=True asked
    assert m.read_only and m.state.read_only
    assert m.enqueue_panel is None and m.queue_panel is None and m.simulator is None
    assert m.read_only_note is not None and m.read_only_note in m.children
    assert "Read-only: this monitor follows a StoreSource" in m.read_only_note.value
    assert "not shown" in m.processes_view.value
    assert m.state.follower.retry == RetryPolicy()  # a source elsewhere: outages are ridden out
    delta(s.handle, "<i>x</i>")
    await settle(m)
    assert m.event_count == 1 and texts(m.frame()) == ["<i>x</i>"] and m.connected
    assert "&lt;i&gt;x&lt;/i&gt;" in m.table.value and "<i>x</i>" not in m.table.value
    for action in (lambda: m.disconnect("A"), lambda: m.reconnect("A")):
        with pytest.raises(RuntimeError, match="Read-only"):
            action()
    with pytest.raises(RuntimeError, match="Read-only"):
        await m.enqueue("hello")
    with pytest.raises(RuntimeError, match="Read-only"):
        await m.cancel("qwb-1")
    with pytest.raises(RuntimeError, match="Read-only"):
        await m.refresh_processes()
    m.stop()

    # a RuntimeHandle keeps its controls and stops on a store failure, as before (no policy)
    h = SessionMonitor(s.handle, clock=s.clock, start=False)
    assert not h.read_only and h.read_only_note is None and h.simulator is not None
    assert h.state.follower.retry is None
    policy = RetryPolicy(initial_delay_s=0.05)
    assert SessionMonitor(s.handle, controls=False, start=False, retry=policy).state.follower.retry is policy
    with pytest.raises(RuntimeError, match="controls=False"):
        await SessionMonitor(s.handle, controls=False, start=False).enqueue("x")
    s.close()


async def test_a_monitor_over_an_asynchronous_source_shows_where_it_is_at_once():
    # before: it said "stopped, revision 0, no events" until the next event arrived
    from sources import OutageSource

    s = await Scenario.create(backend="memory")
    await s.handle.run_turn("hello")  # revision 1, committed, before the monitor exists
    m = SessionMonitor(OutageSource(s.handle), clock=s.clock)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if m.connected:
            break
    assert m.read_only and m.connected  # subscribed, shown live
    assert m.state.follower.observation.read_view.turn_index == 1
    await settle(m)  # the redraw it asked for (throttled) is drawn
    assert "live" in m.header.value and "lashsc1:1:12:" in m.header.value  # the tail's cursor
    delta(s.handle, "after")
    await settle(m)
    assert texts(m.frame())[-1] == "after"
    m.stop()


async def test_the_sync_twins_run_the_actions_from_a_synchronous_callback():
    # a learner's on_click callback cannot await: the *_sync twins run the action to completion
    import ipywidgets as widgets

    s, m = await make()
    seen = []

    def on_click(_button):
        batch = m.enqueue_sync("from a callback", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
        seen.append(batch)
        seen.append(m.cancel_sync(batch.batch_id))
        seen.append(m.cancel_sync("qwb-nope"))

    button = widgets.Button(description="enqueue then cancel")
    button.on_click(on_click)
    button.click()  # synchronous, inside the running loop, as in a kernel
    batch, cancelled, unknown = seen
    assert batch.items[0].payload.content == "from a callback"
    assert (cancelled, unknown) == (CancelOutcome.CANCELLED, CancelOutcome.UNKNOWN)
    assert await s.queue.list_queued_work(s.session_id) == []
    assert m.refresh_processes_sync() == []
    with pytest.raises(InvalidTurnInputError, match="Type some text"):
        m.enqueue_sync("")
