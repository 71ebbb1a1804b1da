"""SessionMonitor and its controls, driven through their state in a real loop with a real runtime."""

import asyncio

import pytest

from lash_core import (
    DeliveryPolicy,
    InvalidTurnInputError,
    LiveReplayGapReason,
    QueuedWorkClaimBoundary,
    ScriptedModel,
    SlotPolicy,
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
    monitor = SessionMonitor(scenario.handle, store=scenario.store, clock=scenario.clock)
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
    assert m.queue_panel.outcomes == [(a.batch_id, "refused"), (b.batch_id, "cancelled"), ("qwb-nope", "unknown")]
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
    assert m.queue_panel.outcomes == [(batch.batch_id, "cancelled")]
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
