"""The monitor with its live Perspective grid (the default when perspective-python is installed):
rows and stream markers reach the grid in order as deltas, pause/follow, the cursor labels,
Run turn, the busy state, the drain with its progress bar, CSV, and the static copy for saved
notebooks. Driven through the monitor's methods and state, as a browser would through its
buttons (tests/browser drives the same in JupyterLab)."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest

from lash_core import InvalidTurnInputError
from lash_core.testing import Scenario
from lash_nb import SessionMonitor, render
from lash_nb._grid import grid_available

pytestmark = pytest.mark.skipif(not grid_available(), reason="perspective-python is not installed")


async def settle(monitor, rounds=5):
    for _ in range(rounds):
        await asyncio.sleep(0.01)
    monitor.flush()


async def make(**kw):
    scenario = await Scenario.create(**kw)
    monitor = SessionMonitor(scenario.handle, clock=scenario.clock)
    return scenario, monitor


def grid_events(monitor):
    """The grid's event rows (markers left out), oldest first."""
    frame = monitor.grid.frame()
    return frame[frame["marker"].fillna("") == ""]


async def test_the_default_monitor_shows_the_whole_history_in_the_grid():
    s, m = await make(replies=["hello there"], cycle=False)
    try:
        assert m.grid is not None and m.table is None
        assert m.tabs.titles == ("Events", "Session", "Queue", "Reconnect lab", "Event detail")
        await s.handle.run_turn("go")
        await s.handle.run_turn("again")
        await settle(m)
        history = m.state.frame()
        rows = grid_events(m)
        assert len(rows) == len(history) > 5
        assert [int(p) for p in rows["position"]] == [int(p) for p in history["position"]]
        assert list(rows["payload_type"]) == [str(v) for v in history["payload_type"]]
        stats = m.grid.statistics()
        assert stats.rows_queued == 0 and stats.rows_sent == len(history)
        # more redraws than grid updates is fine; never more updates than redraws
        assert 1 <= stats.updates <= m.redraws
    finally:
        m.stop()
        s.close()


async def test_each_update_sends_the_new_rows_only():
    s, m = await make(replies=["abc"], cycle=False, chunk_size=1)
    try:
        for i in range(5):
            await s.handle.run_turn(f"turn {i}")
        await settle(m)
        held = m.grid.statistics().rows_held
        before = m.grid.statistics()
        await s.handle.run_turn("one more")
        await settle(m)
        after = m.grid.statistics()
        new_rows = after.rows_sent - before.rows_sent
        assert 0 < new_rows < held  # a delta: the new turn's rows, not the history
        assert after.updates == before.updates + 1
        assert after.last_update_bytes < (after.bytes_sent / after.updates) * 3
    finally:
        m.stop()
        s.close()


async def test_pause_keeps_the_grid_still_and_follow_shows_what_came_meanwhile():
    s, m = await make(replies=["xyz"], cycle=False)
    try:
        await s.handle.run_turn("first")
        await settle(m)
        shown = len(grid_events(m))
        m.pause_button.value = True  # the button: pause
        assert m.paused and m.grid.paused and m.pause_button.description == "Follow"
        await s.handle.run_turn("second")
        await settle(m)
        assert len(grid_events(m)) == shown  # still
        assert m.event_count > shown  # yet everything arrived and is counted
        assert "last event applied" in m.header.value  # the header keeps counting
        m.pause_button.value = False  # the button: follow
        assert not m.paused and m.pause_button.description == "Pause"
        assert len(grid_events(m)) == m.event_count
    finally:
        m.stop()
        s.close()


async def test_a_store_restart_is_a_marked_row_and_the_epoch_orders_the_rows():
    first = await Scenario.create(backend="memory", replies=["one"], cycle=False)
    second = await Scenario.create(backend="memory", replies=["two"], cycle=False)  # same session id
    m = SessionMonitor(first.handle, controls=False, start=False)
    try:
        mark = first.handle.current_session_observation().cursor
        await first.handle.run_turn("a")
        old = list(first.handle.resume_session_observation(mark).events)
        mark = second.handle.current_session_observation().cursor
        await second.handle.run_turn("b")
        new = list(second.handle.resume_session_observation(mark).events)
        assert new[0].live_position <= old[-1].live_position  # the new store numbers from the start
        m.ingest(old)
        m.ingest(new)
        m.flush()
        assert m.state.epoch == 1 and [k.kind for k in m.state.markers] == ["restart"]
        frame = m.grid.frame()
        markers = frame[frame["marker"].fillna("") != ""]
        assert len(markers) == 1 and "store restarted" in markers["marker"].iloc[0]
        (at,) = markers.index
        assert list(frame.loc[: at - 1, "epoch"].unique()) == [0] if at else True
        assert set(frame.loc[at + 1 :, "epoch"]) == {1}
        assert "1 store restarts" in m.header.value
    finally:
        m.stop()
        first.close()
        second.close()


async def test_the_header_labels_the_last_event_applied_and_the_last_commit():
    s, m = await make(replies=["hello world, a longer reply"], cycle=False, chunk_size=2)
    try:
        await s.handle.run_turn("go")
        await settle(m)
        stats = m.state.statistics()
        assert stats.commit_position == stats.position  # the turn ended with its commit
        # half a turn: deltas after the commit move the event cursor, not the commit's
        from lash_core import AssistantProseDelta, TurnActivity

        s.handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta("more")))
        await settle(m)
        stats = m.state.statistics()
        assert stats.position == stats.commit_position + 1
        assert m.turn_running and stats.turn_running
        header = m.header.value
        assert "last event applied" in header and f"position #{stats.position}" in header
        assert "last commit" in header and f"at position #{stats.commit_position}" in header
        assert "turn running" in header
    finally:
        m.stop()
        s.close()


async def test_run_turn_runs_a_turn_and_refuses_empty_input_in_plain_words():
    s, m = await make(replies=["sure"], cycle=False)
    try:
        panel = m.enqueue_panel
        panel.text.value = "do it"
        outcome = await panel.run_turn()
        assert outcome.ok and panel.turns_run == 1 and panel.text.value == ""
        assert panel.last_outcome.startswith("turn finished") and "sure" in panel.last_outcome
        assert not panel.running and not panel.run_button.disabled
        with pytest.raises(InvalidTurnInputError):
            await panel.run_turn("   ")
        assert panel.last_error == "Type some text to run a turn with."
        assert "InvalidTurnInputError" not in panel.result.value
        await settle(m)
        assert not m.turn_running  # committed
    finally:
        m.stop()
        s.close()


async def test_the_run_turn_button_is_busy_while_the_turn_runs():
    s, m = await make(replies=["slow"], cycle=False, delay=0.05, fake_clock=False)
    try:
        panel = m.enqueue_panel
        panel.text.value = "go"
        panel.run_button.click()
        assert panel.running and panel.run_button.disabled
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not panel.running:
                break
        assert not panel.running and panel.turns_run == 1
    finally:
        m.stop()
        s.close()


async def test_drain_runs_the_queue_with_a_progress_bar():
    s, m = await make(replies=["done"], cycle=False)
    try:
        for i in range(3):
            await m.enqueue(f"job {i}")
        ran = await m.drain()
        assert ran >= 1
        store = s.handle.observe().queue_store
        assert await store.list_pending_queued_work(s.session_id) == []
        (bar,) = m.progress_box.children
        progress = [c for c in bar.children if hasattr(c, "max") and hasattr(c, "value")][0]
        assert progress.max == 3 and progress.value == 3
    finally:
        m.stop()
        s.close()


async def test_csv_export_holds_the_grid_rows():
    s, m = await make(replies=["csv, \"quoted\"\nline"], cycle=False)
    try:
        await s.handle.run_turn("go")
        await settle(m)
        rows = list(csv.DictReader(io.StringIO(m.to_csv())))
        events = [r for r in rows if not r.get("marker")]
        assert len(events) == m.event_count
        # in the grid's order: newest first (its default sort)
        assert [int(float(r["position"])) for r in events] == [int(p) for p in m.state.frame()["position"]][::-1]
    finally:
        m.stop()
        s.close()


def test_a_displayed_monitor_publishes_a_static_copy_after_the_widget(monkeypatch):
    published = []

    def fake_display(*objs, **kw):
        published.append((objs, kw))

    def fake_update(obj, **kw):
        published.append(((obj,), dict(kw, update=True)))

    import IPython
    import IPython.display

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())  # as in a kernel
    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(IPython.display, "update_display", fake_update)

    async def run():
        s, m = await make(replies=["<img src=x onerror=alert(1)>"], cycle=False)
        try:
            m._ipython_display_()
            (widget_bundle,), widget_kw = published[0]
            assert "application/vnd.jupyter.widget-view+json" in widget_bundle and widget_kw["raw"]
            # where widgets cannot render (nbconvert, a terminal): a plain line, not a frozen repr
            assert widget_bundle["text/plain"].startswith("SessionMonitor of session 'demo-session' (a live")
            (copy,), copy_kw = published[1]
            assert copy_kw["display_id"] == m._snapshot_id
            html = copy["text/html"]
            assert f'data-lash-snapshot="{m._snapshot_id}"' in html and "static copy" in html
            await s.handle.run_turn("go")
            await settle(m)
            m.stop()  # the copy is brought up to date when the monitor stops
            (last,), last_kw = published[-1]
            assert last_kw.get("update") and last_kw["display_id"] == m._snapshot_id
            assert "<img src=x" not in last["text/html"]  # escaped, as every rendering
            assert f"{m.event_count} events" in last["text/html"]
            # the live widget hides its copy while it renders
            assert render.hide_snapshot_style(m._snapshot_id) in [c.value for c in m.children if hasattr(c, "value")]
        finally:
            m.stop()
            s.close()

    asyncio.run(run())


async def test_a_gap_is_a_marked_row_before_the_rows_that_came_after_it():
    s, m = await make(replies=["a reply long enough to stream in several deltas"], cycle=False, max_events=8)
    try:
        await s.handle.run_turn("one")
        await settle(m)
        m.stop()
        for i in range(3):  # far more than the 8 events retention keeps
            await s.handle.run_turn(f"while away {i}")
        m.start()
        await settle(m)
        assert m.gaps == 1 and [k.kind for k in m.state.markers] == ["gap"]
        frame = m.grid.frame()
        text = frame["marker"].fillna("")
        (at,) = [i for i, t in enumerate(text) if t]
        assert text.iloc[at].startswith("gap (trimmed)")
        assert at == len(frame) - 1 or frame["position"].iloc[at + 1] > frame["position"].iloc[at - 1]
    finally:
        m.stop()
        s.close()


async def test_close_releases_the_grid_table():
    from lash_nb._grid import hosted_tables

    s, m = await make()
    name = m.grid.table_name
    assert name in hosted_tables()
    m.close()
    assert name not in hosted_tables() and not m.connected
    s.close()


def test_an_unknown_grid_kind_is_refused_plainly():
    async def run():
        s = await Scenario.create()
        try:
            with pytest.raises(ValueError, match='grid must be "auto", "perspective" or "html"'):
                SessionMonitor(s.handle, grid="ag-grid", start=False)
        finally:
            s.close()

    asyncio.run(run())


def test_displayed_outside_ipython_the_monitor_prints_its_repr_and_publishes_nothing(capsys):
    async def run():
        s, m = await make()
        try:
            m._ipython_display_()
            assert not m._snapshot_displayed  # so no static copy is published every second
            await s.handle.run_turn("go")
            await settle(m)
        finally:
            m.stop()
            s.close()

    asyncio.run(run())
    out = capsys.readouterr().out
    assert out.startswith("<SessionMonitor session='demo-session'") and out.count("\n") == 1


async def test_csv_refuses_a_file_descriptor_and_writes_whole_files(tmp_path):
    s, m = await make(replies=["ok"], cycle=False)
    try:
        await s.handle.run_turn("go")
        await settle(m)
        for bad in (1, True, 3.5, None.__class__):
            with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
                m.to_csv(bad)
            with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
                m.grid.to_csv(bad)
        target = tmp_path / "events.csv"
        text = m.to_csv(target)
        assert target.read_text(encoding="utf-8") == text and [p.name for p in tmp_path.iterdir()] == ["events.csv"]
    finally:
        m.stop()
        s.close()


# --- what the break-it pass found ------------------------------------------------------------------


def test_a_clock_stepping_back_never_puts_the_next_redraw_more_than_one_interval_away():
    from lash_nb import RedrawThrottle

    throttle = RedrawThrottle(10)
    throttle.drew(1_000_000.0)
    assert throttle.wait(1_000.0) == pytest.approx(0.1)  # the clock went back 999,000 s
    assert throttle.wait(1_000_000.05) == pytest.approx(0.05)


def test_rate_kinds_of_any_length_are_cut():
    from lash_nb import RateCounter
    from lash_nb._pictures import KIND_MAX_CHARS

    counter = RateCounter()
    counter.add(["x" * 1_000_000, "x" * 1_000_000, "committed"], 10.0)
    series = counter.series(10.5)
    assert all(len(k) <= KIND_MAX_CHARS for k in series.kinds) and series.total == 3
    assert len(series.caption) < 400


async def test_a_cleared_history_clears_the_grid_and_new_rows_still_arrive():
    s, m = await make(replies=["a b c d"], cycle=False)
    try:
        await s.handle.run_turn("one")
        await settle(m)
        m.history.clear()
        await s.handle.run_turn("two")
        await settle(m)
        assert len(grid_events(m)) == len(m.history) > 0
    finally:
        m.stop()
        s.close()


async def test_more_markers_than_kept_between_two_redraws_are_said_not_silently_lost():
    from lash_nb._state import MARKERS_KEPT

    s, m = await make(replies=["x"], cycle=False)
    try:
        m.stop()
        for _ in range(MARKERS_KEPT + 30):
            m.state._mark("lag", "lagged: 1 events missed (resubscribed)")
        m.flush()
        text = m.grid.frame()["marker"].fillna("")
        notes = [t for t in text if "stream markers not kept" in t]
        assert notes == [f"30 stream markers not kept (more than {MARKERS_KEPT} between two redraws): "
                         "the epochs of the rows up to the next marker are not known exactly"]
        assert sum(1 for t in text if t.startswith("lagged")) == MARKERS_KEPT
    finally:
        s.close()


async def test_turn_running_ends_when_the_turns_started_here_have_returned():
    s, m = await make(replies=["one", "two"], cycle=False, delay=0.02, fake_clock=False)
    try:
        panel = m.enqueue_panel
        first = asyncio.ensure_future(panel.run_turn("a"))
        second = asyncio.ensure_future(panel.run_turn("b"))
        await asyncio.sleep(0)
        assert panel.running
        await first
        assert panel.running and panel.run_button.disabled  # the second is still in flight
        await second
        assert not panel.running and not panel.run_button.disabled
        m.state.turn_running = True  # as after a turn whose commit the store failed to append
        panel.running = True
        panel.running = False  # what the end of a run does
        assert not m.state.turn_running and not m.turn_running
    finally:
        m.stop()
        s.close()


async def test_grid_cells_are_bounded_and_the_whole_event_stays_in_the_history():
    from lash_core import AssistantProseDelta, TurnActivity
    from lash_nb._grid import CELL_MAX_CHARS

    s, m = await make()
    try:
        big = "<b>" + "y" * 100_000
        s.handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(big)))
        await settle(m)
        cell = grid_events(m)["text"].iloc[-1]
        assert len(cell) < CELL_MAX_CHARS + 40 and cell.endswith(f"({100_003 - CELL_MAX_CHARS} more characters)")
        assert m.state.history.frame()["text"].iloc[-1] == big
    finally:
        m.stop()
        s.close()


def test_filters_take_none_as_all_and_a_bad_time_source_is_named():
    from lash_nb._state import check_types

    assert check_types("payload_types", None) == ()
    with pytest.raises(ValueError, match="payload_types must be a type name or a list of them"):
        check_types("payload_types", 3)

    async def run():
        s = await Scenario.create()
        try:
            with pytest.raises(ValueError, match="time_source must return a finite number of seconds"):
                SessionMonitor(s.handle, time_source=lambda: float("inf"), start=False)
        finally:
            s.close()

    asyncio.run(run())


async def test_the_retention_strip_says_why_it_is_not_drawn_for_a_store_without_statistics():
    s, m = await make()  # the SQLite store reports no retained range
    try:
        assert not hasattr(m.simulator._replay_store, "statistics")
        assert "retention strip not drawn: the store does not report its retained range" in m.simulator.strip.caption.value
    finally:
        m.stop()
        s.close()


async def test_the_static_copy_is_never_live_and_holds_the_newest_rows():
    from lash_nb._monitor import SNAPSHOT_ROWS

    s, m = await make(replies=["a b c d e f g h i j k l m n o p"], cycle=False, chunk_size=1)
    try:
        await s.handle.run_turn("go")
        await s.handle.run_turn("again")
        await settle(m)
        html = m._snapshot_html()
        assert "lash-live" not in html and "turn running" not in html and "lash-stopped" in html
        newest = int(m.state.frame()["position"].iloc[-1])
        assert f"<td>{newest}</td>" in html and f"<td>{newest - SNAPSHOT_ROWS}</td>" not in html
        # the dead widget output above it (text only, whatever its attributes) is what it hides
        assert ".jp-OutputArea-output:not(:has(*))" in html and "data-mime-type" not in html
    finally:
        m.stop()
        s.close()
