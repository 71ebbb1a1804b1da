"""``import lash_nb`` needs pandas only: no ipywidgets, no IPython. Frames, the monitor's state and
the renderers work without them; the widget classes load on first use (PEP 562).

The last test builds a fresh virtual environment with the project (no extras) and pandas alone,
from PyPI through pip's cache: about 15 s warm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIDGET_MODULES = ("ipywidgets", "IPython", "traitlets", "ipykernel", "comm")

#: Runs in a child interpreter: lash_nb's pure half, end to end, on a real scenario.
PURE_USE = textwrap.dedent(
    """
    import asyncio, sys
    import lash_nb
    from lash_core.testing import Scenario

    frame = lash_nb.to_frame([])
    assert list(frame.columns) == list(lash_nb.COLUMNS)

    async def main():
        s = await Scenario.create(replies=["hi <b>there</b>"], cycle=False)
        state = lash_nb.MonitorState(s.handle, visible_rows=5)
        await s.handle.run_turn("go")
        state.poll()
        assert state.event_count > 3 and state.revision == 1 and state.connected
        header = lash_nb.render.monitor_header_html(state.statistics())
        table = lash_nb.render.monitor_table_html(state.table(), state.visible_rows)
        assert f"{state.event_count} events" in header and "<b>there" not in table
        return state

    asyncio.run(main())
    # (a module blocked with None is not loaded)
    loaded = sorted({m.split(".")[0] for m, mod in sys.modules.items() if mod is not None} & set(WIDGET_MODULES))
    assert not loaded, loaded
    assert "SessionMonitor" in dir(lash_nb) and "SessionMonitor" in lash_nb.__all__
    print("pure ok")
    """
)


def run(code: str, python: str = sys.executable, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-c", f"WIDGET_MODULES = {WIDGET_MODULES!r}\n" + code],
        capture_output=True, text=True, timeout=120, cwd=REPO, **kw,
    )


def test_importing_lash_nb_imports_no_widget_or_ipython_code():
    done = run("import lash_nb, sys; lash_nb.to_frame([]); "
               "assert 'ipywidgets' not in sys.modules and 'IPython' not in sys.modules, sorted(sys.modules)")
    assert done.returncode == 0, done.stderr
    done = run(PURE_USE)
    assert done.returncode == 0 and "pure ok" in done.stdout, done.stderr


def test_the_pure_half_works_with_widget_packages_blocked_and_widgets_load_on_first_use():
    # None in sys.modules makes `import ipywidgets` raise ImportError: as if never installed
    block = "import sys\nfor name in WIDGET_MODULES:\n    sys.modules[name] = None\n"
    later = textwrap.dedent(
        """
        try:
            lash_nb.SessionMonitor
        except ImportError as err:
            print("widgets need:", err.name)
        else:
            raise AssertionError("SessionMonitor loaded without ipywidgets")
        """
    )
    done = run(block + PURE_USE + later)
    assert done.returncode == 0, done.stderr
    assert "pure ok" in done.stdout and "widgets need: ipywidgets" in done.stdout
    # with them installed, the widget classes load on first access, once
    done = run(
        "import sys, lash_nb\n"
        "assert 'ipywidgets' not in sys.modules\n"
        "from lash_nb import SessionMonitor, EnqueuePanel, QueuePanel, ReconnectSimulator\n"
        "from lash_nb._monitor import SessionMonitor as direct\n"
        "assert SessionMonitor is direct is lash_nb.SessionMonitor and 'ipywidgets' in sys.modules\n"
        "assert lash_nb.QueuePanel.__module__ == 'lash_nb._controls'\n"
        "try:\n    lash_nb.NoSuchThing\nexcept AttributeError as err:\n    assert 'NoSuchThing' in str(err)\n"
        "else:\n    raise AssertionError\n"
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(240)
def test_a_fresh_venv_with_pandas_only_imports_lash_nb(tmp_path):
    """A plain venv (no system site packages): the project without extras, pandas from PyPI."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for args in (["--no-deps", "-e", str(REPO)], ["pandas"]):
        done = subprocess.run(pip + args, capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    done = subprocess.run(
        [python, "-c", "import importlib.util as u; print([m for m in ('ipywidgets', 'IPython', 'traitlets') if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr  # really not installed there
    check = (
        "import lash_nb, sys; lash_nb.to_frame([]); "
        "assert 'ipywidgets' not in sys.modules and 'IPython' not in sys.modules"
    )
    done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    done = run(PURE_USE, python=python, env=env)
    assert done.returncode == 0 and "pure ok" in done.stdout, done.stderr
