"""The tour notebook in JupyterLab, in headless Chromium, driving the monitor's Perspective grid.

One page opens the tour and runs it once (module fixture); the tests then act on it as a user
would, in this order: the grid renders rows; rows keep arriving while no cell runs; the Enqueue
and Run turn buttons add rows; a header click sorts; a filter typed in Perspective's settings
panel narrows the rows; the export menu downloads the rows as CSV; Pause holds the grid, Follow
brings what came meanwhile; last, a selection survives updates where Perspective 5.6 lets it
(oldest first, or paused) and not in the monitor's newest-first view (a strict xfail). Every test
leaves the viewer as it found it (sort newest first, no filter, read-only, settings closed,
scrolled to the top left; the selection tests share row-select mode with the settings open).

A settled viewer. Perspective's anywidget (5.6) writes the viewer's config into the widget model
and restores every model change into the viewer, its own included; a change the user makes while
that round trip is under way is undone (``conftest``: the note above ``Grid``): a filter value
picked from the suggestions went back to the "c" typed before it in 2 of 6 tries at a human pace,
a second header click was undone. After each action the tests wait until the viewer shows it, the
model holds it and no round trip is in flight (``Grid.wait_config``), as a patient user would.

Typing a filter value. The same round trip loses keys typed at a human pace: "committed" became
"cmmitted" or "committd" in 5 of 7 tries (30-100 ms between keys, paused or not). So the filter
test types the start of the value and takes Perspective's suggestion with Enter.

Selectors (``conftest.Grid`` documents Perspective 5.6's DOM; Playwright's CSS engine pierces open
shadow roots, so ``perspective-viewer regular-table tbody tr`` reaches the datagrid's rows):

  monitor         ``.jp-NotebookPanel:not(.lm-mod-hidden) .lash-monitor``
  grid rows       ``perspective-viewer regular-table tbody tr`` (only the viewport's rows exist)
  header cells    ``perspective-viewer regular-table thead tr th.psp-header-leaf`` (a click sorts)
  row counter     ``perspective-viewer-tab`` >> ``#rows`` ("57 (648) / 15" when filtered)
  settings        ``perspective-viewer-tab button.psp-tab-settings``; in the panel ``#filter
                  input.column-empty-input`` (column), then ``input.string-filter`` (value)
  export          ``perspective-viewer #export`` opens ``perspective-export-menu``, whose
                  ``span.dropdown-menu-item`` entries download (``<title>.csv`` = current view)
  select mode     ``perspective-viewer-datagrid-toolbar #edit_mode`` cycles READ_ONLY, EDIT,
                  SELECT_ROW, SELECT_COLUMN, SELECT_REGION; selected cells get ``psp-select-region``
  filter popups   ``perspective-viewer perspective-dropdown`` (column picker, value suggestions)
  ipywidgets      ``button.lash-enqueue``, ``button.lash-run-turn``, ``.lash-enqueue-panel textarea``,
                  ``.lash-enqueue-result``, ``button.lash-pause``, ``.lash-grid-note``
"""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any, Iterator

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

NOTEBOOK = "notebooks/01_tour.ipynb"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
MONITOR = f"{PANEL} .lash-monitor"
ENQUEUE_TEXT = f"{MONITOR} .lash-enqueue-panel textarea"
ENQUEUE = f"{MONITOR} button.widget-button.lash-enqueue"
RUN_TURN = f"{MONITOR} button.widget-button.lash-run-turn"
RESULT = f"{MONITOR} .widget-html.lash-enqueue-result .widget-html-content"
PAUSE = f"{MONITOR} button.lash-pause"
GRID_NOTE = f"{MONITOR} .lash-grid-note"
# the columns the grid shows first (lash_nb._grid.DEFAULT_COLUMNS); the rest scroll in horizontally
FIRST_COLUMNS = ["position", "revision", "payload_type", "event_type", "text", "received_at"]
DEFAULT_VIEW = {
    "sort": [["seq", "desc"]],
    "filter": [],
    "plugin_config": {"edit_mode": "READ_ONLY"},
    "settings": False,
}


@pytest.fixture(scope="module")
def tour(open_lab: Any) -> Iterator[Any]:
    """The tour, opened in Lab, every cell run, the grid's first rows on screen."""
    with open_lab() as lab:
        lab.open_notebook(NOTEBOOK)
        lab.collapse_sidebars()
        lab.run_all()
        grid = lab.grid()
        grid.wait_rows(10, timeout=60)
        # the viewer first shows the table as it is (schema order, unsorted), then the widget's
        # config (columns, sort): wait for that
        lab.page.wait_for_function(
            "(scope) => { const th = document.querySelector(scope + ' perspective-viewer')"
            ".querySelector('perspective-viewer-datagrid').shadowRoot.querySelector('regular-table thead th');"
            " return th && th.textContent.trim() === 'position'; }",
            arg=MONITOR,
        )
        yield lab


@pytest.fixture
def grid(tour: Any) -> Iterator[Any]:
    """The tour's grid, put back to the monitor's default view after the test (through the
    viewer's JS API: cleaning up, not the behaviour under test)."""
    g = tour.grid()
    g.track()
    yield g
    g.viewer.evaluate("v => v.setSelection && v.setSelection()")
    if tour.page.locator(PAUSE).inner_text().strip() == "Follow":
        tour.page.locator(PAUSE).click()
        tour.page.locator(GRID_NOTE).filter(has_text="following").wait_for()
    baseline = getattr(tour, "baseline", DEFAULT_VIEW)
    if not g.matches(**baseline):
        g.restore(**baseline)
    g.scroll_to(0, 0)


def cell_types(lab: Any) -> list[str]:
    return lab.page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.type)"
    )


def execution_counts(lab: Any) -> list[Any]:
    return lab.page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets"
        ".filter(c => c.model.type === 'code').map(c => c.model.executionCount)"
    )


def wait_still(grid: Any, quiet_s: float = 0.8, timeout: float = 10.0) -> None:
    """Wait until the grid's total row count has not changed for ``quiet_s`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = grid.counts()[1], time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "the grid never stood still"
        grid.page.wait_for_timeout(100)
        now = grid.counts()[1]
        if now != last:
            last, since = now, time.monotonic()


def wait_header_position(lab: Any, at_least: int, timeout: float = 15.0) -> None:
    """Wait until the header's "last event applied" reaches position ``at_least``."""
    lab.page.wait_for_function(
        "([sel, p]) => { const dd = document.querySelector(sel);"
        " const m = dd && dd.textContent.match(/position\\s+#?(\\d+)/); return m && +m[1] >= p; }",
        arg=[f"{MONITOR} .lash-monitor-header dl.lash-fields dd", at_least],
        timeout=timeout * 1000,
    )


def sort_by_position_ascending(grid: Any) -> None:
    """Click the position header until the viewer sorts by it ascending (Perspective cycles a
    header's sort on each click: descending, ascending, none); at most three clicks."""
    for _ in range(3):
        before = grid.header_sort("position")
        grid.header("position").click()
        grid.page.wait_for_function(
            "([el, before]) => { const m = (el.className || '').match(/psp-header-sort-(asc|desc)\\b/);"
            " return (m ? m[1] : '') !== before; }",
            arg=[grid.header("position").element_handle(), before],
        )
        now = grid.header_sort("position")
        grid.wait_config("sort", [["position", now]] if now else [])
        if now == "asc":
            return
    raise AssertionError(f"three clicks on the position header gave the sort {grid.config()['sort']}")


def is_descending(values: list[int]) -> bool:
    return all(a > b for a, b in zip(values, values[1:]))


def test_grid_renders_rows(tour: Any, grid: Any) -> None:
    assert tour.cell_errors() == []
    assert tour.widget_problems() == []
    assert tour.page.locator(MONITOR).count() == 1
    assert tour.page.locator(f"{MONITOR} perspective-viewer").count() == 1
    # rows in the DOM (the viewport) and in the grid (the title bar's counter)
    dom_rows = tour.page.locator(f"{MONITOR} perspective-viewer regular-table tbody tr")
    assert dom_rows.count() >= 10
    shown, total = grid.counts()
    assert shown == total >= 10
    assert grid.columns()[: len(FIRST_COLUMNS)] == FIRST_COLUMNS
    rows = grid.rows()
    assert all(r["position"].strip().isdigit() for r in rows), rows[:3]
    assert {r["payload_type"] for r in rows} <= {"turn_activity", "committed", "queue_changed"}
    assert "turn_activity" in {r["payload_type"] for r in rows}
    # newest first (the monitor's default sort: seq descending), the newest near the header's
    positions = grid.positions()
    assert is_descending(positions), positions
    assert tour.header_position() - positions[0] < 200
    assert grid.config()["sort"] == [["seq", "desc"]]


def test_rows_keep_arriving_while_no_cell_runs(tour: Any, grid: Any) -> None:
    tour.wait_kernel_idle()
    counts_before = execution_counts(tour)
    first_before = grid.positions()[0]
    total_before = grid.counts()[1]
    samples = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        s = tour.state()
        samples.append((s["kernelStatus"], s["pending"], tour.server_kernel_state(NOTEBOOK)))
        tour.page.wait_for_timeout(200)
    first_after = grid.positions()[0]
    total_after = grid.counts()[1]
    # the producer runs a turn a second, each a dozen events or more
    assert first_after - first_before >= 5, f"only {first_after - first_before} new rows in 3 s"
    assert total_after - total_before >= 5
    # no cell ran: none pending, no execution count moved. (The kernel still flips to "busy" for a
    # few ms at a time: each grid update makes the browser ask the kernel for the viewport's
    # rows, comm messages ipykernel marks busy; so idle is required only most of the time.)
    assert all(pending == 0 for _, pending, _ in samples), samples
    assert execution_counts(tour) == counts_before
    idle = sum(1 for status, _, _ in samples if status == "idle")
    assert idle >= len(samples) // 2, samples


def test_clicking_enqueue_adds_a_queue_changed_row(tour: Any, grid: Any) -> None:
    page = tour.page
    result = page.locator(RESULT).first
    before = set(re.findall(r"qwb-[0-9a-f]+", result.inner_text()))  # the notebook's own enqueue
    page.locator(ENQUEUE_TEXT).fill("typed in the browser")
    page.locator(ENQUEUE).click()
    new_ids: set[str] = set()
    deadline = time.monotonic() + 10
    while not new_ids and time.monotonic() < deadline:
        page.wait_for_timeout(50)
        new_ids = set(re.findall(r"qwb-[0-9a-f]+", result.inner_text())) - before
    assert len(new_ids) == 1, f"the panel never showed the clicked batch (before: {before})"
    (batch_id,) = new_ids
    assert page.locator(ENQUEUE_TEXT).input_value() == ""  # cleared after success
    # at a dozen events a second the row scrolls away within a second (and a loaded machine may
    # not draw the grid that often): pause, find the row in the viewer's view, scroll to it
    wait_header_position(tour, tour.header_position() + 5)
    page.locator(PAUSE).click()
    page.locator(GRID_NOTE).filter(has_text="paused").wait_for()
    wait_still(grid)
    index = page.evaluate(
        """async ([scope, id]) => {
          const view = await document.querySelector(scope + ' perspective-viewer').getView();
          const rows = await view.to_json({start_row: 0, end_row: Math.min(await view.num_rows(), 3000)});
          return rows.findIndex(r => r.payload_type === 'queue_changed' && r.text === 'enqueued ' + id);
        }""",
        [MONITOR, batch_id],
    )
    assert index >= 0, f"the grid's view has no queue_changed row for {batch_id}"
    row_height = page.locator(f"{MONITOR} perspective-viewer regular-table tbody tr").first.bounding_box()["height"]
    grid.scroll_to(0, max(0, int((index - 3) * row_height)))
    row = grid.wait_row({"payload_type": "queue_changed"}, {"text": f"enqueued {batch_id}"})
    assert row["text"] == f"enqueued {batch_id}"
    page.locator(PAUSE).click()
    page.locator(GRID_NOTE).filter(has_text="following").wait_for()


def test_run_turn_typed_in_the_browser(tour: Any, grid: Any) -> None:
    from playwright.sync_api import expect

    commit_before = tour.header_commit()
    assert commit_before is not None
    tour.page.locator(ENQUEUE_TEXT).fill("run this from the browser")
    tour.page.locator(RUN_TURN).click()
    result = tour.page.locator(RESULT).first
    expect(result).to_contain_text("committed revision", timeout=20_000)
    m = re.search(r"turn (\w+): committed revision (\d+)", result.inner_text())
    assert m and m.group(1) == "finished", result.inner_text()
    revision = int(m.group(2))
    assert revision > commit_before[0]
    # its committed row in the grid ...
    row = grid.wait_row({"payload_type": "committed", "revision": str(revision)})
    assert row["text"].startswith(f"turn {revision} committed")
    # ... and the header's last commit moved to it (or past it: the producer keeps committing)
    tour.page.wait_for_function(
        """([sel, rev]) => { const dd = document.querySelectorAll(sel)[1];
             const m = dd && dd.textContent.match(/revision\\s+(\\d+)/); return m && +m[1] >= rev; }""",
        arg=[f"{MONITOR} .lash-monitor-header dl.lash-fields dd", revision],
    )
    commit_after = tour.header_commit()
    assert commit_after is not None and commit_after[0] >= revision and commit_after[1] > commit_before[1]
    assert tour.page.locator(ENQUEUE_TEXT).input_value() == ""


def test_header_click_sorts(tour: Any, grid: Any) -> None:
    before = grid.positions()
    assert len(before) >= 10 and is_descending(before), before
    sort_by_position_ascending(grid)
    tour.page.wait_for_function(
        f"([scope, first]) => {{ const r = (({grid.JS_ROWS})(scope) || [])[0]; return r && +r.position < first; }}",
        arg=[MONITOR, before[-1]],
    )
    after = grid.positions()
    assert is_descending(after[::-1]), after  # ascending now
    assert after[0] < before[-1] < before[0]  # the oldest kept rows come first
    assert grid.config()["sort"] == [["position", "asc"]]
    # and it stays sorted as rows keep arriving (they go to the end, out of view)
    grid.wait_updates(1)
    assert grid.positions()[:5] == after[:5]


def test_typed_filter_narrows_rows(tour: Any, grid: Any) -> None:
    """Real clicks and typing in Perspective's settings panel: Where -> column payload_type,
    operator ``==`` (the default), value ``committed``."""
    page = tour.page
    viewer = f"{MONITOR} perspective-viewer"
    types_before = cell_types(tour)
    grid.open_settings()
    column = page.locator(f"{viewer} #filter input.column-empty-input").first
    column.click()
    column.type("payload", delay=50)
    # the column picker (a perspective-dropdown) offers payload_type; Enter takes it
    page.locator(f"{viewer} perspective-dropdown").filter(has_text="payload_type").first.wait_for(state="visible")
    page.keyboard.press("Enter")
    value = page.locator(f"{viewer} #filter input.string-filter").first
    value.wait_for(state="visible")
    grid.wait_config("filter", [["payload_type", "==", None]])
    operator = page.locator(f"{viewer} #filter select.filterop-selector").first
    assert operator.input_value() == "=="
    # the value: type its start and take the value Perspective suggests (typing the whole word at
    # a human pace loses keys: see the module docstring)
    value.click()
    value.type("co", delay=50)
    page.locator(f"{viewer} perspective-dropdown").filter(has_text="committed").first.wait_for(state="visible")
    page.keyboard.press("Enter")
    page.wait_for_function("el => el.value === 'committed'", arg=value.element_handle())
    grid.wait_config("filter", [["payload_type", "==", "committed"]])
    page.wait_for_function(
        f"(scope) => {{ const rows = ({grid.JS_ROWS})(scope) || [];"
        " return rows.length > 0 && rows.every(r => r.payload_type === 'committed'); }",
        arg=MONITOR,
    )
    assert value.input_value() == "committed"
    rows = grid.rows()
    assert rows and all(r["payload_type"] == "committed" for r in rows)
    assert all(r["text"].startswith("turn ") and " committed" in r["text"] for r in rows)
    shown, total = grid.counts()
    assert 0 < shown < total / 3  # a dozen events a turn, one of them committed
    # the filter is live: the next commits show up, still only committed rows
    page.wait_for_function(
        f"([scope, shown]) => parseInt((({grid.JS_COUNT})(scope) || '0').replace(/,/g, '')) > shown",
        arg=[MONITOR, shown],
        timeout=15_000,
    )
    assert all(r["payload_type"] == "committed" for r in grid.rows())
    # typing went to Perspective's inputs, not to the notebook's command-mode shortcuts
    assert cell_types(tour) == types_before
    # clear it with the clause's x: every row again
    page.locator(f"{viewer} perspective-dropdown").first.wait_for(state="hidden")
    page.locator(f"{viewer} #filter span.row_close").first.click()
    page.locator(f"{viewer} #filter input.string-filter").first.wait_for(state="detached")
    grid.wait_config("filter", [])
    page.wait_for_function(
        f"(scope) => new Set((({grid.JS_ROWS})(scope) || []).map(r => r.payload_type)).size > 1", arg=MONITOR
    )
    shown, total = grid.counts()
    assert shown == total
    assert page.locator(f"{viewer} #filter input.string-filter").count() == 0  # and it stayed away
    grid.close_settings()


def test_csv_export_from_the_viewer_menu(tour: Any, grid: Any) -> None:
    page = tour.page
    grid.open_settings()
    shown_before, _ = grid.counts()
    visible = grid.positions()
    page.locator(f"{MONITOR} perspective-viewer #export").first.click()
    menu = page.locator(f"{MONITOR} perspective-viewer perspective-export-menu").first
    menu.wait_for(state="visible")
    items = menu.locator("span.dropdown-menu-item")
    labels = items.all_inner_texts()
    # "Current View" comes first: "<title>.csv" (the "All" group has "<title>.all.csv")
    index = next(i for i, t in enumerate(labels) if t.strip().endswith(".csv") and ".all." not in t)
    with page.expect_download(timeout=20_000) as info:
        items.nth(index).click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    text = open(download.path(), encoding="utf-8").read()
    table = list(csv.reader(io.StringIO(text)))
    header, body = table[0], table[1:]
    assert header[: len(FIRST_COLUMNS)] == FIRST_COLUMNS
    assert {"cursor", "session_id", "seq"} <= set(header) and len(header) == 15
    assert len(body) >= shown_before >= 10
    assert all(len(r) == len(header) for r in body)
    positions = [int(float(r[header.index("position")])) for r in body if r[header.index("position")]]
    assert set(visible) <= set(positions)  # every row on screen at the click is in the file
    assert is_descending(positions[:50])  # in the view's order: newest first
    assert {r[header.index("session_id")] for r in body} == {"tour"}
    assert {r[header.index("payload_type")] for r in body} >= {"turn_activity", "committed"}
    grid.close_settings()
    # the grid's Python side exports the same columns (monitor.to_csv(), run in the kernel)
    out = tour.kernel_execute(
        "import csv as _c, io as _i\n"
        "_rows = list(_c.reader(_i.StringIO(monitor.to_csv())))\n"
        "print(','.join(_rows[0])); print(len(_rows) - 1)"
    )
    py_header, py_count = out.strip().splitlines()
    assert py_header.split(",") == header
    assert int(py_count) >= len(body)


def test_pause_holds_the_grid_and_follow_brings_the_events(tour: Any, grid: Any) -> None:
    from playwright.sync_api import expect

    page = tour.page
    pause = page.locator(PAUSE)
    assert pause.inner_text().strip() == "Pause"
    pause.click()
    expect(pause).to_have_text(re.compile(r"\s*Follow\s*"))
    # the kernel has paused the grid once the note says so; an update sent just before may still
    # be on its way to the viewer: wait until the grid has been still for a moment
    expect(page.locator(GRID_NOTE)).to_contain_text("paused")
    wait_still(grid)
    frozen_rows = grid.rows()
    frozen_total = grid.counts()[1]
    # events keep arriving (the header and the note count them) ...
    wait_header_position(tour, tour.header_position() + 20)
    expect(page.locator(GRID_NOTE)).to_contain_text(re.compile(r"paused: \d+ new events waiting"))
    waiting = int(re.search(r"paused: (\d+) new events", page.locator(GRID_NOTE).inner_text()).group(1))
    assert waiting >= 10
    # ... while the grid stands still
    assert grid.counts()[1] == frozen_total
    assert grid.rows() == frozen_rows
    newest_seen = tour.header_position()
    pause.click()
    expect(pause).to_have_text(re.compile(r"\s*Pause\s*"))
    page.wait_for_function(
        f"([scope, p]) => {{ const r = (({grid.JS_ROWS})(scope) || [])[0]; return r && +r.position >= p; }}",
        arg=[MONITOR, newest_seen],
    )
    assert grid.counts()[1] >= frozen_total + waiting
    expect(page.locator(GRID_NOTE)).to_contain_text("following the tail")


def _select_mode(tour: Any, grid: Any, mode: str) -> None:
    """Cycle the datagrid toolbar's edit-mode button (settings open) to ``mode``."""
    button = tour.page.locator(f"{MONITOR} perspective-viewer-datagrid-toolbar #edit_mode").first
    for _ in range(6):
        current = grid.edit_mode()
        if current == mode:
            grid.wait_config("plugin_config", {"edit_mode": mode})
            return
        button.click()
        tour.page.wait_for_function(
            "([el, before]) => el.dataset.editMode !== before", arg=[button.element_handle(), current]
        )
        grid.wait_config("plugin_config", {"edit_mode": grid.edit_mode()})
    raise AssertionError(f"edit mode never became {mode}: {grid.edit_mode()}")


@pytest.fixture(scope="module")
def row_select(tour: Any) -> Iterator[None]:
    """The settings panel open and the datagrid in row-select mode (its toolbar button), for the
    selection tests (the last in this module); the grid fixture restores this between them."""
    grid = tour.grid()
    grid.track()
    grid.open_settings()
    _select_mode(tour, grid, "SELECT_ROW")
    tour.baseline = {**DEFAULT_VIEW, "plugin_config": {"edit_mode": "SELECT_ROW"}, "settings": True}
    yield
    del tour.baseline
    grid.restore(**DEFAULT_VIEW)


def _click_row(tour: Any, grid: Any, index: int) -> dict[str, Any]:
    """Click the ``index``-th row on screen (its position cell: a wider one would scroll the grid
    sideways) and return the row selected then; a click the grid misses while it redraws is
    repeated, as a user would (at most three)."""
    row = tour.page.locator(f"{MONITOR} perspective-viewer regular-table tbody tr").nth(index)
    for _ in range(3):
        row.locator("td").first.click()
        try:
            handle = tour.page.wait_for_function(
                f"(scope) => (({grid.JS_ROWS})(scope) || []).find(r => r.__selected) || false",
                arg=MONITOR,
                timeout=5_000,
            )
            return handle.json_value()
        except Exception:  # noqa: BLE001 - click again
            continue
    pytest.fail(f"three clicks on row {index} selected nothing (edit mode {grid.edit_mode()})")


def _selected(grid: Any) -> list[str]:
    return [r["position"] for r in grid.rows() if r["__selected"]]


def test_row_selection_survives_updates_oldest_first(tour: Any, row_select: None, grid: Any) -> None:
    """Perspective 5.6 keeps a selection as view coordinates (``viewer.getSelection()`` gives
    ``{start_row, end_row}``), so it stays on the same event while updates only add rows after
    it: here, sorted oldest first by a header click."""
    assert grid.edit_mode() == "SELECT_ROW"
    sort_by_position_ascending(grid)
    picked = _click_row(tour, grid, 3)
    assert _selected(grid) == [picked["position"]]
    selection = grid.viewer.evaluate("v => v.getSelection()")
    assert selection == {"start_row": 3, "end_row": 4}
    grid.wait_updates(2)  # the title's counter: the viewer took two updates (new rows below)
    tour.page.wait_for_timeout(500)  # and drew them
    assert _selected(grid) == [picked["position"]]
    assert grid.viewer.evaluate("v => v.getSelection()") == selection


def test_row_selection_survives_while_paused(tour: Any, row_select: None, grid: Any) -> None:
    """In the default newest-first view, Pause holds the grid: a selected row stays selected
    while events keep arriving (the header counts them), and Follow brings them."""
    assert grid.edit_mode() == "SELECT_ROW"
    tour.page.locator(PAUSE).click()
    tour.page.locator(PAUSE).filter(has_text="Follow").wait_for()
    tour.page.locator(GRID_NOTE).filter(has_text="paused").wait_for()
    wait_still(grid)
    picked = _click_row(tour, grid, 3)
    total = grid.counts()[1]
    wait_header_position(tour, tour.header_position() + 20)
    assert grid.counts()[1] == total
    assert _selected(grid) == [picked["position"]]
    tour.page.locator(PAUSE).click()
    grid.wait_total_change(total)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Perspective 5.6 selects view coordinates (start_row/end_row), not rows: in the "
    "monitor's newest-first view every update shifts the rows down under a highlight that stays "
    "on the same screen row, so the selection moves to newer events (cells are user-select: none, "
    "so text cannot be selected either)",
)
def test_row_selection_survives_updates_newest_first(tour: Any, row_select: None, grid: Any) -> None:
    # (preconditions fail with pytest.fail: only the AssertionError below is the expected failure)
    if grid.edit_mode() != "SELECT_ROW" or grid.header_sort("position"):
        pytest.fail(f"not row-select mode sorted newest first: {grid.edit_mode()}, {grid.config()['sort']}")
    picked = _click_row(tour, grid, 3)
    selection = grid.viewer.evaluate("v => v.getSelection()")
    before = grid.positions()[:6]
    grid.wait_updates(2)
    try:  # the title's counter moves before the rows are drawn: wait for newer rows on screen
        tour.page.wait_for_function(
            f"([scope, p]) => {{ const r = (({grid.JS_ROWS})(scope) || [])[0]; return r && +r.position >= p; }}",
            arg=[MONITOR, before[0] + 2],
            timeout=15_000,
        )
    except Exception as exc:  # noqa: BLE001 - a precondition, not the expected failure
        pytest.fail(f"the rows did not shift under the selection: {before} -> {grid.positions()[:6]} ({exc})")
    after = grid.positions()[:6]
    assert _selected(grid) == [picked["position"]], (
        f"selected position {picked['position']} became {_selected(grid)} after two updates "
        f"(viewer selection {selection} -> {grid.viewer.evaluate('v => v.getSelection()')}; "
        f"top positions {before} -> {after})"
    )
