"""Browser-test harness: a throwaway JupyterLab server driven by Debian's headless Chromium.

Fixtures
--------
``lab_server`` (session)
    Starts ``python -m jupyter lab`` (the interpreter running pytest) on a free port of 127.0.0.1 with a
    random token, on a temporary copy of ``notebooks/`` (as ``notebooks/``), with isolated Jupyter config/data/runtime/IPython directories,
    no news, no update check, no PyPI extension manager, ``window.jupyterapp`` exposed. The venv's
    kernelspec (``sys.prefix/share/jupyter/kernels``) stays visible because Jupyter always searches
    ``sys.prefix``. Waits for ``/api/status``; terminates (then kills) the process group on teardown.
``browser`` (module)
    Playwright's Chromium driver launched on ``/usr/bin/chromium`` (no ``playwright install``).
``notebook7_server`` (module)
    The same for Jupyter Notebook 7 (``python -m jupyter notebook``, ``JupyterNotebookApp``): its own
    temporary root, config and token, stopped when the module that used it ends.
``open_lab`` (module) / ``lab`` (function) / ``open_notebook7`` (module)
    A fresh browser context and page wrapped in :class:`Lab` (``open_lab()`` is a context manager, for
    module-scoped fixtures that open and run a notebook once), the helper the tests use:
    ``open_notebook``, ``wait_kernel_idle``, ``run_all``, ``wait_executed``, ``set_theme``,
    ``screenshot``, ``kernel_status`` and friends. ``open_notebook7()`` makes the same helper for a page of
    the Notebook 7 server (``open_notebook`` then opens ``/notebooks/<path>``).

Monitor helpers: ``Lab.grid()`` is a :class:`Grid` over the monitor's Perspective viewer (visible rows
read through the shadow roots, the row counter of the viewer's title bar, its saved config),
``Lab.header_commit()`` / ``Lab.header_position()`` parse the monitor's header, ``Lab.kernel_execute``
runs code in the notebook's kernel without touching a cell (``requestExecute``, no history).

Every test here needs the ``browser`` marker; when Chromium, Playwright or JupyterLab is missing the
tests are skipped with the reason printed (``scripts/browser-setup`` installs Chromium when it can).
"""

from __future__ import annotations

import contextlib
import json
import re
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "tests" / "artifacts"

CHROMIUM = os.environ.get("LASH_CHROMIUM", "/usr/bin/chromium")
# The flags that made Debian's Chromium work as root on this closed network (see the machine notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 1000}
#: The monitor in the visible notebook (Lab and Notebook 7 both use ``.jp-NotebookPanel``).
MONITOR = ".jp-NotebookPanel:not(.lm-mod-hidden) .lash-monitor"
LAB_START_TIMEOUT = 90.0

# JupyterLab user settings written into the isolated config dir: no news/update toasts, every cell
# attached to the DOM (windowing would detach or skip off-screen outputs), light theme to start with.
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/themes.jupyterlab-settings": {
        "theme": "JupyterLab Light",
        "adaptive-theme": False,
    },
}
SERVER_CONFIG = {
    "LabApp": {
        "news_url": None,
        "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        "expose_app_in_browser": True,
        "extension_manager": "readonly",
    },
    "ServerApp": {"open_browser": False, "port_retries": 0},
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "browser: drives JupyterLab in headless Chromium (skipped when Chromium/Playwright are missing)",
    )


def browser_skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (run scripts/browser-setup as root to apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"python package playwright is not importable ({exc}); pip install playwright"
    try:
        import jupyterlab  # noqa: F401
    except ImportError as exc:
        return f"jupyterlab is not importable ({exc}); pip install jupyterlab"
    return None


def _skip_if_unavailable() -> None:
    reason = browser_skip_reason()
    if reason:
        if os.environ.get("LASH_REQUIRE_BROWSER") == "1":  # scripts/test (CI): never skip silently
            pytest.fail(f"browser tests required but cannot run: {reason}")
        print(f"\n[browser tests skipped] {reason}", file=sys.stderr)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    base_url: str  # http://127.0.0.1:PORT/
    token: str
    root: Path  # the server's root_dir (temporary copy)
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    app: str = "lab"  # "lab" (JupyterLab) or "notebook" (Jupyter Notebook 7)

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path.lstrip('/')}{sep}token={self.token}"

    def lab_url(self, notebook: str) -> str:
        """URL that opens ``notebook`` (a path relative to the root, e.g. ``notebooks/01_tour.ipynb``)."""
        return self.url(f"lab/tree/{notebook}")

    def notebook_url(self, notebook: str) -> str:
        """URL of ``notebook`` in this server's own UI: Lab's ``lab/tree/...`` or Notebook 7's
        ``notebooks/...``."""
        if self.app == "notebook":
            return self.url(f"notebooks/{notebook}")
        return self.lab_url(notebook)

    def api(self, path: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base_url}api/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"


def _stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop the server we started (and its kernels, same process group): SIGTERM, wait, SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Kernels are in the server's process group; reap anything that survived the server.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _start_jupyter(base: Path, app: str) -> Iterator[LabServer]:
    """Start ``python -m jupyter <app>`` ("lab" or "notebook") on a temporary copy of ``notebooks/``
    under ``base`` with isolated config/data/runtime dirs; yield it once it answers; stop it."""
    root = base / "root"
    root.mkdir()
    shutil.copytree(
        NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    )

    config_dir = base / "config"
    settings_dir = config_dir / "lab" / "user-settings"
    for rel, settings in LAB_USER_SETTINGS.items():
        target = settings_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings, indent=2))
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG, indent=2))

    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        IPYTHONDIR=str(base / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    # The interpreter running pytest must be the one whose kernelspec Jupyter finds (sys.prefix).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    port = _free_port()
    token = secrets.token_hex(24)
    log_path = base / f"jupyter{app}.log"
    cmd = [
        sys.executable, "-m", "jupyter", app,
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    if app == "lab":
        cmd += [
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.extension_manager=readonly",
        ]
    else:
        cmd += ["--JupyterNotebookApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI and these machines run as root
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LabServer(f"http://127.0.0.1:{port}/", token, root, log_path, proc, app=app)
    try:
        deadline = time.monotonic() + LAB_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter {app} did not answer /api/status in time:\n{server.log_tail()}")
            time.sleep(0.2)
        specs = server.api("kernelspecs")
        if "python3" not in specs.get("kernelspecs", {}):
            raise RuntimeError(f"no python3 kernelspec visible to the server: {specs}")
        yield server
    finally:
        _stop_process_group(proc)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    _skip_if_unavailable()
    yield from _start_jupyter(tmp_path_factory.mktemp("jupyterlab"), "lab")


@pytest.fixture(scope="module")
def notebook7_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """Jupyter Notebook 7 on its own temporary root (module scope: stopped after the module)."""
    _skip_if_unavailable()
    try:
        import notebook  # noqa: F401
    except ImportError as exc:
        reason = f"python package notebook (Jupyter Notebook 7) is not importable ({exc})"
        if os.environ.get("LASH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but cannot run: {reason}")
        pytest.skip(reason)
    yield from _start_jupyter(tmp_path_factory.mktemp("notebook7"), "notebook")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _skip_if_unavailable()
    from playwright.sync_api import sync_playwright

    # Playwright's python wheel carries its own node driver; we only point it at Debian's Chromium.
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _page_factory(browser: Any, server: LabServer) -> Callable[[], ContextManager["Lab"]]:
    @contextlib.contextmanager
    def _open() -> Iterator[Lab]:
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, accept_downloads=True)
        context.set_default_timeout(30_000)
        page = context.new_page()
        helper = Lab(page, server)
        page.on("console", lambda msg: helper.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: helper.console.append(f"pageerror: {exc}"))
        try:
            yield helper
        finally:
            context.close()
            helper.shutdown_kernels()

    return _open


@pytest.fixture(scope="module")
def open_lab(browser: Any, lab_server: LabServer) -> Callable[[], ContextManager["Lab"]]:
    """Factory for :class:`Lab` pages, usable from fixtures of any scope up to ``module``::

        @pytest.fixture(scope="module")
        def tour(open_lab):
            with open_lab() as lab:
                lab.open_notebook("notebooks/01_tour.ipynb")
                lab.run_all()
                yield lab
    """
    return _page_factory(browser, lab_server)


@pytest.fixture(scope="module")
def open_notebook7(browser: Any, notebook7_server: LabServer) -> Callable[[], ContextManager["Lab"]]:
    """Like ``open_lab``, for pages of the Jupyter Notebook 7 server."""
    return _page_factory(browser, notebook7_server)


@pytest.fixture
def lab(open_lab: Callable[[], ContextManager["Lab"]], request: pytest.FixtureRequest) -> Iterator["Lab"]:
    """A fresh page for one test."""
    with open_lab() as helper:
        yield helper
        _dump_failure(request, [helper])  # before the page closes


@pytest.fixture(autouse=True)
def _browser_failure_artifacts(request: pytest.FixtureRequest) -> Iterator[None]:
    """On a failing test: screenshot the (module-scoped) Lab pages it used, print console and server log."""
    yield
    labs = [v for v in getattr(request.node, "funcargs", {}).values() if isinstance(v, Lab)]
    _dump_failure(request, labs)


def _dump_failure(request: Any, labs: list["Lab"]) -> None:
    node = getattr(request, "node", request)  # a FixtureRequest or the test item itself
    rep = getattr(node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    for i, helper in enumerate(labs):
        if helper.page.is_closed() or node.nodeid in helper.dumped:
            continue
        helper.dumped.add(node.nodeid)
        try:
            path = helper.screenshot(f"FAILED-{node.name}-{i}")
            print(f"\n[browser] failure screenshot: {path}")
        except Exception as exc:  # noqa: BLE001 - best effort on a failing test
            print(f"\n[browser] could not take a failure screenshot: {exc}")
        print("--- browser console (last 40) ---\n" + "\n".join(helper.console[-40:]))
        print("--- jupyterlab log (tail) ---\n" + helper.server.log_tail(40))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    if rep.when == "call" and rep.failed:
        # at once, before the fixtures' teardown puts the (module-scoped) pages back in order
        labs = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Lab)]
        _dump_failure(item, labs)
    return rep


# ----------------------------------------------------------------------------------------------------
# Page helper
# ----------------------------------------------------------------------------------------------------

# JS run in the page: the current notebook panel and its kernel, via window.jupyterapp
# (exposed by --LabApp.expose_app_in_browser).
_JS_NOTEBOOK_STATE = """
() => {
  const app = window.jupyterapp;
  if (!app) return {ready: false, why: 'no window.jupyterapp'};
  const panel = app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return {ready: false, why: 'no notebook panel'};
  const sc = panel.sessionContext;
  const kernel = sc.session && sc.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return {
    ready: true,
    path: panel.context.path,
    sessionReady: sc.isReady,
    kernelStatus: kernel ? kernel.status : null,
    kernelName: kernel ? kernel.name : null,
    codeCells: cells.length,
    executed: cells.filter(c => c.model.executionCount !== null).length,
    pending: cells.filter(c => (c.promptNode && c.promptNode.textContent || '').includes('*')).length,
    // The toolbar's execution indicator (debounced; lags the kernel model by a few hundred ms).
    indicator: (panel.node.querySelector('.jp-Notebook-ExecutionIndicator') || {dataset: {}}).dataset.status || null,
  };
}
"""


class Lab:
    """Drives one browser page of the JupyterLab server."""

    def __init__(self, page: Any, server: LabServer) -> None:
        self.page = page
        self.server = server
        self.console: list[str] = []
        self.opened: set[str] = set()
        self.dumped: set[str] = set()  # tests whose failure this page was screenshotted for

    # -- navigation -----------------------------------------------------------------------------
    def open_notebook(self, notebook: str, timeout: float = 60.0) -> None:
        """Open ``notebook`` (relative to the server root) and wait for Lab, the panel and an idle kernel."""
        self.opened.add(notebook)
        self.page.goto(self.server.notebook_url(notebook), wait_until="domcontentloaded")
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.context"
            f" && window.jupyterapp.shell.currentWidget.context.path === {json.dumps(notebook)}",
            timeout=timeout * 1000,
        )
        self.page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.context.isReady", timeout=timeout * 1000
        )
        self.wait_kernel_idle(timeout)

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(_JS_NOTEBOOK_STATE)

    def kernel_status(self) -> str | None:
        return self.state().get("kernelStatus")

    def server_kernel_state(self, notebook: str | None = None) -> str | None:
        """``execution_state`` of the notebook's kernel as the *server* tracks it (REST, not the page)."""
        path = notebook or self.state().get("path")
        for session in self.server.api("sessions"):
            if session.get("path") == path and session.get("kernel"):
                return self.server.api(f"kernels/{session['kernel']['id']}").get("execution_state")
        return None

    def indicator_status(self) -> str | None:
        """The kernel status as the notebook toolbar's execution indicator shows it (DOM, not API)."""
        loc = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator")
        if loc.count() == 0:
            return None
        return loc.first.get_attribute("data-status")

    def wait_kernel_idle(self, timeout: float = 60.0) -> None:
        self.page.wait_for_function(
            f"() => {{ const s = ({_JS_NOTEBOOK_STATE})(); return s.ready && s.sessionReady"
            " && s.kernelStatus === 'idle' && (s.indicator === null || s.indicator === 'idle'); }",
            timeout=timeout * 1000,
            polling=100,
        )

    # -- execution ------------------------------------------------------------------------------
    def command(self, command_id: str, args: dict[str, Any] | None = None) -> Any:
        """Run a JupyterLab command (``window.jupyterapp.commands.execute``)."""
        return self.page.evaluate(
            "([id, args]) => window.jupyterapp.commands.execute(id, args).then(() => true)",
            [command_id, args or {}],
        )

    def run_all(self, timeout: float = 120.0) -> None:
        """Run All Cells and wait until every code cell has an execution count and the kernel is idle."""
        self.command("notebook:run-all-cells")
        self.wait_executed(timeout)

    def wait_executed(self, timeout: float = 120.0) -> None:
        self.page.wait_for_function(
            f"() => {{ const s = ({_JS_NOTEBOOK_STATE})(); return s.ready && s.kernelStatus === 'idle'"
            " && s.pending === 0 && s.executed === s.codeCells"
            " && (s.indicator === null || s.indicator === 'idle'); }",
            timeout=timeout * 1000,
            polling=100,
        )

    def cell_errors(self) -> list[str]:
        """Texts of tracebacks and of stderr output in the current notebook (expect ``[]`` from a clean
        notebook; a notebook that prints warnings on purpose should filter this list)."""
        return self.page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
        ).all_inner_texts()

    def widget_problems(self) -> list[str]:
        """Outputs showing that a widget did not render (no widget manager, unknown model, JS error)."""
        texts = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").all_inner_texts()
        bad = ("Loading widget...", "Error displaying widget", "Failed to load model class")
        return [t for t in texts if any(b in t for b in bad)]

    # -- looks ----------------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        """Switch theme ('JupyterLab Light' / 'JupyterLab Dark') and wait until it is fully applied.

        Lab flips ``body[data-jp-theme-name]`` before the new stylesheet has loaded and while the old
        one may still be attached (a screenshot then shows a mix), so also wait for exactly one theme
        stylesheet, loaded, and the theme variables resolved, then for two animation frames.
        """
        self.command("apputils:change-theme", {"theme": theme})
        light = "false" if "Dark" in theme else "true"
        self.page.wait_for_function(
            """([name, light]) => {
              const b = document.body.dataset;
              if (b.jpThemeName !== name || b.jpThemeLight !== light) return false;
              const links = [...document.querySelectorAll('link[rel=stylesheet]')]
                .filter(l => l.href.includes('/lab/api/themes/'));
              if (links.length !== 1 || !links[0].sheet) return false;
              return getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim() !== '';
            }""",
            arg=[theme, light],
            timeout=30_000,
            polling=50,
        )
        self.page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"
        )
        self.page.wait_for_timeout(200)

    def screenshot(self, name: str, locator: Any = None, scroll_to: Any = None) -> Path:
        """Save ``tests/artifacts/<name>.png``: the viewport (after scrolling ``scroll_to`` into view,
        aligned to the top of the notebook), or just ``locator``'s element."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        if scroll_to is not None:
            scroll_to.first.evaluate("el => el.scrollIntoView({block: 'start'})")
            self.page.wait_for_timeout(200)
        if locator is not None:
            locator.first.screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path), full_page=False)
        return path

    def collapse_sidebars(self) -> None:
        """Close the left and right side panels so screenshots show the notebook."""
        self.page.evaluate(
            "() => { const s = window.jupyterapp.shell; s.collapseLeft(); s.collapseRight(); }"
        )
        self.page.wait_for_timeout(200)

    def css_var(self, name: str) -> str:
        return self.page.evaluate(
            "n => getComputedStyle(document.body).getPropertyValue(n).trim()", name
        )

    # -- cleanup --------------------------------------------------------------------------------
    def shutdown_kernels(self) -> None:
        """Shut down the kernels of the notebooks this page opened (not other pages' kernels)."""
        try:
            for session in self.server.api("sessions"):
                if session.get("path") in self.opened:
                    self.server.api(f"sessions/{session['id']}", method="DELETE")
        except Exception:  # noqa: BLE001 - the server may be gone already
            pass

    # -- the monitor ----------------------------------------------------------------------------
    def grid(self, scope: str = MONITOR) -> "Grid":
        """The Perspective grid of the (first) monitor under ``scope``."""
        return Grid(self.page, scope)

    def header_commit(self, scope: str = MONITOR) -> tuple[int, int] | None:
        """``(revision, position)`` of the monitor header's "last commit" (None before one)."""
        text = self.page.locator(f"{scope} .lash-monitor-header dl.lash-fields dd").nth(1).inner_text()
        m = re.search(r"revision\s+(\d+)\s+at position\s+#?(\d+)", text)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def header_position(self, scope: str = MONITOR) -> int:
        """Position of the monitor header's "last event applied"."""
        text = self.page.locator(f"{scope} .lash-monitor-header dl.lash-fields dd").first.inner_text()
        m = re.search(r"position\s+#?(\d+)", text)
        assert m, f"no position in the header's last event applied: {text!r}"
        return int(m.group(1))

    def kernel_execute(self, code: str, timeout: float = 30.0) -> str:
        """Run ``code`` in the current notebook's kernel without a cell (``requestExecute``, not
        stored in the history: no execution count moves) and return its stdout; a traceback
        raises ``AssertionError``."""
        result = self.page.evaluate(
            """async (code) => {
              const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
              const future = k.requestExecute({code, silent: false, store_history: false});
              let out = '', err = null;
              future.onIOPub = msg => {
                if (msg.header.msg_type === 'stream') out += msg.content.text;
                if (msg.header.msg_type === 'error') err = msg.content.ename + ': ' + msg.content.evalue;
              };
              await future.done;
              return {out, err};
            }""",
            code,
        )
        assert result["err"] is None, f"kernel_execute failed: {result['err']}"
        return str(result["out"])


# ----------------------------------------------------------------------------------------------------
# The monitor's Perspective grid
# ----------------------------------------------------------------------------------------------------

# Perspective 5.6's DOM, as the tests read it (Playwright's CSS engine pierces open shadow roots):
#   perspective-viewer                                  the viewer (light DOM, inside the anywidget)
#     perspective-viewer-datagrid  >> regular-table     the grid plugin; its shadow root holds the
#       >> table thead tr th.psp-header-leaf            regular-table (its own shadow root: table);
#       >> table tbody tr td                            only the rows in the viewport are in the DOM
#     perspective-viewer-tab >> span#rows               title bar: "shown (total) / columns"
#     perspective-viewer-tab >> button.psp-tab-settings opens the settings panel
#     perspective-viewer-datagrid-toolbar >> #edit_mode cycles the datagrid's edit / select mode
#   viewer's shadow root: #settings_panel (#filter, #sort ...), #status_bar (#export, #copy ...)
#   perspective-export-menu, perspective-dropdown       light-DOM children of the viewer (popups)
_JS_GRID_ROWS = """
(scope) => {
  const viewer = document.querySelector(scope + ' perspective-viewer');
  const grid = viewer && viewer.querySelector('perspective-viewer-datagrid');
  const rt = grid && grid.shadowRoot && grid.shadowRoot.querySelector('regular-table');
  if (!rt) return null;
  const head = rt.querySelector('thead tr');
  const names = head ? [...head.children].map(th => th.textContent.trim()) : [];
  return [...rt.querySelectorAll('tbody tr')].map(tr => {
    const row = {};
    [...tr.children].forEach((td, i) => { row[names[i] || ('#' + i)] = td.textContent; });
    row.__selected = !!tr.querySelector('.psp-select-region');
    return row;
  });
}
"""
_JS_GRID_COUNT = """
(scope) => {
  const tab = document.querySelector(scope + ' perspective-viewer perspective-viewer-tab');
  const rows = tab && tab.shadowRoot && tab.shadowRoot.querySelector('#rows');
  return rows ? rows.textContent : null;
}
"""


# The viewer's config and its widget model are kept in step by Perspective's anywidget (5.6): on a
# config change the viewer's config is read back (``viewer.save()``, which waits for the viewer's
# pending renders: a second or more while the tour's producer streams) and set on the model, and
# every change of the model, this one included, is restored into the viewer. So a change the user
# makes while that read-back is on its way is undone: a filter value picked ("committed") goes back
# to what was typed before it ("c", no rows), a removed filter comes back. A test therefore acts
# on a settled viewer: after each action it waits until the viewer shows it (``wait_config``), the
# model holds the same (sent, echoed by the kernel) and no read-back is in flight (``settle``: the
# widget's calls of the viewer's save / restore / flush are counted by wrapping them).
_VIEWER_KEYS = ["sort", "filter", "plugin_config", "settings"]
_JS_NORMALISE = """
(key, value) => {
  if (value === undefined) value = null;
  if (key === 'plugin_config') value = value && value.edit_mode && value.edit_mode !== 'READ_ONLY' ? {edit_mode: value.edit_mode} : {};
  if (key === 'filter') value = (value || []).filter(c => c[2] !== null && c[2] !== undefined);
  if (key === 'sort') value = value || [];
  if (key === 'settings') value = !!value;
  return JSON.stringify(value);
}
"""
_JS_TRACK_SYNC = """
([scope, keys, base]) => {
  if (window.__lashSync) return true;
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const viewer = document.querySelector(scope + ' perspective-viewer');
  const S = window.__lashSync = {model: {}, pending: {}, changed: 0, busy: 0, calls: 0};
  for (const key of Object.keys(base)) S.model[key] = JSON.stringify(base[key]);
  kernel.anyMessage.connect((_, args) => {
    const msg = args.msg;
    if (msg.header.msg_type !== 'comm_msg') return;
    const data = msg.content.data || {};
    if (!data.state) return;
    for (const key of Object.keys(data.state)) {
      if (!keys.includes(key)) continue;
      const value = JSON.stringify(data.state[key]);
      if (args.direction === 'send') S.pending[key] = value;
      else if (data.method === 'echo_update' && S.pending[key] === value) delete S.pending[key];
      S.model[key] = value;
      S.changed = performance.now();
    }
  });
  // count the anywidget's calls of save / restore / flush in flight (the read-backs); the tests'
  // own reads go to the original methods (viewer.__lashOriginal)
  // (the methods are non-writable on the element's prototype: defined on the element instead)
  viewer.__lashOriginal = {save: viewer.save.bind(viewer), restore: viewer.restore.bind(viewer)};
  for (const name of ['save', 'restore', 'flush']) {
    const original = viewer[name].bind(viewer);
    const counted = (...args) => {
      S.busy += 1; S.calls += 1;
      const done = () => { S.busy -= 1; S.changed = performance.now(); };
      return Promise.resolve(original(...args)).finally(done);
    };
    Object.defineProperty(viewer, name, {value: counted, writable: true, configurable: true});
  }
  return viewer.save === viewer.save && Object.getOwnPropertyDescriptor(viewer, 'save') !== undefined;
}
"""
#: quiet this long (ms) with nothing in flight counts as settled (see ``_JS_SETTLED``)
SETTLED_STALE_MS = 2_000
_JS_SETTLED = """
async ([scope, keys, quiet]) => {
  const S = window.__lashSync;
  const norm = """ + _JS_NORMALISE + """;
  if (!S || S.busy || Object.keys(S.pending).length || performance.now() - S.changed < quiet) return false;
  // nothing in flight and quiet for a while: settled, even when the widget never copied the
  // viewer's state into its model (then no read-back is coming to undo the next action either)
  if (performance.now() - S.changed >= """ + str(SETTLED_STALE_MS) + """) return true;
  const config = await document.querySelector(scope + ' perspective-viewer').__lashOriginal.save();
  return keys.every(key => norm(key, config[key]) === norm(key, JSON.parse(S.model[key] || 'null')));
}
"""
_JS_CONFIG_IS = """
async ([scope, key, value]) => {
  const norm = """ + _JS_NORMALISE + """;
  const viewer = document.querySelector(scope + ' perspective-viewer');
  const config = await (viewer.__lashOriginal || viewer).save();
  return norm(key, config[key]) === norm(key, value);
}
"""
_JS_CONFIG_MATCHES = """
async ([scope, wanted]) => {
  const norm = """ + _JS_NORMALISE + """;
  const viewer = document.querySelector(scope + ' perspective-viewer');
  const config = await (viewer.__lashOriginal || viewer).save();
  return Object.entries(wanted).every(([key, value]) => norm(key, config[key]) === norm(key, value));
}
"""
#: The monitor grid's model values before any change (lash_nb._grid: sort newest first, read-only).
GRID_DEFAULTS = {"sort": [["seq", "desc"]], "filter": [], "plugin_config": {"edit_mode": "READ_ONLY"}, "settings": False}


class Grid:
    """Reads and drives the Perspective viewer of a monitor (``scope`` selects the monitor)."""

    #: JS ``(scope) => rows`` (what ``rows()`` returns), to build page-side waits from
    JS_ROWS = _JS_GRID_ROWS
    #: JS ``(scope) => "shown (total) / columns"`` text of the title bar's counter
    JS_COUNT = _JS_GRID_COUNT

    def __init__(self, page: Any, scope: str = MONITOR) -> None:
        self.page = page
        self.scope = scope
        self.viewer = page.locator(f"{scope} perspective-viewer").first

    def rows(self) -> list[dict[str, Any]]:
        """The rows in the DOM (the viewport's), top to bottom: column name -> cell text, and
        ``__selected`` (the row is in Perspective's selection highlight)."""
        return self.page.evaluate(_JS_GRID_ROWS, self.scope) or []

    def column(self, name: str) -> list[str]:
        return [r.get(name, "") for r in self.rows()]

    def positions(self) -> list[int]:
        return [int(p) for p in self.column("position") if p.strip()]

    def columns(self) -> list[str]:
        return self.page.locator(f"{self.scope} perspective-viewer regular-table thead tr").first.locator(
            "th"
        ).all_inner_texts()

    def counts(self) -> tuple[int, int]:
        """``(shown, total)`` rows from the title bar ("57 (648) / 15": filtered 57 of 648)."""
        text = self.page.evaluate(_JS_GRID_COUNT, self.scope)
        assert text, "no row counter in the viewer's title bar"
        m = re.match(r"\s*([\d,]+)\s*(?:\(([\d,]+)\))?\s*/", text)
        assert m, f"unexpected row counter {text!r}"
        shown = int(m.group(1).replace(",", ""))
        total = int(m.group(2).replace(",", "")) if m.group(2) else shown
        return shown, total

    def config(self) -> dict[str, Any]:
        """The viewer's own config (``viewer.save()``): sort, filter, plugin_config, settings..."""
        return self.viewer.evaluate("v => (v.__lashOriginal || v).save()")

    def wait_rows(self, minimum: int = 1, timeout: float = 30.0) -> None:
        self.page.wait_for_function(
            f"(scope) => (({_JS_GRID_ROWS})(scope) || []).length >= {int(minimum)}",
            arg=self.scope,
            timeout=timeout * 1000,
        )

    def wait_total_change(self, since: int, timeout: float = 15.0) -> int:
        """Wait until the total row count differs from ``since``; return the new total."""
        self.page.wait_for_function(
            """([scope, since]) => {
              const t = (""" + _JS_GRID_COUNT + """)(scope);
              const m = t && t.match(/([\\d,]+)\\s*(?:\\(([\\d,]+)\\))?\\s*\\//);
              return m && parseInt((m[2] || m[1]).replace(/,/g, '')) !== since;
            }""",
            arg=[self.scope, since],
            timeout=timeout * 1000,
        )
        return self.counts()[1]

    def wait_updates(self, n: int = 2, timeout: float = 20.0) -> int:
        """Wait for ``n`` grid updates (the total row count changing ``n`` times)."""
        total = self.counts()[1]
        for _ in range(n):
            total = self.wait_total_change(total, timeout)
        return total

    def wait_row(self, where: dict[str, str], contains: dict[str, str] | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """Wait (checking every animation frame: a live row may scroll out of the viewport in a
        second) for a row whose cells equal ``where`` and contain ``contains``; return it."""
        handle = self.page.wait_for_function(
            """([scope, where, contains]) => {
              const rows = (""" + _JS_GRID_ROWS + """)(scope) || [];
              return rows.find(r => Object.entries(where).every(([k, v]) => r[k] === v)
                && Object.entries(contains).every(([k, v]) => (r[k] || '').includes(v))) || false;
            }""",
            arg=[self.scope, where, contains or {}],
            polling="raf",
            timeout=timeout * 1000,
        )
        return handle.json_value()

    def header(self, column: str) -> Any:
        """The header cell of ``column`` (a click sorts by it)."""
        return self.page.locator(
            f"{self.scope} perspective-viewer regular-table thead tr th.psp-header-leaf"
        ).filter(has=self.page.locator(f"span:text-is('{column}')")).first

    def track(self, base: dict[str, Any] | None = None) -> None:
        """Start following the viewer's config messages and the widget's read-backs (once a page;
        call it on a settled viewer); ``base``: the model's values then (default ``GRID_DEFAULTS``)."""
        assert self.page.evaluate(_JS_TRACK_SYNC, [self.scope, _VIEWER_KEYS, GRID_DEFAULTS if base is None else base])

    def _poll(self, js: str, arg: Any, timeout: float) -> bool:
        """Evaluate the async ``js`` every 250 ms until it gives true (``wait_for_function`` does
        not wait for a promise: it takes the promise itself as a true value)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.page.evaluate(js, arg):
                return True
            if time.monotonic() > deadline:
                return False
            self.page.wait_for_timeout(250)

    def settle(self, quiet_ms: int = 300, timeout: float = 30.0) -> None:
        """Wait until the widget model holds what the viewer shows (sent, echoed by the kernel), no
        read-back of the widget is in flight and nothing changed for ``quiet_ms``: no read-back is
        left to undo the next action."""
        self.track()
        if not self._poll(_JS_SETTLED, [self.scope, _VIEWER_KEYS, quiet_ms], timeout):
            state = self.page.evaluate("() => JSON.stringify(window.__lashSync)")
            raise AssertionError(f"the grid's viewer and model never settled: model {state}, viewer {self.config()}")

    def wait_config(self, key: str, value: Any, timeout: float = 20.0, settle: bool = True) -> None:
        """Wait until the viewer's own config has ``key`` == ``value`` (a filter clause without a
        value counts as none, read-only as ``{}``), then ``settle``."""
        if not self._poll(_JS_CONFIG_IS, [self.scope, key, value], timeout):
            raise AssertionError(f"the viewer's {key} never became {value!r}: {self.config().get(key)!r}")
        if settle:
            self.settle()

    def edit_mode(self) -> str:
        """The datagrid's edit / select mode, from its toolbar button (``data-edit-mode``)."""
        return self.page.locator(
            f"{self.scope} perspective-viewer-datagrid-toolbar #edit_mode"
        ).first.get_attribute("data-edit-mode") or ""

    def header_sort(self, column: str) -> str:
        """"asc", "desc" or "" for ``column``'s header cell (its ``psp-header-sort-*`` class)."""
        cls = self.header(column).get_attribute("class") or ""
        m = re.search(r"psp-header-sort-(asc|desc)\b", cls)
        return m.group(1) if m else ""

    def open_settings(self) -> None:
        if not self.config().get("settings"):
            self.page.locator(f"{self.scope} perspective-viewer-tab button.psp-tab-settings").first.click()
            self.page.locator(f"{self.scope} perspective-viewer #settings_panel").first.wait_for(state="visible")
            self.wait_config("settings", True)

    def close_settings(self) -> None:
        if self.config().get("settings"):
            panel = self.page.locator(f"{self.scope} perspective-viewer #settings_panel").first
            for _ in range(2):  # a click while the panel redraws can miss: a user clicks again
                self.page.locator(f"{self.scope} perspective-viewer #settings_close_button").first.click()
                try:
                    panel.wait_for(state="hidden", timeout=10_000)
                    break
                except Exception:  # noqa: BLE001 - once more
                    continue
            panel.wait_for(state="hidden", timeout=1_000)
            self.wait_config("settings", False)

    def scroll_to(self, left: int = 0, top: int = 0) -> None:
        """Scroll the datagrid (its ``regular-table``) to ``left``, ``top`` pixels."""
        self.page.locator(f"{self.scope} perspective-viewer regular-table").first.evaluate(
            "(rt, [l, t]) => { rt.scrollLeft = l; rt.scrollTop = t; }", [left, top]
        )

    def matches(self, **config: Any) -> bool:
        """Whether the viewer's config has these values (normalised as ``wait_config`` does)."""
        return bool(self.page.evaluate(_JS_CONFIG_MATCHES, [self.scope, config]))

    def restore(self, **config: Any) -> None:
        """``viewer.restore(config)`` (the viewer's JS API; tests use it only to clean up) of the
        keys that differ, then wait until the viewer and its model hold them; tried three times."""
        self.track()
        for _ in range(3):
            differs = self.page.evaluate(
                """async ([scope, wanted]) => {
                  const norm = """ + _JS_NORMALISE + """;
                  const viewer = document.querySelector(scope + ' perspective-viewer');
                  const config = await (viewer.__lashOriginal || viewer).save();
                  return Object.keys(wanted).filter(key => norm(key, config[key]) !== norm(key, wanted[key]));
                }""",
                [self.scope, config],
            )
            changed = {k: config[k] for k in differs}
            if not changed:
                self.settle()
                if self.matches(**config):
                    return
                continue
            self.viewer.evaluate("(v, c) => (v.__lashOriginal || v).restore(c)", changed)
            if self._poll(_JS_CONFIG_MATCHES, [self.scope, config], 20):
                self.settle()
                if self.matches(**config):
                    return
        raise AssertionError(f"the viewer did not keep {config}: {self.config()}")
