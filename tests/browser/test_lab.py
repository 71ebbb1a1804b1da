"""The tour notebook in JupyterLab, in headless Chromium: the monitor renders rows, rows keep
arriving while no cell runs (the runtime produces from a background task), and the Enqueue button
adds a row. Screenshots in the light and the dark theme go to ``tests/artifacts/``.

Selectors for ipywidgets 8 in Lab 4's DOM (``add_class`` puts the class on the widget's root):
  HTML widget          ``.widget-html.<class>`` ; its content ``.widget-html-content``
  rows of its table    ``.widget-html.<class> .widget-html-content tbody tr``
  Button               ``button.jupyter-button.widget-button.<class>``
Scoped to the visible notebook with ``.jp-NotebookPanel:not(.lm-mod-hidden)``.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterator

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

NOTEBOOK = "notebooks/01_tour.ipynb"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
MONITOR = f"{PANEL} .lash-monitor"
TABLE = f"{MONITOR} .widget-html.lash-events"
ROWS = f"{TABLE} .widget-html-content tbody tr"
ENQUEUE_TEXT = f"{MONITOR} .lash-enqueue-panel textarea"
ENQUEUE = f"{MONITOR} button.widget-button.lash-enqueue"
ENQUEUE_RESULT = f"{MONITOR} .widget-html.lash-enqueue-result .widget-html-content"


@pytest.fixture(scope="module")
def tour(open_lab: Any) -> Iterator[Any]:
    """The tour, opened in Lab, every cell run, the monitor's first rows on screen."""
    with open_lab() as lab:
        lab.open_notebook(NOTEBOOK)
        lab.run_all()
        lab.page.locator(ROWS).first.wait_for(state="visible", timeout=30_000)
        yield lab


def newest_position(lab: Any) -> int:
    """The table lists newest first; its first cell is the live position."""
    return int(lab.page.locator(ROWS).first.locator("td").first.inner_text())


def test_monitor_renders_rows(tour: Any) -> None:
    assert tour.cell_errors() == []
    assert tour.widget_problems() == []
    assert tour.page.locator(MONITOR).count() == 1
    assert tour.page.locator(ROWS).count() >= 10
    header = tour.page.locator(f"{TABLE} thead th").all_inner_texts()
    assert header[0] == "position" and "payload_type" in header
    text = tour.page.locator(TABLE).inner_text()
    assert "turn_activity" in text and "committed" in text


def test_rows_keep_arriving_while_no_cell_runs(tour: Any) -> None:
    tour.wait_kernel_idle()
    before = newest_position(tour)
    states = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        s = tour.state()
        states.append((s["kernelStatus"], s["indicator"], tour.server_kernel_state(NOTEBOOK), s["pending"]))
        tour.page.wait_for_timeout(300)
    after = newest_position(tour)
    # the producer runs a turn a second, each a dozen events or more
    assert after - before >= 5, f"only {after - before} new rows in 3 s"
    assert all(st == ("idle", "idle", "idle", 0) for st in states), states


def test_clicking_enqueue_adds_a_row(tour: Any) -> None:
    from playwright.sync_api import expect

    result = tour.page.locator(ENQUEUE_RESULT).first
    before = set(re.findall(r"qwb-[0-9a-f]+", result.inner_text()))  # the notebook's own enqueue
    tour.page.locator(ENQUEUE_TEXT).fill("typed in the browser")
    tour.page.locator(ENQUEUE).click()
    new_ids: set[str] = set()
    deadline = time.monotonic() + 10
    while not new_ids and time.monotonic() < deadline:
        tour.page.wait_for_timeout(100)
        new_ids = set(re.findall(r"qwb-[0-9a-f]+", result.inner_text())) - before
    assert len(new_ids) == 1, f"the panel never showed the clicked batch (before: {before})"
    (batch_id,) = new_ids
    # the background queue worker may already have started the batch (a newer row with the same
    # id), so look for this batch's queue_changed row specifically
    row = tour.page.locator(f"{ROWS}:has-text('{batch_id}'):has-text('queue_changed')")
    expect(row.first).to_be_visible(timeout=10_000)
    assert "enqueued" in row.first.inner_text()
    assert tour.page.locator(ENQUEUE_TEXT).input_value() == ""  # cleared after success


def test_screenshots_light_and_dark(tour: Any) -> None:
    tour.collapse_sidebars()
    try:
        tour.set_theme("JupyterLab Light")
        light_fg = tour.page.locator(f"{ROWS} td").first.evaluate("el => getComputedStyle(el).color")
        shot = tour.screenshot("tour-light", scroll_to=tour.page.locator(TABLE))
        assert shot.stat().st_size > 10_000
        tour.set_theme("JupyterLab Dark")
        dark_fg = tour.page.locator(f"{ROWS} td").first.evaluate("el => getComputedStyle(el).color")
        shot = tour.screenshot("tour-dark", scroll_to=tour.page.locator(TABLE))
        assert shot.stat().st_size > 10_000
        assert light_fg != dark_fg  # the table follows the theme through --jp-* variables
        before = newest_position(tour)
        tour.page.wait_for_timeout(1500)
        assert newest_position(tour) > before  # still live after the re-style
    finally:
        tour.set_theme("JupyterLab Light")
