"""A notebook saved with a live monitor, reopened after its kernel is gone, and converted with
nbconvert: the monitor's static copy of its last state shows, and "Error displaying widget: model
not found" does not (``SessionMonitor._ipython_display_``). Screenshots go to
``tests/artifacts/saved-lab.png`` and ``saved-nbconvert.png``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest

from conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK = "notebooks/saved_monitor.ipynb"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
SNAPSHOT = f"{PANEL} [data-lash-snapshot]"
SESSION = "saved-session-7f3a"

CELLS = [
    "from lash_core.testing import Scenario\n"
    "from lash_nb import SessionMonitor\n"
    f"scenario = await Scenario.create(session_id={SESSION!r}, replies=['<b>not bold</b> reply'])\n"
    "monitor = SessionMonitor(scenario.handle, clock=scenario.clock)\n"
    "monitor",
    "await scenario.handle.run_turn('hello')\n"
    "await scenario.handle.run_turn('again')\n"
    "import asyncio\n"
    "await asyncio.sleep(0.3)\n"
    "monitor.flush()\n"
    "monitor.stop()  # brings the static copy up to date\n"
    "print('events:', monitor.event_count)",
]


@pytest.fixture(scope="module")
def saved(open_lab: Any, lab_server: Any) -> Iterator[tuple[Any, int, Path]]:
    """The notebook run in Lab, saved, its kernel shut down, then reopened: ``(lab, events, path)``."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = Path(lab_server.root) / NOTEBOOK
    nbformat.write(nb, path)
    with open_lab() as lab:
        lab.open_notebook(NOTEBOOK)
        lab.run_all()
        live = lab.page.locator(f"{PANEL} .lash-monitor")
        live.first.wait_for(state="visible", timeout=30_000)
        # while the live widget renders, its static copy is hidden
        assert lab.page.locator(SNAPSHOT).count() == 1
        assert not lab.page.locator(SNAPSHOT).first.is_visible()
        printed = lab.page.locator(f"{PANEL} .jp-OutputArea-output").filter(has_text="events:")
        events = int(printed.first.inner_text().split("events:")[1].split()[0])
        assert events > 5
        lab.command("docmanager:save")
        lab.page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000
        )
        lab.shutdown_kernels()
        lab.page.reload(wait_until="domcontentloaded")
        lab.open_notebook(NOTEBOOK)  # a fresh kernel, which never had the monitor's widget models
        yield lab, events, path


def visible_texts(lab: Any, selector: str) -> list[str]:
    loc = lab.page.locator(selector)
    return [loc.nth(i).inner_text() for i in range(loc.count()) if loc.nth(i).is_visible()]


def test_a_reopened_notebook_shows_the_monitors_last_state_not_model_not_found(saved: Any) -> None:
    lab, events, _path = saved
    copy = lab.page.locator(SNAPSHOT).first
    copy.wait_for(state="visible", timeout=30_000)
    text = copy.inner_text()
    assert SESSION in text and f"{events} events" in text and "static copy" in text
    assert "<b>not b" in text  # a delta of the reply, shown as text (escaped), never as markup
    assert lab.page.locator(f"{SNAPSHOT} b", has_text="not bold").count() == 0
    outputs = visible_texts(lab, f"{PANEL} .jp-OutputArea-output")
    assert not [t for t in outputs if "model not found" in t or "Error displaying widget" in t], outputs
    lab.collapse_sidebars()
    lab.screenshot("saved-lab", scroll_to=copy)


def test_the_notebook_converted_to_html_shows_the_static_copy(saved: Any, browser: Any) -> None:
    _lab, events, path = saved
    out = path.with_suffix(".html")
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(path), "--output", out.stem],
        capture_output=True, text=True, timeout=120, cwd=path.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
        page.goto(out.as_uri(), wait_until="domcontentloaded")
        copy = page.locator("[data-lash-snapshot]").first
        copy.wait_for(state="visible", timeout=15_000)
        text = copy.inner_text()
        assert SESSION in text and f"{events} events" in text
        body = page.locator("body").inner_text()
        assert "model not found" not in body and "Error displaying widget" not in body
        assert "a static copy of its last state follows" in body  # the widget output's plain line
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        copy.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "saved-nbconvert.png"))
    finally:
        page.close()
