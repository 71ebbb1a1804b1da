"""SessionMonitor and its controls, driven through their state in a real loop with a real runtime."""

import asyncio

import traitlets

import pytest
from unencodable import BAD_VALUES, deep_list

from lash_core import (
    AssistantProseDelta,
    DeliveryPolicy,
    FinalValue,
    InvalidTurnInputError,
    LiveReplayGapReason,
    QueuedWorkClaimBoundary,
    ScriptedModel,
    SlotPolicy,
    ToolCallStarted,
    TurnActivity,
)
from lash_core.testing import Scenario
from lash_nb import SessionMonitor, start_producer


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


async def make(**kw):
    scenario = await Scenario.create(**kw)
    monitor = SessionMonitor(scenario.handle, clock=scenario.clock)
    return scenario, monitor


async def test_monitor_follows_a_turn_and_shows_cursor_revision_and_view():
    s, m = await make(replies=["Hello from the model"], cycle=False)
    assert m.connected
    await s.handle.run_turn("hi")
    await settle(m)
    assert m.revision == 1
    assert m.cursor == str(s.handle.observe().cursor)
    assert m.event_count == len(m.history) > 3
    frame = m.frame()
    assert frame["payload_type"].iloc[-1] == "committed"
    assert "assistant_prose_delta" in set(frame["event_type"].dropna())
    assert "Hello from the model" in m.session_view.value  # committed transcript
    assert "committed" in m.table.value
    m.stop()
    assert not m.connected


async def test_enqueue_shows_batch_and_queue_changed_event():
    s, m = await make()
    batch = await m.enqueue("later please", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    panel = m.enqueue_panel
    assert panel.last_batch_id == batch.batch_id and panel.enqueued == 1
    assert batch.batch_id in panel.result.value and "queue_changed" in panel.result.value
    await settle(m)
    assert m.queue_panel.batch_count == 1 and m.queue_panel.pending_count == 1
    assert batch.batch_id in m.queue_panel.rows_box.children[0].children[1].value
    assert m.frame()["payload_type"].iloc[-1] == "queue_changed"


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
    assert "InvalidTurnInputError" in panel.result.value and "empty" in panel.last_error
    with pytest.raises(InvalidTurnInputError):
        await panel.enqueue("bad \ud800 surrogate")
    assert panel.text.value == "   "  # nothing the user typed is lost


async def test_cancel_pending_refused_and_unknown_are_all_visible():
    s, m = await make()
    a = await m.enqueue("a", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    b = await m.enqueue("b", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    claim = await s.queue.claim_ready_queued_work(s.session_id, "other", QueuedWorkClaimBoundary.IDLE, 60_000, 1)
    assert [x.batch_id for x in claim.batches] == [a.batch_id]
    assert await m.cancel(a.batch_id) is None
    assert m.queue_panel.last_cancel == "refused"
    assert (await m.cancel(b.batch_id)).batch_id == b.batch_id
    assert m.queue_panel.last_cancel == "cancelled"
    assert await m.cancel("qwb-nope") is None
    assert m.queue_panel.last_cancel == "unknown"
    assert list(m.queue_panel.outcomes) == [(a.batch_id, "refused"), (b.batch_id, "cancelled"), ("qwb-nope", "unknown")]
    assert m.queue_panel.cancel_count == 3
    log = m.queue_panel.cancel_log.value
    assert "refused" in log and "cancelled" in log and "unknown" in log
    assert m.queue_panel.batch_count == 1  # the claimed one remains


async def test_cancel_button_per_batch():
    s, m = await make()
    batch = await m.enqueue("x", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    await m.queue_panel.refresh()
    row = m.queue_panel.rows_box.children[0]
    row.children[0].click()  # its Cancel button
    await settle(m)
    assert list(m.queue_panel.outcomes) == [(batch.batch_id, "cancelled")]
    assert m.queue_panel.batch_count == 0


async def test_reconnect_replay_then_trimmed_gap_then_unavailable():
    s, m = await make(max_events=50, max_age=60.0)
    sim = m.simulator
    await s.handle.run_turn("one")
    await settle(m)
    m.disconnect("A")
    await s.handle.run_turn("two")
    outcome = m.reconnect("A")
    assert outcome.kind == "replayed" and len(outcome.replayed) > 0
    assert sim.last_outcome == "replayed" and "replayed" in sim.replayed_view.value
    assert sim.view_matches("A")

    m.disconnect("B")
    sim.set_retention(max_events=3)
    assert sim.retention.value == 3 and s.store.config.max_events_per_session == 3
    await s.handle.run_turn("three")
    outcome = m.reconnect("B")
    assert outcome.gap.reason is LiveReplayGapReason.TRIMMED
    assert sim.last_outcome == "gap" and "trimmed" in sim.gap_view.value
    assert outcome.gap.missed_events and outcome.gap.missed_events > 3
    assert sim.view_matches("B")
    assert sim.gap_count == 1 and "trimmed" in sim.gap_log.value

    s.restart_store()
    outcome = m.reconnect("A")
    assert outcome.gap.reason is LiveReplayGapReason.UNAVAILABLE
    assert sim.view_matches("A")
    assert sim.gap_count == 2


async def test_sliders_and_clock_force_age_trimming():
    s, m = await make(max_events=100, max_age=60.0)
    sim = m.simulator
    m.disconnect("A")
    await s.handle.run_turn("x")
    sim.max_age.value = 10.0  # the slider itself
    assert s.store.config.max_age == 10.0
    sim.advance_seconds.value = 11
    sim.advance_button.click()
    assert s.store.statistics(s.session_id).retained_events == 0
    assert m.reconnect("A").gap.reason is LiveReplayGapReason.TRIMMED


async def test_filters_limit_the_table():
    s, m = await make(replies=["text <b>bold</b>"], cycle=False)
    await s.handle.run_turn("go")
    await settle(m)
    m.set_filter(payload_types=["committed"])
    assert m.payload_types == ["committed"]
    assert "committed" in m.table.value and "assistant_prose_delta" not in m.table.value
    m.set_filter(event_types=["assistant_prose_delta"])
    assert "assistant_prose_delta" in m.table.value and ">committed<" not in m.table.value
    assert "<b>bold" not in m.table.value  # escaped, never injected
    m.set_filter()
    assert "committed" in m.table.value and "assistant_prose_delta" in m.table.value
    with pytest.raises(ValueError, match="unknown type"):
        m.set_filter(payload_types=["nope"])


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
    m = SessionMonitor(s.handle, time_source=clock, controls=False, max_redraw_hz=10)
    base = m.redraws
    h = s.handle
    clock.now = 1.0  # well after the initial draw
    for i in range(50):  # a burst inside one throttle window
        h.record_queue_changed("enqueued", [f"b{i}"])
        m.ingest(m._subscription.next_batch_nowait())
    assert m.redraws == base + 1  # the first drew at once, the rest wait
    assert m.redraw_pending
    assert "b49" not in m.table.value
    clock.now = 1.1  # the window ends: the pending redraw fires with the last batch
    await asyncio.sleep(0.15)
    assert not m.redraw_pending
    assert m.redraws == base + 2
    assert "b49" in m.table.value
    # a batch arriving after a window's due time but before its timer ran must not draw twice
    clock.now = 1.15
    h.record_queue_changed("enqueued", ["late-1"])
    m.ingest(m._subscription.next_batch_nowait())
    assert m.redraw_pending and m.redraws == base + 2
    clock.now = 1.5  # past due, timer not yet run
    h.record_queue_changed("enqueued", ["late-2"])
    m.ingest(m._subscription.next_batch_nowait())
    assert m.redraws == base + 2  # still only the timer's redraw to come
    await asyncio.sleep(0.15)
    assert m.redraws == base + 3 and "late-2" in m.table.value
    m.stop()


async def test_monitor_survives_lag_by_resubscribing():
    s = await Scenario.create(subscriber_backlog=8, max_events=4)
    m = SessionMonitor(s.handle, controls=False)
    for i in range(30):  # no await: the monitor cannot read in between
        s.handle.record_queue_changed("enqueued", [str(i)])
    await settle(m)
    assert m.lagged == 22  # told it missed events beyond the backlog
    assert m.gaps == 1  # resubscribing from its cursor met a trimmed gap and reloaded
    assert m.cursor == str(s.handle.current_session_observation().cursor)


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
    assert len(m.history) == 10 and m.dropped_rows == 15
    assert "15 rolled over" in m.header.value


def test_widgets_need_a_running_loop():
    import asyncio as aio

    s = aio.run(Scenario.create())
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        SessionMonitor(s.handle)


# -- robustness -----------------------------------------------------------------------------------


async def test_a_lone_surrogate_in_an_event_is_escaped_and_the_monitor_lives_on():
    s, m = await make()
    bad = "bad\ud800id"  # valid in JSON, not in UTF-8 (ids refuse it; a delta's text may hold it)
    s.handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(bad)))
    await settle(m)
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
    assert "history exploded" in m.last_error and "history exploded" in m.header.value
    s.handle.record_queue_changed("enqueued", ["b"])
    await settle(m)
    assert m.connected and "b" in set(m.frame()["text"].str.split().str[-1])
    assert "history exploded" in m.header.value  # still visible after later redraws


async def test_store_restart_is_followed_by_monitor_and_clients():
    s, m = await make()
    await s.handle.run_turn("one")
    await settle(m)
    s.restart_store()
    await settle(m)
    assert m.connected and m.gaps == 1 and m.gap_log[-1].reason is LiveReplayGapReason.UNAVAILABLE
    sim = m.simulator
    assert sim.reconnect("A").gap.reason is LiveReplayGapReason.UNAVAILABLE
    await s.handle.run_turn("two")
    await settle(m)
    assert m.revision == 2 and m.connected
    assert not sim.clients["B"].connected  # its server went away: disconnected, cursor kept
    assert sim.clients["A"].connected and sim.view_matches("A")
    sim.set_retention(max_events=3)
    assert s.store.config.max_events_per_session == 3  # the sliders act on the new store


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
    assert "already queued" in panel.result.value


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
        m.visible_rows = 0
    with pytest.raises(traitlets.TraitError, match="unknown type"):
        m.payload_types = ["nope"]
    assert m.max_redraw_hz == 10 and m.payload_types == []
    m.set_filter(payload_types="committed")  # a single name is fine
    assert m.payload_types == ["committed"] and m.payload_filter.value == ("committed",)
    m.event_types = ["usage"]  # setting the trait moves the widget too
    assert m.event_filter.value == ("usage",)
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


async def test_restarting_the_monitor_does_not_leak_subscriptions():
    s, m = await make()
    before = s.store.statistics(s.session_id).subscribers
    m.stop()
    m.start()
    m.stop()
    m.start()
    assert s.store.statistics(s.session_id).subscribers == before


async def test_simulator_buttons_do_what_their_methods_do():
    s, m = await make(max_events=100, max_age=60.0)
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
    assert sim.last_outcome == "gap" and "trimmed" in sim.gap_view.value
    m.queue_panel.refresh_button.click()
    await settle(m)
    assert m.queue_panel.batch_count == 0


# -- values that cannot be encoded, strings and logs without bounds -------------------------------------


NB_BAD = ("deep", "nan", "huge_int", "object", "circular")
BAD_VALUES = {name: BAD_VALUES[name] for name in NB_BAD}


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
async def test_a_bad_event_becomes_a_counted_fallback_row_and_its_batch_still_goes_in(bad):
    make_value, kind = BAD_VALUES[bad]
    s, m = await make()
    h = s.handle
    # no await in between: the monitor reads all four as one batch
    h.record_queue_changed("enqueued", ["before"])
    h.record_turn_activity(TurnActivity.independent(ToolCallStarted(call_id="c", name="t", args=make_value())))
    h.record_turn_activity(TurnActivity.independent(FinalValue(make_value())))
    h.record_queue_changed("enqueued", ["after"])
    await settle(m)
    frame = m.frame()
    assert m.event_count == len(frame) == 4 and m.last_error == ""
    assert frame["text"].tolist()[0] == "enqueued before" and frame["text"].tolist()[-1] == "enqueued after"
    assert m.fallback_rows == m.history.statistics().fallback_rows == 2
    assert "2 fallback rows" in m.header.value
    assert m.table.value.count(f"&lt;value not shown: {kind}&gt;") == 2 and "enqueued after" in m.table.value
    position = int(frame["position"].iloc[1])
    detail = m.detail(position)
    assert "wire document not encodable" in detail and kind in detail and detail == m.detail_view.value
    assert m.cursor == str(h.current_session_observation().cursor)
    await h.run_turn("still alive?")
    await settle(m)
    assert m.connected and m.revision == 1


async def test_a_row_builder_failing_for_one_event_costs_that_event_only(monkeypatch):
    from lash_nb import _frames

    s = await Scenario.create()
    m = SessionMonitor(s.handle, controls=False)
    real = _frames.event_row

    def flaky(event, received_at):
        if event.payload.type == "queue_changed" and event.payload.batch_ids == ("boom",):
            raise RuntimeError("unforeseen")
        return real(event, received_at)

    monkeypatch.setattr(_frames, "event_row", flaky)
    for name in ("a", "boom", "c"):
        s.handle.record_queue_changed("enqueued", [name])
    await settle(m)
    assert m.frame()["text"].tolist() == ["enqueued a", "<event not shown: RuntimeError>", "enqueued c"]
    assert m.fallback_rows == 1 and m.last_error == "" and "1 fallback rows" in m.header.value


async def test_a_two_million_character_delta_keeps_the_live_table_small():
    from lash_nb import _render

    s = await Scenario.create()
    m = SessionMonitor(s.handle, controls=False)
    big = "<b>" + "x" * (2_000_000 - 3)
    s.handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(big)))
    for i in range(10):
        s.handle.record_queue_changed("enqueued", [f"q{i}"])
    await settle(m)
    assert len(m.table.value) < 20_000, len(m.table.value)
    assert "more characters" in m.table.value and "<b>" not in m.table.value
    frame = m.frame()
    delta_row = frame[frame["event_type"] == "assistant_prose_delta"]
    assert delta_row["text"].iloc[0] == big  # the whole text stays in the DataFrame
    position = int(delta_row["position"].iloc[0])
    assert m.event(position).payload.activity.event.text == big  # and the whole event
    detail = m.detail(position)
    assert "more characters" in detail and len(detail) < _render.DETAIL_MAX_CHARS + 10_000
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
    assert "no kept event at position 1000000" in m.detail_view.value
    with pytest.raises(KeyError):
        m.detail(10**6)


async def test_error_lines_are_bounded(monkeypatch):
    from lash_nb import _render

    s, m = await make()
    history_type = type(m.history)
    real_append = history_type.append

    def failing(self, events, received_at=None):
        raise RuntimeError("<b>" + "x" * 1_000_000)

    monkeypatch.setattr(history_type, "append", failing)
    s.handle.record_queue_changed("enqueued", ["a"])
    await settle(m)
    assert len(m.last_error) < _render.ERROR_MAX_CHARS + 100
    assert "999,003 more characters" in m.header.value and "&lt;b&gt;xxx" in m.header.value
    assert len(m.header.value) < _render.ERROR_MAX_CHARS + 5_000
    monkeypatch.setattr(history_type, "append", real_append)
    sim = m.simulator
    sim._guard(lambda: (_ for _ in ()).throw(ValueError("y" * 1_000_000)))
    assert len(sim.status.value) < _render.ERROR_MAX_CHARS + 1_000 and "more characters" in sim.status.value


async def test_the_monitor_keeps_only_the_newest_gaps():
    from lash_nb._monitor import GAP_LOG_KEPT

    s = await Scenario.create()
    m = SessionMonitor(s.handle, controls=False)
    for i in range(GAP_LOG_KEPT + 5):
        s.handle.record_queue_changed("enqueued", [str(i)])
        await settle(m, rounds=2)
        s.restart_store()
        await settle(m, rounds=2)
    assert m.gaps == GAP_LOG_KEPT + 5 and len(m.gap_log) == GAP_LOG_KEPT
    assert m.gap_log[-1].reason is LiveReplayGapReason.UNAVAILABLE and m.connected


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
        log = sim.gap_log.value
        assert log.count("<tr>") == GAP_LOG_ROWS + 1  # header + the newest gaps only
        assert f"{gaps - GAP_LOG_ROWS} earlier gaps not shown" in log
        assert f"{gaps} gaps in {gaps + 2} reconnects" in log
        newest_name, newest = sim.gap_entries[-1]
        assert newest_name == "B" and newest == sim.clients["B"].gaps[-1].gap
    # the same rows; only the numbers in them are longer
    assert abs(len(many.gap_log.value) - len(few.gap_log.value)) < 400
    assert len(many.gap_log.value) < 10_000


async def test_queue_panel_logs_and_rows_are_bounded():
    from lash_nb import _render
    from lash_nb._controls import CANCEL_LOG_LINES, CANCEL_OUTCOMES_KEPT, ERROR_LOG_LINES, QUEUE_ROWS_MAX

    s, m = await make()
    panel = m.queue_panel
    for i in range(CANCEL_OUTCOMES_KEPT + 30):
        assert await panel.cancel(f"qwb-nope-{i}") is None
    assert panel.cancel_count == CANCEL_OUTCOMES_KEPT + 30 and len(panel.outcomes) == CANCEL_OUTCOMES_KEPT
    assert panel.outcomes[-1] == (f"qwb-nope-{CANCEL_OUTCOMES_KEPT + 29}", "unknown")
    log = panel.cancel_log.value
    assert log.count('class="lash-cancel-unknown"') == CANCEL_LOG_LINES
    assert f"{CANCEL_OUTCOMES_KEPT + 30 - CANCEL_LOG_LINES} earlier cancels not shown" in log
    for _ in range(50):
        panel._show_error(RuntimeError("x" * 100_000))  # what a failing button task reports
    log = panel.cancel_log.value
    assert log.count('class="lash-error"') == ERROR_LOG_LINES
    assert len(log) < ERROR_LOG_LINES * (_render.ERROR_MAX_CHARS + 200) + CANCEL_LOG_LINES * 200 + 1_000
    for i in range(QUEUE_ROWS_MAX + 7):
        await s.handle.enqueue_turn_input(f"q{i}", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE)
    await panel.refresh()
    assert panel.batch_count == QUEUE_ROWS_MAX + 7 and len(panel.rows_box.children) == QUEUE_ROWS_MAX
    assert "7 more batches not listed" in panel.more_rows.value


async def test_a_long_replay_lists_the_newest_events_and_counts_the_rest():
    from lash_nb._controls import REPLAY_LIST_LIMIT

    s, m = await make()
    m.disconnect("A")
    for i in range(REPLAY_LIST_LIMIT + 12):
        s.handle.record_queue_changed("enqueued", [f"r{i}"])
    outcome = m.reconnect("A")
    assert len(outcome.replayed) == REPLAY_LIST_LIMIT + 12
    view = m.simulator.replayed_view.value
    assert "12 earlier replayed events not listed" in view
    assert view.count('class="lash-nb lash-event"') == REPLAY_LIST_LIMIT


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
