"""The same monitor in Jupyter Notebook 7 (a smoke test): the tour runs, the monitor renders with
its header, turn input, tabs and a grid whose rows keep arriving; no widget fails to render.
Screenshot: ``tests/artifacts/notebook7.png``."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import MONITOR

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK = "notebooks/01_tour.ipynb"


def test_the_monitor_renders_in_notebook_7(open_notebook7: Any) -> None:
    with open_notebook7() as nb7:
        nb7.page.goto(nb7.server.notebook_url(NOTEBOOK), wait_until="domcontentloaded")
        nb7.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.context && window.jupyterapp.shell.currentWidget.context.isReady",
            timeout=90_000,
        )
        nb7.opened.add(NOTEBOOK)
        nb7.wait_kernel_idle(90)
        nb7.run_all()
        monitor = nb7.page.locator(MONITOR).first
        monitor.wait_for(state="visible", timeout=30_000)
        grid = nb7.grid()
        grid.wait_rows(5)
        assert "last event applied" in nb7.page.locator(f"{MONITOR} .lash-monitor-header").first.inner_text()
        assert nb7.page.locator(f"{MONITOR} button.lash-run-turn").count() == 1
        tabs = nb7.page.locator(f"{MONITOR} .lash-monitor-tabs .lm-TabBar-tab").all_inner_texts()
        assert [t.strip() for t in tabs] == ["Events", "Session", "Queue", "Reconnect lab", "Event detail"]
        total = grid.counts()[1]
        assert grid.wait_total_change(total) > total  # live: the tour's producer keeps running
        assert nb7.widget_problems() == [] and nb7.cell_errors() == []
        monitor.evaluate("el => el.scrollIntoView({block: 'start'})")
        nb7.page.wait_for_timeout(500)
        assert nb7.screenshot("notebook7").stat().st_size > 10_000
