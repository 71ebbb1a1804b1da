"""The monitor's layout in JupyterLab at 600, 900 and 1,400 px windows, light and dark: the main
panes do not overlap, and every control of every tab lies within the window's width (controls wrap
instead of leaving the screen). Screenshots: ``tests/artifacts/monitor-<width>-<theme>.png``."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from conftest import MONITOR

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

NOTEBOOK = "notebooks/01_tour.ipynb"
WIDTHS = (600, 900, 1400)
THEMES = (("light", "JupyterLab Light"), ("dark", "JupyterLab Dark"))
TABS = ("Events", "Session", "Queue", "Reconnect lab", "Event detail")

#: the monitor's main panes, top to bottom (each must be present and none may overlap another)
PANES = {
    "header": f"{MONITOR} > .lash-monitor-header",
    "turn input": f"{MONITOR} > .lash-enqueue-panel",
    "tabs": f"{MONITOR} > .lash-monitor-tabs",
}
#: inside the Events page
EVENT_PANES = {
    "pause row": f"{MONITOR} .lash-monitor-tabs .widget-tab-contents > :not(.lm-mod-hidden) .lash-pause",
    "grid": f"{MONITOR} .lash-monitor-tabs perspective-viewer",
    "chart": f"{MONITOR} .lash-monitor-tabs .lash-rate-chart",
}
#: what a user clicks or types into (the visible ones are checked on each tab)
CONTROLS = (
    "button, textarea, input:not([type=hidden]), select, .lm-TabBar-tab, "
    ".widget-toggle-button, .widget-dropdown"
)

_JS_BOXES = """
(selectors) => Object.fromEntries(Object.entries(selectors).map(([name, sel]) => {
  const el = document.querySelector(sel);
  if (!el) return [name, null];
  const b = el.getBoundingClientRect();
  return [name, [b.left, b.top, b.right, b.bottom]];
}))
"""
_JS_CONTROLS = """
([monitor, selector]) => {
  const root = document.querySelector(monitor);
  const out = [];
  for (const el of root.querySelectorAll(selector)) {
    const b = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (b.width === 0 || b.height === 0 || style.visibility === 'hidden') continue;  // not shown
    if (el.closest('.lm-mod-hidden, [hidden]')) continue;  // on another tab
    out.push({what: (el.innerText || el.getAttribute('placeholder') || el.tagName).trim().slice(0, 40),
              left: b.left, right: b.right});
  }
  return {controls: out, width: document.documentElement.clientWidth};
}
"""


def overlapping(boxes: dict[str, list[float] | None]) -> list[tuple[str, str]]:
    present = {k: v for k, v in boxes.items() if v is not None}
    names = sorted(present)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (al, at, ar, ab), (bl, bt, br, bb) = present[a], present[b]
            if al < br - 1 and bl < ar - 1 and at < bb - 1 and bt < ab - 1:  # 1 px of rounding
                pairs.append((a, b))
    return pairs


@pytest.fixture(scope="module")
def tour(open_lab: Any) -> Iterator[Any]:
    with open_lab() as lab:
        lab.open_notebook(NOTEBOOK)
        lab.collapse_sidebars()
        lab.run_all()
        lab.grid().wait_rows(5)
        yield lab
        lab.set_theme("JupyterLab Light")
        lab.page.set_viewport_size({"width": 1400, "height": 1000})


def select_tab(lab: Any, title: str) -> None:
    tab = lab.page.locator(f"{MONITOR} .lash-monitor-tabs .lm-TabBar-tab", has_text=title).first
    tab.click()
    lab.page.wait_for_function(
        "([m, t]) => [...document.querySelectorAll(m + ' .lash-monitor-tabs .lm-TabBar-tab.lm-mod-current')]"
        ".some(el => el.innerText.trim() === t)",
        arg=[MONITOR, title],
    )
    lab.page.wait_for_timeout(150)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("theme", THEMES, ids=[t[0] for t in THEMES])
def test_panes_do_not_overlap_and_every_control_fits_the_window(tour: Any, width: int, theme: tuple[str, str]) -> None:
    name, theme_name = theme
    page = tour.page
    page.set_viewport_size({"width": width, "height": 1000})
    tour.set_theme(theme_name)
    page.locator(MONITOR).first.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    # the grid follows the theme: Jupyter's colours in light, shown inverted in dark (its
    # datagrid paints light cells whatever its variables say)
    look = page.locator(f"{MONITOR} perspective-viewer").first.evaluate(
        "v => { const s = getComputedStyle(v); return {filter: s.filter,"
        " bg: s.getPropertyValue('--psp--background-color').trim(),"
        " jp: getComputedStyle(document.body).getPropertyValue('--jp-layout-color1').trim()}; }"
    )
    if name == "dark":
        assert "invert" in look["filter"], look
    else:
        assert look["filter"] in ("", "none") and look["bg"] == look["jp"], look
    boxes = page.evaluate(_JS_BOXES, PANES)
    assert all(boxes.values()), f"missing panes at {width} px: {boxes}"
    assert overlapping(boxes) == [], (width, boxes)
    outside: list[tuple[str, str, float, float]] = []
    for title in TABS:
        select_tab(tour, title)
        if title == "Events":
            events = page.evaluate(_JS_BOXES, EVENT_PANES)
            assert all(events.values()), f"missing Events panes at {width} px: {events}"
            assert overlapping(events) == [], (width, events)
            grid = events["grid"]
            assert grid[3] - grid[1] >= 200, f"the grid collapsed at {width} px: {grid}"
        found = page.evaluate(_JS_CONTROLS, [MONITOR, CONTROLS])
        assert found["controls"], f"no controls found on the {title} tab"
        outside += [
            (title, c["what"], c["left"], c["right"])
            for c in found["controls"]
            if c["right"] > found["width"] + 1 or c["left"] < -1
        ]
    assert outside == [], f"controls outside the {width} px window: {outside}"
    select_tab(tour, "Events")
    page.locator(MONITOR).first.evaluate("el => el.scrollIntoView({block: 'start'})")
    # the viewer draws what it missed while its tab was hidden: wait until it shows the tail
    grid = tour.grid()
    page.wait_for_function(
        "(scope) => { const rows = (" + grid.JS_ROWS + ")(scope) || [];"
        " const header = document.querySelector(scope + ' .lash-monitor-header');"
        " const m = header && header.innerText.match(/position #(\\d+)/);"
        " return rows.length && m && Math.abs(parseInt(rows[0].position) - parseInt(m[1])) <= 15; }",
        arg=MONITOR,
        timeout=15_000,
    )
    shot = tour.screenshot(f"monitor-{width}-{name}")
    assert shot.stat().st_size > 10_000
