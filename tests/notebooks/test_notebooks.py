"""Every notebook in notebooks/ runs top to bottom in a real ipykernel, and its key outputs hold."""

import pathlib
import re
import sys

import servers

import nbclient
import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[2] / "notebooks"
_cache: dict[str, nbformat.NotebookNode] = {}


KERNEL = "lash-nb-test"


@pytest.fixture(scope="module", autouse=True)
def kernelspec():
    """A kernelspec for this very interpreter (the test venv), so a machine-wide ``python3``
    kernelspec can never run the notebooks with other packages."""
    install_kernelspec(kernel_name=KERNEL, display_name="lash-nb tests", prefix=sys.prefix)


def executed(name: str) -> nbformat.NotebookNode:
    if name not in _cache:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = nbclient.NotebookClient(
            nb,
            timeout=120,
            kernel_name=KERNEL,
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        )
        client.execute()
        _cache[name] = nb
    return _cache[name]


def outputs(nb, tag: str) -> list[dict]:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert cells, f"no cell tagged {tag!r}"
    return [o for c in cells for o in c.outputs]


def text(nb, tag: str) -> str:
    parts = []
    for o in outputs(nb, tag):
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            parts.append(o.data.get("text/plain", ""))
        elif o.output_type == "error":
            pytest.fail(f"cell {tag!r} raised {o.ename}: {o.evalue}")
    return "".join(parts)


def html(nb, tag: str) -> str:
    return "".join(o.data.get("text/html", "") for o in outputs(nb, tag) if "data" in o)


def test_every_notebook_is_covered():
    names = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert names == {
        "01_tour.ipynb",
        "02_reconnect_and_gaps.ipynb",
        "03_queue.ipynb",
        "04_durable_and_shared.ipynb",
        "05_forensics.ipynb",
        "06_remote.ipynb",
    }


#: notebooks that start a server of their own (``lash_core.servers``): skipped with the reason
#: when it cannot start, fatal under LASH_REQUIRE_SERVERS=1 (tests/servers.py)
NEEDS_REDIS = {"04_durable_and_shared.ipynb"}
#: notebooks about recorded logs: DataFrames and figures, no live monitor
WITHOUT_MONITOR = {"05_forensics.ipynb"}


def _servers_for(name: str) -> None:
    if name in NEEDS_REDIS:
        servers.redis()  # skips (or fails under LASH_REQUIRE_SERVERS=1) without redis-server


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_without_errors_and_shows_widgets(name):
    _servers_for(name)
    nb = executed(name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    if name in WITHOUT_MONITOR:
        return
    widget_views = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widget_views, "the monitor widget was displayed"


def test_tour_outputs():
    nb = executed("01_tour.ipynb")
    turn = text(nb, "turn")
    assert "finished | Hello! I am a scripted model" in turn
    assert "revision: 1" in turn
    history = text(nb, "history")
    assert "assistant_prose_delta" in history and "committed" in history
    counts = text(nb, "counts")
    assert re.search(r"committed\s+1", counts) and re.search(r"turn_activity\s+\d+", counts)
    cursor_text = text(nb, "cursor")
    assert "SessionCursor(<opaque>)" in cursor_text and "lashsc1" not in cursor_text
    assert "lashsc1:1:" in html(nb, "cursor")  # the HTML view shows it, escaped in <code>
    before, after = map(int, re.search(r"events before: (\d+) after: (\d+)", text(nb, "producer")).groups())
    assert after > before
    assert re.search(r"batch_id='qwb-[0-9a-f]+'", text(nb, "enqueue"))
    assert "after_current_turn_commit" in html(nb, "enqueue")  # the batch's rich view
    queue_events = text(nb, "queue-events")
    assert "enqueued qwb-" in queue_events


def test_reconnect_outputs():
    nb = executed("02_reconnect_and_gaps.ipynb")
    replay = text(nb, "replay")
    assert re.search(r"replayed - \d+ events replayed", replay)
    assert "A's view equals the server's: True" in replay
    trimmed = text(nb, "trimmed")
    assert "gap - trimmed" in trimmed and "view equals the server's: True" in trimmed
    missed = int(re.search(r"missed events: (\d+)", trimmed).group(1))
    assert missed > 5
    gap_html = html(nb, "gap-html")
    assert "trimmed" in gap_html and "lashsc1:" in gap_html
    assert "gap - trimmed" in text(nb, "age") and "retained_events=0" in text(nb, "age")
    unavailable = text(nb, "unavailable")
    assert "gap - unavailable" in unavailable
    assert "B's view equals the server's: True" in unavailable
    log = text(nb, "gap-log")
    assert log.count("trimmed") == 2 and log.count("unavailable") == 1
    # missed counts are integers, <NA> for the unavailable gap (not 12.0 / NaN)
    assert "<NA>" in log and "NaN" not in log and not re.search(r"\b\d+\.0\b", log)


def test_queue_outputs():
    nb = executed("03_queue.ipynb")
    enqueue = text(nb, "enqueue")
    assert "same batch for the retry: True" in enqueue
    assert "after_current_turn_commit" in enqueue and "earliest_safe_boundary" in enqueue
    cancel = text(nb, "cancel")
    assert "refused -> None" in cancel and "cancelled -> True" in cancel and "unknown -> None" in cancel
    assert "'refused'" in cancel and "'cancelled'" in cancel and "'unknown'" in cancel
    drain = text(nb, "drain")
    assert "turns run from the queue: 1" in drain and "queued_work_started" in drain
    assert text(nb, "join").startswith("True | The answer is 42.")


@pytest.mark.servers
def test_durable_and_shared_outputs():
    _servers_for("04_durable_and_shared.ipynb")
    nb = executed("04_durable_and_shared.ipynb")
    enqueued = re.findall(r"qwb-[0-9a-f]+", text(nb, "queue-enqueue"))
    assert len(enqueued) == 3
    restart = text(nb, "queue-restart")
    assert "same batches, no duplicates: True" in restart
    pids = re.findall(r"pid (\d+)", text(nb, "queue-enqueue") + restart)
    assert len(set(pids)) == 2, "the peer kernel really restarted (a new process)"
    assert all(batch in restart for batch in enqueued)  # the frame read by this kernel lists them
    follow = text(nb, "follow")
    appended = int(re.search(r"events appended by this kernel: (\d+)", follow).group(1))
    seen = int(re.search(r"events the other process has seen: (\d+)", follow).group(1))
    assert appended > 10 and seen == appended
    after = text(nb, "restart")
    assert "positions in order, none missing, none twice: True" in after
    assert "gaps: 0 | lags: 0 | ended by: signal" in after
    mine = re.search(r"this kernel's monitor: (\d+) events, gaps: (\d+) \| connected: (\w+)", after)
    assert mine and int(mine.group(1)) >= appended and mine.group(2) == "0"
    every_output = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "Task was destroyed" not in every_output and "Traceback" not in every_output
    lost = text(nb, "lost")
    assert "read before the restart: 3 events" in lost
    assert "the follower was told: unavailable | missed events: None" in lost
    assert "it resumes from the new instance's cursor: True" in lost
    assert "closed; servers stopped; removed True" in text(nb, "cleanup")


def test_forensics_outputs():
    nb = executed("05_forensics.ipynb")
    incident = text(nb, "incident")
    assert re.search(r"the tab drops after \d+ events", incident)
    client_events, client_gaps = map(int, re.search(r"client: (\d+) events, (\d+) gap", incident).groups())
    server_events, server_gaps = map(int, re.search(r"server: (\d+) events, (\d+) gap", incident).groups())
    assert client_gaps == 1 and server_gaps == 0 and server_events > client_events > 0
    assert "0 errors" in text(nb, "load")
    gaps = text(nb, "client-gaps")
    assert "trimmed" in gaps
    report = text(nb, "gap-report")
    assert "1 missing ranges (0 silent)" in report and "trimmed" in report
    turns_server, turns_client = text(nb, "turns-server"), text(nb, "turns-client")
    complete_turn = r"^\s*\d+\s+\d+\s+\d+\s+True"  # index, turn, committed_revision, complete
    assert len(re.findall(complete_turn, turns_server, re.M)) == 5
    assert len(re.findall(complete_turn, turns_client, re.M)) == 2
    comparison = text(nb, "compare")
    missed = int(re.search(r"(\d+) missed \(0 unannounced\)", comparison).group(1))
    assert missed == server_events - client_events
    assert "final view matches" in comparison and re.search(r"final_view_matches\s+True", comparison)
    tampered = text(nb, "tampered")
    assert re.search(r"\(\d+ silent\)", tampered) and "(0 silent)" not in tampered
    assert f"{missed} missed ({missed} unannounced)" in tampered
    assert any("image/png" in o.get("data", {}) for o in outputs(nb, "timeline"))
    files = text(nb, "files")
    assert "Parquet round trip equal: True" in files and "gzip round trip equal: True" in files
    broken = text(nb, "broken")
    assert "4 errors" in broken
    for line in ("6", "7", "8", "9"):
        assert re.search(rf"^\d+\s+{line}\s", broken, re.M), f"line {line} in .errors"
    assert "empty line" in broken and "not_utf8" in broken and "revision" in broken


def test_remote_outputs():
    nb = executed("06_remote.ipynb")
    assert "session='kernel-a-chat'" in text(nb, "peer-follow")
    assert "committed" in text(nb, "peer-follow")
    replay = text(nb, "peer-replay")
    assert "'committed': 1" in replay and "gaps so far: 0" in replay and "GAP" not in replay
    gap = text(nb, "peer-gap")
    assert "GAP trimmed" in gap and "gap: trimmed" in gap and "B's cursor is A's tail: True" in gap
    rows = text(nb, "http-rows")
    assert '{"type":"replay_cursor","cursor":"lashsc1:0:0:http-chat"}' in rows
    assert '{"type":"observation","event":{"protocol_version":3' in rows
    restart = text(nb, "http-restart")
    assert re.search(r"reconnected after \d+ attempt", restart) and "'committed': 1" in restart
    assert "caught up with the server: True | gaps: 0" in restart
