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
``open_lab`` (module) / ``lab`` (function)
    A fresh browser context and page wrapped in :class:`Lab` (``open_lab()`` is a context manager, for
    module-scoped fixtures that open and run a notebook once), the helper the tests use:
    ``open_notebook``, ``wait_kernel_idle``, ``run_all``, ``wait_executed``, ``set_theme``,
    ``screenshot``, ``kernel_status`` and friends.

Every test here needs the ``browser`` marker; when Chromium, Playwright or JupyterLab is missing the
tests are skipped with the reason printed (``scripts/browser-setup`` installs Chromium when it can).
"""

from __future__ import annotations

import contextlib
import json
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

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path.lstrip('/')}{sep}token={self.token}"

    def lab_url(self, notebook: str) -> str:
        """URL that opens ``notebook`` (a path relative to the root, e.g. ``notebooks/01_tour.ipynb``)."""
        return self.url(f"lab/tree/{notebook}")

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


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    _skip_if_unavailable()
    base = tmp_path_factory.mktemp("jupyterlab")
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
    log_path = base / "jupyterlab.log"
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI and these machines run as root
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LabServer(f"http://127.0.0.1:{port}/", token, root, log_path, proc)
    try:
        deadline = time.monotonic() + LAB_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer /api/status in time:\n{server.log_tail()}")
            time.sleep(0.2)
        specs = server.api("kernelspecs")
        if "python3" not in specs.get("kernelspecs", {}):
            raise RuntimeError(f"no python3 kernelspec visible to the server: {specs}")
        yield server
    finally:
        _stop_process_group(proc)


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

    @contextlib.contextmanager
    def _open() -> Iterator[Lab]:
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(30_000)
        page = context.new_page()
        helper = Lab(page, lab_server)
        page.on("console", lambda msg: helper.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: helper.console.append(f"pageerror: {exc}"))
        try:
            yield helper
        finally:
            context.close()
            helper.shutdown_kernels()

    return _open


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


def _dump_failure(request: pytest.FixtureRequest, labs: list["Lab"]) -> None:
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    for i, helper in enumerate(labs):
        if helper.page.is_closed() or helper.dumped:
            continue
        helper.dumped = True
        try:
            path = helper.screenshot(f"FAILED-{request.node.name}-{i}")
            print(f"\n[browser] failure screenshot: {path}")
        except Exception as exc:  # noqa: BLE001 - best effort on a failing test
            print(f"\n[browser] could not take a failure screenshot: {exc}")
        print("--- browser console (last 40) ---\n" + "\n".join(helper.console[-40:]))
        print("--- jupyterlab log (tail) ---\n" + helper.server.log_tail(40))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
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
        self.dumped = False

    # -- navigation -----------------------------------------------------------------------------
    def open_notebook(self, notebook: str, timeout: float = 60.0) -> None:
        """Open ``notebook`` (relative to the server root) and wait for Lab, the panel and an idle kernel."""
        self.opened.add(notebook)
        self.page.goto(self.server.lab_url(notebook), wait_until="domcontentloaded")
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
