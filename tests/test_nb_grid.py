"""lash_nb._grid: the event history in a Perspective table, sent by deltas, paused and followed."""

from __future__ import annotations

import asyncio
import csv
import io
import sys

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lash_core import (
    AssistantProseDelta,
    DeliveryPolicy,
    QueueChanged,
    ScriptedModel,
    SessionCursor,
    SessionObservationEvent,
    SessionQueueEventKind,
    SessionRevision,
    SlotPolicy,
    TurnActivity,
    TurnActivityPayload,
)
from lash_core.testing import Scenario
from lash_nb import to_frame
from lash_nb import _grid
from lash_nb._frames import STRING_DTYPE
from lash_nb._grid import (
    COLUMNS_CONFIG,
    DEFAULT_COLUMNS,
    GRID_COLUMNS,
    INSTALL_HINT,
    EventGrid,
    GridStatistics,
    grid_available,
    hosted_tables,
)

pytest.importorskip("perspective.widget")
import perspective  # noqa: E402  (perspective-python is optional: skip without it)

STAMP = pd.Timestamp("2025-01-02 03:04:05.123456789", tz="UTC")
STAMP_MS = pd.Timestamp("2025-01-02 03:04:05.123", tz="UTC")


def synthetic_events(start: int, count: int, session_id: str = "synthetic") -> list[SessionObservationEvent]:
    """Cheap events at positions ``start..start+count-1`` (queue and prose delta payloads)."""
    out = []
    for position in range(start, start + count):
        payload = (
            QueueChanged(SessionQueueEventKind.ENQUEUED, (f"b{position}", f"c{position}"))
            if position % 3 == 0
            else TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(f"t{position}")))
        )
        cursor = SessionCursor.new(session_id, 1, position)
        out.append(SessionObservationEvent(session_id, SessionRevision(1), cursor, payload))
    return out


def synthetic_frame(start: int, count: int) -> pd.DataFrame:
    return to_frame(synthetic_events(start, count), received_at=STAMP)


#: 40 rows whose texts are unique ("e0".."e39"): the pool the state machine slices batches from
POOL = synthetic_frame(1, 40).assign(text=pd.array([f"e{i}" for i in range(40)], dtype=STRING_DTYPE))


async def record_real_events() -> list[SessionObservationEvent]:
    """A real session: a turn, a tool turn, queued work enqueued then cancelled, an agent frame,
    a process started and cancelled, and a turn whose model fails."""
    replies = (
        "Hi there.",
        ScriptedModel.tool_call("add", {"a": 2, "b": 3}, text="Adding. "),
        "2 + 3 = 5.",
        ScriptedModel.failure("model exploded", text="Oops"),
    )
    async with await Scenario.create(replies=replies, cycle=False, backend="memory") as scenario:
        client = scenario.client("grid")
        handle = scenario.handle
        await handle.run_turn("hello <script>alert(1)</script>")
        await handle.run_turn("add 2 and 3")
        batch = await handle.enqueue_turn_input("later", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN)
        await handle.cancel_queued_work_batch(scenario.session_id, batch.batch_id)
        await handle.open_agent_frame("frame-1")
        process = handle.start_process("indexer")
        handle.cancel_process(process.process_id)
        await handle.run_turn("fail please")
        return client.pump()


@pytest.fixture(scope="module")
def real_frame() -> pd.DataFrame:
    return to_frame(asyncio.run(record_real_events()), received_at=STAMP)


@pytest.fixture
def grid():
    grid = EventGrid(limit=100)
    yield grid
    grid.close()


def seqs(grid: EventGrid) -> list[int]:
    return grid.frame()["seq"].tolist()


def csv_records(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# --- the widget -------------------------------------------------------------------------------------


def test_widget_is_a_read_only_datagrid_newest_first_in_server_mode(grid):
    widget = grid.widget
    assert isinstance(widget, perspective.widget.PerspectiveWidget)
    assert widget.plugin == "Datagrid"
    assert widget.binding_mode == "server"
    assert widget.sort == [["seq", "desc"]]
    assert widget.settings is False
    assert widget.columns == list(DEFAULT_COLUMNS)
    assert widget.columns[-1] == "seq" and widget.columns[:5] == [
        "position", "revision", "payload_type", "event_type", "text",
    ]
    assert widget.plugin_config == {"edit_mode": "READ_ONLY"}
    assert widget.columns_config == dict(COLUMNS_CONFIG)
    assert widget.columns_config["position"]["number_format"]["maximumFractionDigits"] == 0
    assert widget.layout.height == "420px"
    assert widget.table_name == grid.table_name and grid.table_name in hosted_tables()
    assert widget.table.schema() == dict(_grid.GRID_SCHEMA)
    assert widget.table.get_limit() == 100
    assert "following" in repr(grid) and grid.limit == 100 and not grid.paused


def test_height_and_limit_are_checked():
    grid = EventGrid(limit=3, height="30em")
    try:
        assert grid.widget.layout.height == "30em"
        assert grid.statistics() == GridStatistics(0, 0, 0, 0, 0, 0, 0, 3)
    finally:
        grid.close()
    with pytest.raises(ValueError, match="limit must be >= 1"):
        EventGrid(limit=0)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        EventGrid(limit=2**32)
    with pytest.raises(TypeError, match="limit must be an int"):
        EventGrid(limit=True)
    with pytest.raises(TypeError, match="height"):
        EventGrid(height=420)


# --- schema ---------------------------------------------------------------------------------------


def test_real_frames_round_trip(grid, real_frame):
    assert len(real_frame) > 20
    assert grid.add_frame(real_frame) == len(real_frame)
    assert grid.flush() == len(real_frame)
    held = grid.frame()
    assert list(held.columns) == list(GRID_COLUMNS)
    assert held["seq"].tolist() == list(range(1, len(real_frame) + 1))
    assert held["epoch"].tolist() == [0] * len(real_frame)
    assert held["marker"].tolist() == [""] * len(real_frame)
    for name in ("position", "revision"):
        assert str(held[name].dtype) == "UInt64"
        assert held[name].tolist() == real_frame[name].tolist()
    for name in ("cursor", "session_id", "payload_type", "event_type", "text", "frame_id", "correlation_id"):
        expected = [None if pd.isna(v) else str(v) for v in real_frame[name]]
        assert [None if pd.isna(v) else v for v in held[name]] == expected, name
    for name in ("batch_ids", "process_ids"):
        assert held[name].tolist() == [",".join(ids) for ids in real_frame[name]]
    assert any(held["process_ids"] != "") and any(held["batch_ids"] != "")
    assert str(held["received_at"].dtype) == "datetime64[ns, UTC]"
    assert held["received_at"].tolist() == [STAMP_MS] * len(real_frame)  # floored to the ms
    # every kind of row made it: turn activity, queue, process, frame, committed
    assert {"turn_activity", "queue_changed", "process_changed", "agent_frame_switched", "committed"} <= set(
        held["payload_type"].dropna()
    )


def test_missing_values_are_nulls_in_the_table(grid):
    frame = synthetic_frame(1, 3)
    frame["position"] = pd.array([pd.NA, 2, 3], dtype="UInt64")
    frame["received_at"] = pd.Series([STAMP, pd.NaT, STAMP], dtype="datetime64[ns, UTC]")
    grid.add_frame(frame)
    grid.flush()
    view = grid.widget.table.view(sort=[["seq", "asc"]])
    raw = view.to_columns()
    view.delete()
    assert raw["position"] == [None, 2.0, 3.0]
    assert raw["event_type"] == ["assistant_prose_delta", "assistant_prose_delta", None]
    assert raw["frame_id"] == [None, None, None]
    assert raw["received_at"][1] is None
    held = grid.frame()
    assert held["position"].isna().tolist() == [True, False, False]
    assert held["received_at"].isna().tolist() == [False, True, False]


def test_u64_positions_are_exact_up_to_2_53(grid):
    # every magnitude, and the values a decimal literal gets wrong ("9007199254740991.0")
    exact = [0, 1, 2**31 - 1, 2**31, 2**32 + 1, 10**15 + 1, 8788444088577676, 2**53 - 1, 2**53]
    beyond = [2**53 + 1, 2**63 - 1, 2**63 + 2**40, 2**64 - 1]
    frame = synthetic_frame(1, len(exact) + len(beyond))
    frame["position"] = pd.array(exact + beyond, dtype="UInt64")
    frame["revision"] = pd.array(list(reversed(exact + beyond)), dtype="UInt64")
    grid.add_frame(frame)
    grid.flush()
    held = grid.frame()
    assert held["position"].tolist()[: len(exact)] == exact  # 2**31 did not wrap, nothing rounded
    assert held["revision"].tolist()[len(beyond):] == list(reversed(exact))
    # beyond 2**53: rounded to the nearest float (2**53 + 1 -> 2**53, ties to even), and from
    # 2**63 (a float literal) within a few units of that float's last place; never past u64
    rounded = held["position"].tolist()[len(exact):]
    assert rounded[:2] == [2**53, 2**63]
    assert all(abs(got - want) <= 4096 for got, want in zip(rounded[2:], beyond[2:]))
    assert rounded[-1] <= 2**64 - 1
    # the cursor keeps the exact value of a rounded position
    assert held["cursor"].tolist() == frame["cursor"].tolist()
    # sorting by position is numeric, not textual
    view = grid.widget.table.view(columns=["position"], sort=[["position", "asc"]])
    try:
        assert view.to_columns()["position"][:4] == [0.0, 1.0, float(2**31 - 1), float(2**31)]
    finally:
        view.delete()
    # the CSV writes every exact position so that it parses back to the same integer
    grid.widget.columns = ["position"]
    grid.widget.sort = [["seq", "asc"]]
    rows = csv_records(grid.to_csv())[1:]
    assert [int(float(r[0])) for r in rows][: len(exact)] == exact


def test_strings_are_stored_verbatim_but_nul_and_lone_surrogates(grid):
    texts = [
        "<script>alert('x')</script>",
        "<b>bold</b> &amp; \"quoted\", commas\nand a newline",
        "é ünïcödé 😀 \U0001F600",
        "\x1b[31mred\x1b[0m\ttab",
        "a\x00b",
        "lone \ud800 surrogate",
        "literal \\u0000 escape",
    ]
    frame = synthetic_frame(1, len(texts)).assign(text=pd.array(texts, dtype=STRING_DTYPE))
    grid.add_frame(frame)
    grid.flush()
    held = grid.frame()["text"].tolist()
    assert held[:4] == texts[:4]
    assert held[4] == "a\ufffdb"
    assert held[5] == "lone \ufffd surrogate"
    assert held[6] == texts[6]
    assert grid.statistics().updates == 1


def test_bad_frames_and_epochs_are_refused_before_anything_is_queued(grid):
    with pytest.raises(TypeError, match="DataFrame"):
        grid.add_frame([1, 2])
    with pytest.raises(ValueError, match="lacks the event columns"):
        grid.add_frame(synthetic_frame(1, 2).drop(columns=["cursor"]))
    with pytest.raises(ValueError, match="epoch"):
        grid.add_frame(synthetic_frame(1, 2), epoch=-1)
    with pytest.raises(ValueError, match="epoch"):
        grid.add_marker("x", epoch=2**31)
    with pytest.raises(TypeError, match="epoch"):
        grid.add_frame(synthetic_frame(1, 2), epoch=1.0)
    with pytest.raises(TypeError, match="text"):
        grid.add_marker(b"x", epoch=0)
    with pytest.raises(ValueError, match="position"):
        grid.add_frame(synthetic_frame(1, 2).assign(position=["x", "y"]))
    assert grid.statistics() == GridStatistics(0, 0, 0, 0, 0, 0, 0, 100)
    assert grid.add_frame(synthetic_frame(1, 0)) == 0 and grid.flush() == 0


# --- markers --------------------------------------------------------------------------------------


def test_markers_are_queued_in_order_with_the_rows(grid):
    grid.add_frame(synthetic_frame(1, 3))
    grid.add_marker("store restarted: positions start again", epoch=1, received_at="2025-01-02 03:04:06")
    grid.add_frame(synthetic_frame(1, 2), epoch=1)
    assert grid.statistics().rows_queued == 6
    assert grid.flush() == 6
    held = grid.frame()
    assert held["seq"].tolist() == [1, 2, 3, 4, 5, 6]
    assert held["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    assert held["position"].tolist() == [1, 2, 3, pd.NA, 1, 2]
    marker = held.iloc[3]
    assert marker["marker"] == marker["text"] == "store restarted: positions start again"
    assert marker["received_at"] == pd.Timestamp("2025-01-02 03:04:06", tz="UTC")
    assert all(pd.isna(marker[c]) for c in ("cursor", "payload_type", "event_type", "batch_ids", "session_id"))
    assert held["marker"].tolist() == ["", "", "", marker["marker"], "", ""]
    # a marker without a time is stamped now
    before = pd.Timestamp.now(tz="UTC").floor("ms")
    grid.add_marker("now", epoch=1)
    grid.flush()
    assert grid.frame()["received_at"].iloc[-1] >= before


# --- rollover and deltas --------------------------------------------------------------------------


def test_rollover_keeps_the_newest_limit_rows_in_order():
    grid = EventGrid(limit=5)
    try:
        for batch in range(3):
            assert grid.add_frame(synthetic_frame(1 + 4 * batch, 4)) == 4
            assert grid.flush() == 4
        held = grid.frame()
        assert held["seq"].tolist() == [8, 9, 10, 11, 12]
        assert held["position"].tolist() == [8, 9, 10, 11, 12]
        assert grid.statistics() == GridStatistics(
            rows_queued=0, rows_sent=12, updates=3, bytes_sent=grid.statistics().bytes_sent,
            last_update_bytes=grid.statistics().last_update_bytes, rows_held=5, dropped_pending=0,
            limit=5,
        )
        # one frame bigger than the limit: only its newest rows are queued, the rest counted
        assert grid.add_frame(synthetic_frame(100, 12)) == 12
        stats = grid.statistics()
        assert (stats.rows_queued, stats.dropped_pending) == (5, 7)
        assert grid.flush() == 5
        held = grid.frame()
        assert held["seq"].tolist() == [20, 21, 22, 23, 24]
        assert held["position"].tolist() == [107, 108, 109, 110, 111]
        stats = grid.statistics()
        assert stats.rows_sent + stats.rows_queued + stats.dropped_pending == 24
        assert stats.rows_held == 5
    finally:
        grid.close()


def test_update_bytes_grow_with_the_batch_not_with_the_history():
    small, large = EventGrid(limit=20_000), EventGrid(limit=20_000)
    try:
        small.add_frame(synthetic_frame(1, 10))
        small.flush()
        large.add_frame(synthetic_frame(1, 10_000))
        large.flush()
        assert large.statistics().rows_held == 10_000
        batch = synthetic_frame(20_001, 10)
        small.add_frame(batch)
        large.add_frame(batch)
        assert small.flush() == large.flush() == 10
        small_bytes = small.statistics().last_update_bytes
        large_bytes = large.statistics().last_update_bytes
        # the same 10 rows; only the seq numbers are longer in the big grid
        assert small_bytes <= large_bytes <= small_bytes * 1.1
        assert large_bytes < 10 * 400
        first = large.statistics().bytes_sent - large_bytes
        assert first > 500 * large_bytes  # the first, 10,000-row update
        assert large.statistics().updates == 2
    finally:
        small.close()
        large.close()


# --- pause and follow -----------------------------------------------------------------------------


def test_pause_holds_rows_back_and_follow_sends_them_in_one_update():
    grid = EventGrid(limit=6)
    try:
        grid.add_frame(synthetic_frame(1, 2))
        assert grid.flush() == 2
        grid.pause()
        assert grid.paused and "paused" in repr(grid)
        grid.add_frame(synthetic_frame(3, 3))
        grid.add_marker("m", epoch=0)
        assert grid.flush() == 0
        assert seqs(grid) == [1, 2]
        stats = grid.statistics()
        assert (stats.rows_queued, stats.rows_sent, stats.updates, stats.dropped_pending) == (4, 2, 1, 0)
        # more than limit pending: the oldest pending are dropped and counted
        grid.add_frame(synthetic_frame(6, 4))
        stats = grid.statistics()
        assert (stats.rows_queued, stats.dropped_pending) == (6, 2)
        assert grid.follow() == 6
        assert not grid.paused
        assert seqs(grid) == [5, 6, 7, 8, 9, 10]  # exactly as if every row had been sent
        stats = grid.statistics()
        assert (stats.rows_queued, stats.rows_sent, stats.updates, stats.rows_held) == (0, 8, 2, 6)
        assert stats.rows_sent + stats.rows_queued + stats.dropped_pending == 10
        assert grid.follow() == 0 and grid.statistics().updates == 2  # nothing queued: no update
    finally:
        grid.close()


class GridMachine(RuleBasedStateMachine):
    """Any interleaving of add_frame / add_marker / flush / pause / follow against a list of
    everything added: after each send the table holds that list's newest ``limit`` rows, in
    order; nothing is lost or duplicated."""

    def __init__(self) -> None:
        super().__init__()
        self.grid: EventGrid | None = None

    @initialize(limit=st.integers(1, 7))
    def create(self, limit: int) -> None:
        self.grid = EventGrid(limit=limit)
        self.limit = limit
        self.added: list[tuple[int, str]] = []  # (seq, text) of every row added
        self.sent_upto = 0  # rows of `added` conceptually sent (dropped pending rows count)
        self.paused = False
        self.markers = 0

    @rule(start=st.integers(0, 39), count=st.integers(0, 9), epoch=st.integers(0, 2))
    def add_frame(self, start: int, count: int, epoch: int) -> None:
        frame = POOL.iloc[start : start + count]
        assert self.grid.add_frame(frame, epoch=epoch) == len(frame)
        for text in frame["text"]:
            self.added.append((len(self.added) + 1, text))

    @rule(epoch=st.integers(0, 2))
    def add_marker(self, epoch: int) -> None:
        self.markers += 1
        text = f"marker {self.markers}"
        self.grid.add_marker(text, epoch=epoch)
        self.added.append((len(self.added) + 1, text))

    def _expect_send(self) -> int:
        pending = len(self.added) - self.sent_upto
        self.sent_upto = len(self.added)
        return min(pending, self.limit)

    @rule()
    def flush(self) -> None:
        expected = 0 if self.paused else self._expect_send()
        assert self.grid.flush() == expected

    @rule()
    def pause(self) -> None:
        self.grid.pause()
        self.paused = True

    @rule()
    def follow(self) -> None:
        self.paused = False
        assert self.grid.follow() == self._expect_send()

    @invariant()
    def table_holds_the_newest_sent_rows(self) -> None:
        if self.grid is None:
            return
        held = self.grid.frame()
        expected = self.added[: self.sent_upto][-self.limit :]
        assert list(zip(held["seq"].tolist(), held["text"].tolist())) == expected
        stats = self.grid.statistics()
        assert stats.rows_queued == min(len(self.added) - self.sent_upto, self.limit)
        assert stats.rows_sent + stats.rows_queued + stats.dropped_pending == len(self.added)
        assert stats.rows_held == len(expected)
        assert self.grid.paused == self.paused

    def teardown(self) -> None:
        if self.grid is not None:
            self.grid.close()


GridMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_grid_matches_the_reference_model = GridMachine.TestCase


# --- filter and CSV -------------------------------------------------------------------------------


def test_set_filter_sets_the_widget_filter_and_keeps_the_users_other_clauses(grid):
    grid.set_filter(payload_types=["turn_activity", "committed"])
    assert grid.widget.filter == [["payload_type", "in", ["committed", "turn_activity"]]]
    grid.widget.filter = grid.widget.filter + [["text", "contains", "x"]]  # the user's own clause
    grid.set_filter(event_types="assistant_prose_delta")
    assert grid.widget.filter == [
        ["text", "contains", "x"], ["event_type", "in", ["assistant_prose_delta"]],
    ]
    grid.set_filter()
    assert grid.widget.filter == [["text", "contains", "x"]]
    with pytest.raises(TypeError, match="payload_types"):
        grid.set_filter(payload_types=[1])
    assert grid.widget.filter == [["text", "contains", "x"]]


def test_to_csv_has_a_header_and_one_record_per_held_row(grid, real_frame, tmp_path):
    grid.add_frame(real_frame)
    grid.add_marker("restart", epoch=1)
    grid.flush()
    grid.add_frame(synthetic_frame(1, 3))  # queued, not sent: not in the CSV
    records = csv_records(grid.to_csv())
    header, rows = records[0], records[1:]
    assert header == list(DEFAULT_COLUMNS)
    assert len(rows) == len(real_frame) + 1 == grid.statistics().rows_held
    seq = header.index("seq")
    assert [int(r[seq]) for r in rows] == list(range(len(rows), 0, -1))  # the widget's sort: newest first
    assert rows[0][header.index("marker")] == "restart"
    assert {r[header.index("text")] for r in rows} == set(real_frame["text"]) | {"restart"}
    # it follows the widget's filter, sort and columns, as the user set them
    grid.set_filter(payload_types="committed")
    grid.widget.sort = [["seq", "asc"]]
    grid.widget.columns = ["seq", "payload_type", "position"]
    path = tmp_path / "grid.csv"
    text = grid.to_csv(path)
    assert path.read_text(encoding="utf-8") == text
    records = csv_records(text)
    committed = real_frame[real_frame.payload_type == "committed"]
    assert records[0] == ["seq", "payload_type", "position"]
    assert [r[1] for r in records[1:]] == ["committed"] * len(committed)
    assert [int(r[2]) for r in records[1:]] == committed["position"].tolist()
    # no sort and no columns: every column, arrival order
    grid.set_filter()
    grid.widget.sort, grid.widget.columns = [], []
    records = csv_records(grid.to_csv())
    assert records[0] == list(DEFAULT_COLUMNS)
    assert [int(r[-1]) for r in records[1:]] == list(range(1, len(real_frame) + 2))


def test_to_csv_translates_a_config_perspective_refuses(grid):
    grid.widget.filter = [["no_such_column", "==", "x"]]
    with pytest.raises(ValueError, match="viewer configuration"):
        grid.to_csv()


# --- lifecycle ------------------------------------------------------------------------------------


def test_clear_empties_the_table_the_queue_and_the_counters(grid):
    grid.add_frame(synthetic_frame(1, 4))
    grid.flush()
    grid.pause()
    grid.add_frame(synthetic_frame(5, 2))
    grid.clear()
    assert grid.statistics() == GridStatistics(0, 0, 0, 0, 0, 0, 0, 100)
    assert grid.paused and len(grid.frame()) == 0
    grid.add_frame(synthetic_frame(7, 1))
    assert grid.follow() == 1 and seqs(grid) == [1]


def test_close_releases_the_table_and_200_grids_leak_nothing():
    before = set(hosted_tables())
    names = []
    for _ in range(200):
        grid = EventGrid(limit=10)
        grid.add_frame(synthetic_frame(1, 2))
        grid.flush()
        names.append(grid.table_name)
        grid.close()
    assert len(set(names)) == 200
    assert set(hosted_tables()) == before
    assert grid.closed and "closed" in repr(grid)
    grid.close()  # idempotent
    assert grid.statistics() == GridStatistics(0, 2, 1, grid.statistics().bytes_sent,
                                               grid.statistics().bytes_sent, 0, 0, 10)
    for call in (
        lambda: grid.add_frame(synthetic_frame(1, 1)), lambda: grid.add_marker("x", epoch=0),
        grid.flush, grid.pause, grid.follow, grid.frame, grid.to_csv, grid.clear,
        lambda: grid.set_filter(payload_types="committed"),
    ):
        with pytest.raises(RuntimeError, match="closed"):
            call()


def test_grid_works_with_no_running_loop():
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    grid = EventGrid(limit=10)
    try:
        grid.add_frame(synthetic_frame(1, 3))
        assert grid.flush() == 3 and seqs(grid) == [1, 2, 3]
    finally:
        grid.close()


def test_grid_works_inside_asyncio_run_and_a_browser_gets_deltas():
    """Inside a running loop, with a simulated browser speaking Perspective's protocol through
    the widget's comm messages, as the widget's JavaScript does: the browser opens the table by
    name, sees the rows, gets small deltas, and close() deletes the table it still views."""

    async def main() -> None:
        grid = EventGrid(limit=20_000)
        widget = grid.widget
        loop = asyncio.get_running_loop()
        browser: perspective.AsyncClient | None = None

        def comm_send(content, buffers=None):  # kernel -> browser
            if content.get("type") == "binary_msg":
                loop.create_task(browser.handle_response(bytes(buffers[0])))

        async def browser_send(message: bytes) -> None:  # browser -> kernel
            widget.handle_message(widget, {"type": "binary_msg", "client_id": "b1"}, [message])

        widget.send = comm_send
        widget.handle_message(widget, {"type": "connect", "client_id": "b1"}, [])
        browser = perspective.AsyncClient(browser_send)
        table = await browser.open_table(widget.table_name)
        view = await table.view(sort=[["seq", "desc"]])
        deltas: list[int] = []
        await view.on_update(lambda port, delta=None: deltas.append(len(delta)), mode="row")

        async def settled(rows: int, updates: int) -> None:  # the browser caught up
            for _ in range(500):
                if len(deltas) >= updates and await view.num_rows() == rows:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"the browser saw {await view.num_rows()} rows, {len(deltas)} deltas")

        grid.add_frame(synthetic_frame(1, 10))
        assert grid.flush() == 10
        await settled(10, 1)
        grid.add_frame(synthetic_frame(11, 9_990))
        grid.flush()
        grid.add_frame(synthetic_frame(20_001, 10))
        grid.flush()
        await settled(10_010, 3)
        assert len(deltas) == 3  # one delta per update
        small, _, again = deltas
        assert again <= small * 1.5  # 10 rows cost the same with 10 or 10,000 held
        columns = await view.to_columns(start_row=0, end_row=1)
        assert columns["seq"] == [10_010.0]
        assert grid.frame()["seq"].iloc[-1] == 10_010

        grid.close()  # the browser's view is open: its session goes, then the table
        assert widget.table_name not in hosted_tables()

    asyncio.run(main())


def test_missing_perspective_raises_an_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "perspective.widget", None)
    assert grid_available() is False
    with pytest.raises(ImportError, match=r"pip install 'lash-notebook\[notebook\]'") as info:
        EventGrid()
    assert str(info.value) == INSTALL_HINT
    monkeypatch.setitem(sys.modules, "perspective", None)
    with pytest.raises(ImportError, match="perspective-python"):
        EventGrid(limit=5)


def test_grid_available_when_perspective_imports():
    assert grid_available() is True
