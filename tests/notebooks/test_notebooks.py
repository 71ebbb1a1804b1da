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


def widget_models(nb, model_name: str) -> list[dict]:
    """The states of the widget models of one kind (``"HTMLModel"``...) as nbclient saved them with
    the executed notebook (its widget state: each model's last state)."""
    saved = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return [m["state"] for m in saved.get("state", {}).values() if m.get("model_name") == model_name]


def widget_html(nb) -> str:
    return "\n".join(str(state.get("value", "")) for state in widget_models(nb, "HTMLModel"))


#: a line of the tour's run-turn cell: the header's two cursors at one moment
_CURSORS = re.compile(
    r"^(before|during|after)\s+last event applied: position (\d+) \| "
    r"last commit: revision (\d+) at position (\d+) \| turn running: (True|False)$",
    re.M,
)


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
    # the monitor's header labels the two cursors
    header = widget_html(nb)
    assert "last event applied" in header and "last commit" in header


def test_tour_run_turn_moves_the_last_commit():
    nb = executed("01_tour.ipynb")
    run_turn = text(nb, "run-turn")
    seen = {m[0]: (int(m[1]), int(m[2]), int(m[3]), m[4] == "True") for m in _CURSORS.findall(run_turn)}
    assert set(seen) == {"before", "during", "after"}, run_turn
    (pos0, rev0, commit0, busy0), (pos1, rev1, commit1, busy1), (pos2, rev2, commit2, busy2) = (
        seen["before"], seen["during"], seen["after"]
    )
    assert pos0 == commit0 and not busy0  # idle: the two cursors meet
    # mid-turn: the resume point runs ahead, the last commit stays, the badge says running
    assert pos1 > pos0 and (rev1, commit1) == (rev0, commit0) and busy1
    # committed: the last commit moved on by one revision, to the newest event
    assert rev2 == rev0 + 1 and commit2 > commit0 and pos2 == commit2 and not busy2
    assert f"turn finished: committed revision {rev2}" in run_turn
    # run_sync from a button's on_click ran a whole turn: the next revision
    answer = re.search(r"the callback's answer: finished at revision (\d+): \S", text(nb, "run-sync"))
    assert answer and int(answer.group(1)) == rev2 + 1
    # Pause loses nothing: events kept arriving, Follow put every one in the grid
    pause = text(nb, "pause")
    arrived = int(re.search(r"paused: True \| events that arrived meanwhile: (\d+)", pause).group(1))
    grid_rows, kept = map(int, re.search(r"rows in the grid: (\d+) \| rows kept: (\d+)", pause).groups())
    assert arrived > 0 and grid_rows == kept > 0


def test_reconnect_outputs():
    nb = executed("02_reconnect_and_gaps.ipynb")
    replay = text(nb, "replay")
    assert re.search(r"replayed - \d+ events replayed", replay)
    assert "A's view equals the server's: True" in replay
    # before B reconnects, the retention strip already says it will gap (and why)
    strip = text(nb, "strip")
    assert re.search(r"A at \d+: live", strip)
    assert re.search(r"B at \d+: will gap \(trimmed by count: \d+ needed events? dropped\)", strip)
    assert any("image/png" in o.get("data", {}) for o in outputs(nb, "retention-figure"))
    # the count gap, explained: cause count, integer counts (dropped by retention, missed in all:
    # the gap's own missed_events, the same number everywhere), the exact dropped range
    trimmed = text(nb, "trimmed")
    assert "gap - trimmed" in trimmed and "view equals the server's: True" in trimmed
    cause, dropped, missed = re.search(
        r"cause: (\S+) \| dropped: (\d+) \| missed events: (\d+) \| by count: True\n", trimmed
    ).groups()
    assert cause == "count"
    dropped, missed = int(dropped), int(missed)
    lo, hi = map(int, re.search(
        rf"trimmed by count: retention dropped {dropped} events? this client still needed \(positions (\d+)\.\.(\d+);",
        trimmed,
    ).groups())
    assert hi - lo + 1 == dropped > 0
    assert f"(gap.missed_events): {missed}\n" in trimmed and f", {missed} events after its cursor" in trimmed
    assert missed > dropped  # a gap replays nothing: the retained positions are missed too
    gap_html = html(nb, "gap-html")
    assert "trimmed" in gap_html and "lashsc1:" in gap_html
    # the age gap: cause age, everything gone
    age = text(nb, "age")
    assert "gap - trimmed" in age and "retained_events=0" in age
    cause, age_dropped, age_missed = re.search(
        r"cause: (\S+) \| dropped: (\d+) \| missed events: (\d+) \| by age: True\n", age
    ).groups()
    assert cause == "age" and int(age_dropped) > 0 and age_missed == age_dropped  # none retained
    assert f"trimmed by age: retention dropped {age_dropped} events" in age and "the store kept none" in age
    unavailable = text(nb, "unavailable")
    assert "gap - unavailable" in unavailable
    assert "cause: None | dropped: None | missed events: None" in unavailable and "unavailable: " in unavailable
    assert "B's view equals the server's: True" in unavailable
    # the gap log: one row per gap, its cause and integer counts, <NA> where there is none
    log = text(nb, "gap-log")
    rows = re.findall(r"^\d+\s+(A|B)\s+(trimmed|unavailable)\s+(count|age|<NA>)\s+(\d+|<NA>)\s+(\d+|<NA>)\s", log, re.M)
    assert rows == [
        ("B", "trimmed", "count", str(missed), str(dropped)),
        ("A", "trimmed", "age", age_missed, age_dropped),
        ("B", "unavailable", "<NA>", "<NA>", "<NA>"),
    ], log
    assert "NaN" not in log and not re.search(r"\b\d+\.0\b", log)
    assert f"trimmed by count: retention dropped {dropped} events" in log and "unavailable: " in log
    # the Reconnect lab's own gap log has the why column, with both causes
    lab = widget_html(nb)
    assert "<th>why</th>" in lab
    assert "trimmed by count" in lab and "trimmed by age" in lab


def test_queue_outputs():
    nb = executed("03_queue.ipynb")
    enqueue = text(nb, "enqueue")
    assert "same batch for the retry: True" in enqueue
    assert "after_current_turn_commit" in enqueue and "earliest_safe_boundary" in enqueue
    assert "rows in the Queue tab: 2 | pending: 2" in enqueue
    cancel = text(nb, "cancel")
    assert "refused -> None | <CancelOutcome.REFUSED: 'refused'> | refused: a worker holds its claim" in cancel
    assert "cancelled -> True | <CancelOutcome.CANCELLED: 'cancelled'> | cancelled" in cancel
    assert "unknown -> None | <CancelOutcome.UNKNOWN: 'unknown'> | unknown batch id" in cancel
    assert "outcomes: ['refused', 'cancelled', 'unknown']" in cancel
    drain = text(nb, "drain")
    assert "waiting before the drain: 3" in drain and "turns run from the queue: 3" in drain
    assert "left in the queue: 0 | rows in the Queue tab: 0" in drain
    assert drain.count("queued_work_started") == 3
    # the drain's progress bar (tqdm, in the Queue tab) went to the end: 3 of 3 batches
    bars = [b for b in widget_models(nb, "FloatProgressModel") if b.get("max") == 3]
    assert bars and all(b["value"] == 3 and b["bar_style"] == "success" for b in bars), bars
    assert re.search(r"draining\squeued\swork:\s100%", widget_html(nb))  # tqdm spaces are U+2007
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
