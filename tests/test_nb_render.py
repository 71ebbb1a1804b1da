"""lash_nb._render and lash_nb._ipython: escaped HTML for every lash value, opaque text, and the
IPython extension, driven with values from a real runtime (and fuzzed with hypothesis)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from unencodable import ONE_PER_KIND, circular_list, deep_list
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lash_nb import CancelOutcome
from lash_core import (
    AgentFrameSwitched,
    AssistantProseDelta,
    ChatMessage,
    ChatRole,
    DeliveryPolicy,
    GapResume,
    LiveReplayGap,
    LiveReplayGapReason,
    MergeKey,
    ModelSpec,
    ObservationSummary,
    ProcessChanged,
    QueueChanged,
    QueuedWorkBatch,
    QueuedWorkItem,
    ScriptedModel,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    SessionPolicy,
    SessionProcessEventKind,
    SessionQueueEventKind,
    SessionReadView,
    SessionRevision,
    SlotPolicy,
    TokenUsage,
    ToolCallStarted,
    TurnActivity,
    TurnActivityPayload,
    TurnError,
    TurnInput,
    UnknownPayload,
)
from lash_core._runtime._state import ToolCall
from lash_core.testing import Scenario

import lash_nb
from lash_nb import COLUMNS, EventHistory, Rich, event_row, render, to_frame

IMG = "<img src=x onerror=alert(1)>"
HOSTILE = "s<script>\"&'x"
OPAQUE = "SessionCursor(<opaque>)"

#: Every tag and attribute our markup may contain; anything else came from data.
ALLOWED_TAGS = {
    "style", "div", "span", "code", "table", "thead", "tbody", "tr", "th", "td",
    "dl", "dt", "dd", "details", "summary", "b", "br",
}
ALLOWED_ATTRS = {"class", "title"}


class Markup(HTMLParser):
    """Parses a rendering the way a browser tokenizes it: our tags, and text with entities
    decoded (so data shows up here exactly as the user typed it)."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.texts: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.texts.append(data)

    def shows(self, value: str) -> bool:
        """``value`` is visible as text, or (for a cut cell) whole in a tooltip."""
        return any(value in t for t in self.texts) or any(
            v is not None and value in v for _, v in self.attrs
        )


def assert_safe(markup: str, *data: str) -> Markup:
    parsed = Markup(markup)
    assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
    assert {name for name, _ in parsed.attrs} <= ALLOWED_ATTRS
    assert "<script" not in markup.lower() and "<img" not in markup.lower()
    for value in data:
        assert parsed.shows(value), value
    return parsed


def make_event(session_id: str, position: int, payload) -> SessionObservationEvent:
    cursor = SessionCursor.new(session_id, 1, position)
    return SessionObservationEvent(session_id, SessionRevision(1), cursor, payload)


def make_batch(batch_id: str, text: str, source_key: str | None = None) -> QueuedWorkBatch:
    return QueuedWorkBatch(
        batch_id=batch_id,
        session_id=batch_id,
        enqueue_seq=3,
        source_key=source_key,
        delivery_policy=DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
        slot_policy=SlotPolicy.EXCLUSIVE,
        merge_key=MergeKey.group(batch_id),
        available_at_ms=0,
        enqueued_at_ms=1_750_000_000_000,
        items=[QueuedWorkItem(f"{batch_id}:item:0", TurnInput.text(text))],
    )


def make_view(session_id: str, text: str) -> SessionReadView:
    return SessionReadView(
        session_id=session_id,
        turn_index=2,
        messages=(
            ChatMessage(ChatRole.USER, text),
            ChatMessage(ChatRole.ASSISTANT, text, reasoning=text, tool_calls=(ToolCall("c1", text, {text: text}),)),
            ChatMessage(ChatRole.TOOL, text, tool_call_id="c1", tool_name=text),
        ),
        usage=TokenUsage(input_tokens=11, output_tokens=7),
        policy=SessionPolicy(model=ModelSpec.from_token_limits("test-model", None, 1024, None)),
        current_agent_frame_id=text,
    )


# --- real sessions ------------------------------------------------------------------------------------


async def test_an_assistant_delta_of_an_img_tag_renders_as_text():
    scenario = await Scenario.create(replies=[IMG], chunk_size=64)
    client = scenario.client()
    await scenario.handle.run_turn("show me " + IMG)
    events = client.pump()
    (delta,) = [e for e in events if isinstance(e.payload, TurnActivityPayload)
                and isinstance(e.payload.activity.event, AssistantProseDelta)]
    escaped = html.escape(IMG)
    for markup in (
        render.event_html(delta),
        render.events_table_html(to_frame(events)),
        render.events_table_html(events),
        render.observation_html(scenario.handle.observe()),
        render.observation_html(scenario.handle.current_session_observation()),
        lash_nb.mimebundle(delta)["text/html"],
        Rich(delta)._repr_html_(),
    ):
        assert escaped in markup
        assert_safe(markup, IMG)
    # split across several deltas it is still only text
    scenario = await Scenario.create(replies=[IMG], chunk_size=3)
    client = scenario.client()
    await scenario.handle.run_turn("again")
    events = client.pump()
    history = EventHistory()
    history.append(events)
    assert_safe(render.events_table_html(history))
    assert_safe("".join(render.event_html(e) for e in events))


async def test_hostile_ids_from_a_real_session_are_escaped_everywhere():
    scenario = await Scenario.create(
        session_id=HOSTILE,
        replies=[ScriptedModel.tool_call("add", {"a": HOSTILE}, text=HOSTILE), "ok"],
        max_events=12,
    )
    handle = scenario.handle
    client = scenario.client("hostile")
    await handle.run_turn(HOSTILE)
    await handle.open_agent_frame("frame " + HOSTILE)
    batch = await handle.enqueue_turn_input(HOSTILE, DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN, source_key=HOSTILE)
    process = handle.start_process(HOSTILE)
    events = client.pump()
    client.disconnect()
    for _ in range(3):
        await handle.run_turn("more")
    outcome = client.connect()
    assert outcome.kind == "gap" and outcome.gap.reason is LiveReplayGapReason.TRIMMED

    frame = to_frame(events)
    table = render.events_table_html(frame, columns=COLUMNS)
    assert_safe(table, HOSTILE, "frame " + HOSTILE, str(events[0].cursor), process.process_id)
    for event in events:
        assert_safe(render.event_html(event), HOSTILE, str(event.cursor))
    assert_safe(render.cursor_html(client.cursor), str(client.cursor))
    assert_safe(render.batch_html(batch), HOSTILE)
    gap_markup = render.gap_html(GapResume(outcome.gap, outcome.observation))
    assert_safe(gap_markup, str(outcome.gap.requested_cursor), str(outcome.gap.latest_cursor), HOSTILE)
    assert_safe(render.observation_html(handle.observe()), HOSTILE, "frame " + HOSTILE)
    tool_rows = frame[frame["event_type"] == "tool_call_started"]
    assert_safe(render.events_table_html(tool_rows), tool_rows["text"].iloc[0])


async def test_gap_html_shows_reason_cursors_and_missed_events_for_trimmed_and_unavailable():
    scenario = await Scenario.create(max_events=10, backend="memory")  # restart: unavailable
    client = scenario.client("reconnecting")
    await scenario.handle.run_turn("one")
    client.pump()
    client.disconnect()
    for _ in range(3):
        await scenario.handle.run_turn("more")
    trimmed = client.connect()
    gap = trimmed.gap
    assert gap.reason is LiveReplayGapReason.TRIMMED and gap.missed_events > 0
    markup = render.gap_html(gap)
    parsed = assert_safe(markup, "trimmed", str(gap.requested_cursor), str(gap.latest_cursor))
    assert f"<dt>missed events</dt><dd>{gap.missed_events}</dd>" in markup
    assert f"<dt>latest revision</dt><dd>{int(gap.latest_revision)}</dd>" in markup
    assert "lash-badge-warn" in markup and "retention dropped events" in " ".join(parsed.texts)
    with_view = render.gap_html(GapResume(gap, trimmed.observation))
    assert "Session observation" in with_view and markup.count("<style>") == 1
    assert with_view.count("<style>") == 1  # the nested observation brings no second stylesheet

    scenario.restart_store()
    unavailable = client.reconnect().gap
    assert unavailable.reason is LiveReplayGapReason.UNAVAILABLE
    markup = render.gap_html(unavailable)
    assert "lash-badge-error" in markup and "<dt>missed events</dt><dd>" in markup
    # the old cursor is an earlier instance's: no count, whatever the positions subtract to
    assert render.MISSED_UNKNOWN in Markup(markup).texts and "missed=unknown" in render.plain_text(unavailable)
    assert render.MISSED_UNKNOWN == "unknown (unavailable: the cursor is from another store instance)"
    assert render.missed_text(unavailable) == render.MISSED_UNKNOWN
    log = render.gap_log_html([("reconnecting", unavailable)], total=1)
    assert log.endswith(f'<td><span class="lash-muted">{html.escape(render.MISSED_UNKNOWN)}</span></td><td></td></tr></table>')
    assert "<td>?</td>" not in log

    # a gap read from elsewhere may hold cursors that do not parse: rendered, count unknown
    odd = LiveReplayGap("s", SessionCursor("<odd>"), SessionCursor("lashsc1:1:5:s"), SessionRevision(1), LiveReplayGapReason.UNAVAILABLE)
    assert render.MISSED_UNKNOWN in Markup(render.gap_html(odd)).texts
    assert "missed=unknown" in render.plain_text(odd)


async def test_observation_html_is_a_transcript_with_usage_and_turn_index():
    scenario = await Scenario.create()
    await scenario.handle.run_turn("hello & <welcome>")
    await scenario.handle.run_turn("add please")
    observation = scenario.handle.observe()
    view = observation.read_view
    markup = render.observation_html(observation)
    parsed = assert_safe(markup, "hello & <welcome>", "2 + 3 = 5.")
    assert f"<dt>turn index</dt><dd>{view.turn_index}</dd>" in markup
    assert f"<dt>messages</dt><dd>{len(view.messages)}</dd>" in markup
    assert f"in {view.usage.input_tokens} / out {view.usage.output_tokens} tokens" in markup
    assert "Runtime observation" in parsed.texts
    assert markup.count('class="lash-msg lash-msg-') == len(view.messages)
    assert "→ add(" in markup  # the assistant's tool call
    # a wire observation has no messages: say so instead of failing
    wire = SessionObservation(ObservationSummary("s", 4, TokenUsage(1, 2)), SessionCursor("lashsc1:4:9:s"))
    wire_markup = render.observation_html(wire)
    assert "messages are not on the wire" in wire_markup and "<dt>turn index</dt><dd>4</dd>" in wire_markup
    assert render.plain_text(wire) == "<SessionObservation session='s' turn=4 messages=?>"


async def test_batch_html_shows_policies_and_items():
    scenario = await Scenario.create()
    batch = await scenario.handle.enqueue_turn_input(
        "later <b>", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE, source_key="key&1"
    )
    markup = render.batch_html(batch)
    assert_safe(markup, batch.batch_id, "later <b>", "key&1", "after_current_turn_commit", "exclusive")
    assert "immediately" in markup and "2025-06-15T15:06:40.000+00:00" in markup
    assert render.plain_text(batch) == (
        f"<QueuedWorkBatch {batch.batch_id!r} seq=1 after_current_turn_commit/exclusive items=1>"
    )


# --- tables -------------------------------------------------------------------------------------------


async def test_events_table_shows_the_newest_rows_and_accepts_frames_rows_events_and_histories():
    scenario = await Scenario.create()
    client = scenario.client()
    await scenario.handle.run_turn("one")
    await scenario.handle.run_turn("two")
    events = client.pump()
    frame = to_frame(events)
    markup = render.events_table_html(frame, max_rows=5)
    assert markup.count("<tr") == 6  # header + 5
    assert f"last 5 of {len(events)} rows" in markup
    positions = [int(Markup(cell).texts[0]) for cell in re.findall(r"<tr[^>]*><td>(\d+)</td>", markup)]
    assert positions == list(range(len(events) - 4, len(events) + 1))
    rows = [event_row(e, None) for e in events]
    by_rows = render.events_table_html(rows, max_rows=5)
    by_events = render.events_table_html(events, max_rows=5)
    strip = lambda s: re.sub(r"<td><span title=[^>]*>[^<]*</span></td>", "", s)  # received_at
    assert strip(by_rows) == strip(by_events)
    history = EventHistory(max_rows=8)
    history.append(events)
    from_history = render.events_table_html(history, max_rows=3)
    assert f"last 3 of 8 rows · {len(events) - 8} older rows rolled out" in from_history
    assert render.events_table_html([]).count("<tr") == 1 and "no events" in render.events_table_html([])
    assert render.history_html(history).count("<tr") == 9
    cols = render.events_table_html(frame, columns=("position", "cursor"))
    assert "<th>cursor</th>" in cols and "<th>text</th>" not in cols
    assert 'class="lash-pt-committed"' in markup or 'class="lash-pt-turn_activity"' in markup
    with pytest.raises(ValueError, match="unknown columns"):
        render.events_table_html(frame, columns=("nope",))
    with pytest.raises(ValueError, match="frame lacks columns"):
        render.events_table_html(frame[["position"]])
    with pytest.raises(ValueError, match="max_rows"):
        render.events_table_html(frame, max_rows=0)


async def test_tables_never_use_dataframe_to_html_and_cut_long_text_into_a_tooltip(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("DataFrame.to_html must not be used")

    monkeypatch.setattr(pd.DataFrame, "to_html", forbidden)
    long = "\"><b x=\"" + "x" * 300  # cut: the whole text goes into a title attribute
    event = make_event("s", 1, TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(long))))
    error = make_event("s", 2, TurnActivityPayload(TurnActivity.independent(TurnError("boom"))))
    markup = render.events_table_html(to_frame([event, error]))
    parsed = assert_safe(markup, long)
    assert any(t.endswith("…") and len(t) == render.TABLE_TEXT_MAX_CHARS for t in parsed.texts)
    assert 'class="lash-pt-error"' in markup


# --- fuzzing ------------------------------------------------------------------------------------------

data_text = st.one_of(
    st.sampled_from([IMG, "<script>alert(1)</script>", '"><b x="', "&amp;&lt;", "a & b", "'", "</td></tr>"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=data_text)
def test_no_renderer_lets_markup_through_from_data(text):
    session_id = text
    events = [
        make_event(session_id, 1, TurnActivityPayload(TurnActivity(text, text, AssistantProseDelta(text)))),
        make_event(session_id, 2, TurnActivityPayload(TurnActivity.independent(ToolCallStarted(text, text, {text: [text]})))),
        make_event(session_id, 3, QueueChanged(SessionQueueEventKind.ENQUEUED, (text,))),
        make_event(session_id, 4, ProcessChanged(SessionProcessEventKind.STARTED, (text,))),
        make_event(session_id, 5, AgentFrameSwitched(text)),
        make_event(session_id, 6, TurnActivityPayload(TurnActivity.independent(TurnError(text)))),
        make_event(session_id, 7, UnknownPayload(text, {f"x-{text}": text})),  # not an envelope key
    ]
    for event in events:
        assert_safe(render.event_html(event), text, str(event.cursor))
        assert str(event.cursor) not in render.plain_text(event)
    assert_safe(render.events_table_html(to_frame(events), columns=COLUMNS), text, str(events[0].cursor))
    cursor = SessionCursor(text)
    assert_safe(render.cursor_html(cursor), text)
    assert render.plain_text(cursor) == OPAQUE == repr(cursor)
    gap = LiveReplayGap(text, cursor, SessionCursor(text + "&"), SessionRevision(3), LiveReplayGapReason.TRIMMED)
    view = make_view(session_id, text)
    observation = SessionObservation(view, cursor)
    assert_safe(render.gap_html(GapResume(gap, observation)), text, text + "&")
    assert_safe(render.observation_html(observation), text)
    assert_safe(render.batch_html(make_batch(text, text, source_key=text)), text)
    for value in (gap, observation, make_batch(text, text)):
        bundle = lash_nb.mimebundle(value)
        assert_safe(bundle["text/html"], text)


# --- plain text, dispatch and style -------------------------------------------------------------------


async def test_mimebundles_cover_every_rich_type_and_text_stays_opaque():
    scenario = await Scenario.create(max_events=10)
    client = scenario.client()
    await scenario.handle.run_turn("hello")
    events = client.pump()
    batch = await scenario.handle.enqueue_turn_input("x", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN)
    client.disconnect()
    await scenario.handle.run_turn("more")
    await scenario.handle.run_turn("more")
    outcome = client.connect()
    resume = GapResume(outcome.gap, outcome.observation)
    history = EventHistory()
    history.append(events)
    values = [
        client.cursor, events[1], outcome.gap, resume, outcome.observation, batch,
        scenario.handle.observe(), history,
    ]
    assert {type(v) for v in values} == set(render.RICH_TYPES)
    raw_cursors = {str(e.cursor) for e in events} | {str(client.cursor), str(outcome.gap.requested_cursor)}
    for value in values:
        bundle = lash_nb.mimebundle(value)
        assert set(bundle) == {"text/plain", "text/html"}
        assert bundle["text/html"].startswith(render.style_element())
        assert not any(raw in bundle["text/plain"] for raw in raw_cursors)
        assert_safe(bundle["text/html"])
    assert lash_nb.mimebundle(client.cursor)["text/plain"] == OPAQUE
    assert render.plain_text(events[1]).startswith("<SessionObservationEvent #2 rev 0 turn_activity/")
    assert render.plain_text(outcome.gap).startswith("<LiveReplayGap trimmed session='demo-session' missed=")
    with pytest.raises(TypeError, match="no lash_nb rendering for int"):
        lash_nb.mimebundle(42)


def test_style_uses_jupyterlab_variables_with_fallbacks_and_is_optional():
    variables = re.findall(r"var\(([^)]*)\)", render.STYLE)
    assert variables and all(v.startswith("--jp-") and "," in v for v in variables)
    assert render.css() == render.STYLE and "<" not in render.css()
    assert render.style_element() == f"<style>{render.STYLE}</style>"
    cursor = SessionCursor("lashsc1:0:0:s")
    assert render.cursor_html(cursor).startswith("<style>")
    assert render.cursor_html(cursor, with_style=False).startswith('<div class="lash-nb lash-cursor">')


# --- IPython ------------------------------------------------------------------------------------------


@pytest.fixture
def shell(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    existed = InteractiveShell.initialized()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ipython = InteractiveShell.instance(config=config)
    try:
        yield ipython
    finally:
        lash_nb.unload_ipython_extension(ipython)
        ipython.extension_manager.loaded.discard("lash_nb")
        if not existed:
            InteractiveShell.clear_instance()


def html_printers(ipython) -> set[type]:
    printers = ipython.display_formatter.formatters["text/html"].type_printers
    return {cls for cls in render.RICH_TYPES if cls in printers}


def test_load_ext_registers_html_formatters_and_unload_removes_them(shell):
    cursor = SessionCursor(f"lashsc1:1:2:{HOSTILE}")
    html_formatter = shell.display_formatter.formatters["text/html"]
    assert html_printers(shell) == set() and html_formatter(cursor) is None
    shell.run_line_magic("load_ext", "lash_nb")
    assert html_printers(shell) == set(render.RICH_TYPES)
    data, _ = shell.display_formatter.format(cursor)
    assert data["text/plain"] == OPAQUE
    assert_safe(data["text/html"], str(cursor))
    assert html.escape(str(cursor)) in data["text/html"]
    lash_nb.load_ipython_extension(shell)  # loading twice changes nothing
    assert html_printers(shell) == set(render.RICH_TYPES)
    shell.run_line_magic("unload_ext", "lash_nb")
    assert html_printers(shell) == set() and html_formatter(cursor) is None
    lash_nb.unload_ipython_extension(shell)  # unloading when not loaded is a no-op


def test_unload_restores_a_printer_that_was_there_before(shell):
    html_formatter = shell.display_formatter.formatters["text/html"]
    mine = lambda batch: "<p>mine</p>"
    html_formatter.for_type(QueuedWorkBatch, mine)
    try:
        lash_nb.load_ipython_extension(shell)
        lash_nb.load_ipython_extension(shell)
        batch = make_batch("b1", "hello")
        assert "Queued work batch" in html_formatter(batch)
        lash_nb.unload_ipython_extension(shell)
        assert html_formatter(batch) == "<p>mine</p>"
    finally:
        html_formatter.pop(QueuedWorkBatch, None)


def test_rich_wraps_any_value_without_the_extension(shell):
    gap = LiveReplayGap(HOSTILE, SessionCursor("lashsc1:1:2:a"), SessionCursor("lashsc1:3:9:a"), SessionRevision(3), LiveReplayGapReason.TRIMMED)
    rich = Rich(gap)
    data, _ = shell.display_formatter.format(rich)
    assert data["text/plain"] == repr(rich) == render.plain_text(gap)
    assert "missed=7" in data["text/plain"]
    assert_safe(data["text/html"], HOSTILE)
    assert rich._repr_mimebundle_(include={"text/plain"}) == {"text/plain": repr(rich)}
    assert set(rich._repr_mimebundle_(exclude={"text/plain"})) == {"text/html"}
    assert repr(Rich(SessionCursor("lashsc1:0:0:secret"))) == OPAQUE
    with pytest.raises(TypeError, match="no lash_nb rendering"):
        Rich(object())


def test_pure_modules_import_no_widget_or_ipython_code_and_lash_core_stays_pure():
    import ast
    import pathlib
    import subprocess
    import sys

    package = pathlib.Path(lash_nb.__file__).parent
    for name in ("__init__.py", "_frames.py", "_render.py", "_ipython.py", "_state.py", "_loop.py", "_producer.py"):
        tree = ast.parse((package / name).read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"IPython", "ipywidgets", "anywidget"}, (name, imported)
    code = "import sys, lash_core; assert not {'pandas', 'IPython', 'ipywidgets'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- values that cannot be encoded, strings without bounds -----------------------------------------


BAD_VALUES = ONE_PER_KIND


def bad_events(value) -> list[SessionObservationEvent]:
    """Every JSON-valued field an event has, holding ``value``."""
    from lash_core import FinalValue, ToolCallCompleted, ToolValue, UnknownTurnEvent

    events = [
        ToolCallStarted(call_id="c", name="t", args=value),
        ToolCallCompleted(call_id="c", name="t", args=value, output=value, duration_ms=1),
        FinalValue(value),
        ToolValue("t", value),
        UnknownTurnEvent("from_the_future", {"v": value}),
    ]
    out = [make_event("s", i + 1, TurnActivityPayload(TurnActivity.independent(e))) for i, e in enumerate(events)]
    out.append(make_event("s", len(out) + 1, UnknownPayload("from_the_future", {"v": value})))
    return out


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_no_renderer_raises_for_a_value_the_codec_refuses(kind):
    events = bad_events(BAD_VALUES[kind]())
    note = f"&lt;value not shown: {kind}&gt;"
    for event in events:
        card = render.event_html(event)
        assert note in card and "not shown in full" in card
        assert_safe(card)
        detail = render.event_detail_html(event)
        assert "wire document not encodable" in detail and kind in detail
        assert_safe(detail)
        assert render.plain_text(event).startswith(f"<SessionObservationEvent #{event.cursor.parse().live_position} ")
        assert set(lash_nb.mimebundle(event)) == {"text/plain", "text/html"}
    history = EventHistory()
    history.append(events)
    for source in (events, to_frame(events), history, [event_row(e, None) for e in events]):
        table = render.events_table_html(source, columns=COLUMNS)
        assert table.count(note) == len(events) + 1  # a completed tool call has two such values
        assert_safe(table)
    nan = make_event("s", 9, TurnActivityPayload(TurnActivity.independent(ToolCallStarted(call_id="c", name="t", args=[float("nan")]))))
    assert "out_of_range" in render.event_html(nan)  # NaN cannot travel as JSON: flagged, not shown as NaN
    loop = make_event("s", 10, UnknownPayload("x", {"v": circular_list()}))
    assert "unsupported" in render.event_html(loop) and "unsupported" in render.event_detail_html(loop)


def test_a_message_with_unencodable_tool_arguments_still_renders():
    from types import SimpleNamespace as Obj

    # the core refuses such a ToolCall; a read view is Any, so a view built elsewhere may hold one
    call = Obj(name="deep", args=deep_list())
    view = Obj(
        session_id="s", turn_index=1, usage=None,
        messages=(Obj(role="assistant", content="x", tool_calls=(call,) * 30),),
    )
    markup = render.observation_html(SessionObservation(view, SessionCursor("lashsc1:1:1:s")))
    assert "→ deep(&lt;value not shown: too_deep&gt;)" in markup
    assert markup.count("→ deep(") == render.MESSAGE_MAX_TOOL_CALLS and "10 more tool calls" in markup
    # a read view built in code with none of the usual fields: rendered, not raised
    odd = render.observation_html(SessionObservation(object(), SessionCursor("lashsc1:1:1:s")))
    assert "unknown" in odd and "messages are not on the wire" in odd


BIG = 2_000_000


def test_a_two_million_character_delta_renders_bounded_with_notes_and_stays_whole_in_the_frame():
    text = "<" + "x" * (BIG - 1)
    delta = make_event("s", 1, TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text))))
    frame = to_frame([delta])
    assert frame["text"].iloc[0] == text  # the DataFrame keeps the whole text
    table = render.events_table_html(frame)
    assert len(table) < len(render.STYLE) + 5_000
    tip = [v for name, v in Markup(table).attrs if name == "title" and v and v.startswith("<x")]
    assert tip == [text[: render.TOOLTIP_MAX_CHARS] + f" … {BIG - render.TOOLTIP_MAX_CHARS:,} more characters"]
    card = render.event_html(delta)
    assert len(card) < len(render.STYLE) + render.EVENT_TEXT_MAX_CHARS + 3_000
    assert f"{BIG - render.EVENT_TEXT_MAX_CHARS:,} more characters" in card
    detail = render.event_detail_html(delta)
    assert render.DETAIL_MAX_CHARS < len(detail) < len(render.STYLE) + render.DETAIL_MAX_CHARS + 10_000
    assert "more characters" in detail and "&quot;type&quot;:&quot;" not in detail  # readable JSON
    assert "&quot;type&quot;: &quot;turn_activity&quot;" in detail
    small = render.event_detail_html(delta, max_chars=100)
    assert len(small) < len(render.STYLE) + render.EVENT_TEXT_MAX_CHARS + 3_000
    with pytest.raises(ValueError, match="max_chars"):
        render.event_detail_html(delta, max_chars=0)
    assert len(render.plain_text(delta)) < 200


def test_every_renderer_bounds_ids_cursors_lists_and_numbers():
    long_id = "i" * 100_000
    cursor = SessionCursor("lashsc1:1:2:" + long_id)
    ids = tuple(f"b{i}" for i in range(10_000))
    events = [
        SessionObservationEvent(long_id, SessionRevision(1), cursor, QueueChanged(SessionQueueEventKind.ENQUEUED, ids)),
        SessionObservationEvent("s", SessionRevision(1), SessionCursor("lashsc1:1:3:s"), AgentFrameSwitched(long_id)),
    ]
    limit = 40_000  # a few KB of markup per value at most, whatever the value
    for markup in (
        render.event_html(events[0]),
        render.event_html(events[1]),
        render.events_table_html(events, columns=COLUMNS),
        render.cursor_html(cursor),
        render.gap_html(LiveReplayGap(long_id, cursor, cursor, SessionRevision(1), LiveReplayGapReason.TRIMMED)),
        render.gap_log_html([("A" * 10_000, LiveReplayGap("s", cursor, cursor, SessionRevision(1), LiveReplayGapReason.TRIMMED))], total=1),
        render.observation_html(SessionObservation(make_view(long_id, long_id), cursor)),
        render.batch_html(make_batch(long_id, long_id, source_key=long_id)),
        render.processes_html([type("P", (), {"process_id": long_id, "status": long_id})()] * 10_000),
        render.error_html(RuntimeError(long_id)),
        render.cancel_log_html([(long_id, "cancelled")] * 20, total=5_000, errors=[ValueError(long_id)] * 3),
        render.clients_html([(long_id, True, cursor, 10**30, 2, 3, None)]),
    ):
        assert len(markup) < len(render.STYLE) + limit, len(markup)
        assert "more characters" in markup or "more ids" in markup
        assert_safe(markup)
    assert f"{len(ids) - render.IDS_MAX_SHOWN:,} more ids" in render.event_html(events[0])
    assert "4980 earlier cancels not shown" in render.cancel_log_html([("b", "cancelled")] * 20, total=5_000)
    many = QueuedWorkBatch(
        batch_id="b", session_id="s", enqueue_seq=1, source_key=None,
        delivery_policy=DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, slot_policy=SlotPolicy.EXCLUSIVE,
        merge_key=MergeKey.NEVER, available_at_ms=0, enqueued_at_ms=1_750_000_000_000,
        items=[QueuedWorkItem(f"b:item:{i}", TurnInput.text("t")) for i in range(1_000)],
    )
    markup = render.batch_html(many)
    assert markup.count("b:item:") == render.BATCH_MAX_ITEMS and "980 more items" in markup
    assert len(render.plain_text(events[0])) < 300 and len(repr(Rich(events[1]))) < 300


def test_text_helpers_never_raise_and_print_numbers_past_the_digit_limit():
    class Hostile:
        def __str__(self):
            raise RuntimeError("no str")

        def __repr__(self):
            return "<Hostile <b>>"

    assert render.escape(Hostile()) == "&lt;Hostile &lt;b&gt;&gt;"
    assert render.escape(10**5000).startswith("&lt;int of 16610 bits")
    assert render.clip(10**5000, 10) == "<int of 16 … 9 more characters"
    assert render.clip_html(deep_list(), 50).startswith("[[[[")
    assert render.error_text(RuntimeError("x" * 5_000), 10) == "RuntimeError: xxxxxxxxxx … 4,990 more characters"

    class Mute(Exception):
        def __str__(self):
            raise ValueError("nope")

    assert "Mute.__str__ failed" in render.error_text(Mute())
    assert "Mute.__str__ failed" in render.error_html(Mute())


# --- the monitor's and the controls' markup (the widgets hold none of their own) ----------------------


def test_the_widget_modules_hold_no_markup():
    import ast
    import pathlib

    package = pathlib.Path(lash_nb.__file__).parent
    tag = re.compile(r"<\s*/?\s*(?:[a-z][a-z0-9]*)(?:[\s>/]|$)|class=")
    for name in ("_monitor.py", "_controls.py", "_state.py"):
        tree = ast.parse((package / name).read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        }
        literals = [
            n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
        ]
        assert not [v for v in literals if tag.search(v)], (name, [v for v in literals if tag.search(v)])


def monitor_stats(**changes):
    from lash_nb import MonitorStatistics

    fields = dict(
        session_id=HOSTILE, connected=True, cursor=f"lashsc1:3:9:{HOSTILE}", revision=3, event_count=25,
        rows=10, dropped_rows=15, fallback_rows=0, lagged=4, lag_count=1, gaps=0, redraws=7,
        last_gap=None, last_error="",
    )
    fields.update(changes)
    return MonitorStatistics(**fields)


def test_monitor_header_shows_the_state_escaped_and_bounded():
    header = render.monitor_header_html(monitor_stats())
    parsed = assert_safe(header, HOSTILE, f"lashsc1:3:9:{HOSTILE}")
    text = " ".join(parsed.texts)
    for part in ("live", "revision", "25 events", "10 rows kept", "15 rolled over", "4 lagged", "0 gaps", "7 redraws"):
        assert part in text, part
    assert "fallback" not in text and "lash-error" not in header and "Replay gap" not in text
    assert 'class="lash-badge lash-live lash-badge-ok"' in header
    gap = LiveReplayGap("s", SessionCursor("lashsc1:1:2:s"), SessionCursor("lashsc1:3:9:s"), SessionRevision(3), LiveReplayGapReason.TRIMMED)
    header = render.monitor_header_html(
        monitor_stats(connected=False, fallback_rows=2, gaps=1, last_gap=gap, last_error=f"RuntimeError: {IMG}")
    )
    parsed = assert_safe(header, IMG, "2 fallback rows", "Replay gap", "lashsc1:1:2:s")
    assert 'class="lash-badge lash-stopped lash-badge-warn"' in header and '<div class="lash-error">' in header
    header = render.monitor_header_html(monitor_stats(foreign_events=3))
    assert_safe(header, "3 events of other sessions")
    huge = render.monitor_header_html(monitor_stats(session_id="s" * 100_000, last_error="e" * 1_000_000))
    assert len(huge) < 3 * render.ERROR_MAX_CHARS + 2 * render.ID_MAX_CHARS + 2_000
    assert_safe(huge)


def test_monitor_table_is_newest_first_with_the_live_columns():
    events = [make_event("s", i, QueueChanged(SessionQueueEventKind.ENQUEUED, (f"b{i}{IMG}",))) for i in range(1, 6)]
    history = EventHistory()
    history.append(events)
    table = render.monitor_table_html(history.tail(3), 3)
    parsed = assert_safe(table, f"b5{IMG}")
    head = re.findall(r"<th>([^<]*)</th>", table)
    assert tuple(head) == render.LIVE_COLUMNS
    firsts = re.findall(r"<tr[^>]*><td>(\d+)</td>", table)
    assert firsts == ["5", "4", "3"]
    assert "b2" not in " ".join(parsed.texts)


def test_control_markup_counts_what_it_does_not_list():
    gap = LiveReplayGap("s", SessionCursor("lashsc1:1:2:s"), SessionCursor("lashsc1:3:9:s"), SessionRevision(3), LiveReplayGapReason.TRIMMED)
    log = render.gap_log_html([("A", gap)] * 20, total=2_000, reconnects=2_002)
    assert log.count("<tr>") == 21 and "1980 earlier gaps not shown" in log and "2000 gaps in 2002 reconnects" in log
    assert render.gap_log_html([], total=0) == ""
    cancels = render.cancel_log_html([("b", "unknown")] * 20, total=230, errors=[RuntimeError(IMG)] * 5)
    assert cancels.count('class="lash-cancel-unknown"') == 20 and "210 earlier cancels not shown" in cancels
    assert cancels.count('class="lash-error"') == 5
    assert_safe(cancels, IMG)
    events = [make_event("s", i, QueueChanged(SessionQueueEventKind.ENQUEUED, (f"r{i}",))) for i in range(1, 63)]
    replayed = render.replayed_html(HOSTILE, events)
    assert_safe(replayed, f"{HOSTILE}: replayed 62 events", "12 earlier replayed events not listed")
    assert replayed.count('class="lash-nb lash-event"') == render.REPLAY_LIST_LIMIT
    observation = SessionObservation(make_view("s", "fresh view"), SessionCursor("lashsc1:3:9:s"))
    assert_safe(render.reconnect_gap_html(HOSTILE, gap, observation), f"{HOSTILE}: gap", "trimmed", "fresh view")
    batch = make_batch("qwb-1", IMG)
    assert_safe(render.queue_row_html(batch, pending=True), "pending", IMG)
    assert 'class="lash-state lash-claimed lash-badge"' in render.queue_row_html(batch, pending=False)
    assert render.more_batches_html(0) == "" and "7 more batches not listed" in render.more_batches_html(7)
    result = render.enqueue_result_html(batch, events[:1], existing=True)
    assert_safe(result, "the source key matched a batch already queued", "qwb-1", "enqueued r1")
    assert "matched" not in render.enqueue_result_html(batch, (), existing=False)
    assert_safe(render.note_html(IMG), IMG)
    assert_safe(render.panel_title_html(HOSTILE), HOSTILE)
    assert render.panel_title_html("Queued work", with_style=False) == "<b>Queued work</b>"


# --- values whose own attributes fail, huge type names, lone surrogates --------------------------------


class Exploding:
    """A read view, message or usage built in code whose every attribute raises (a proxy whose
    backend went away)."""

    def __getattr__(self, name):
        raise RuntimeError(f"backend gone ({name})")


def test_an_observation_whose_read_view_attributes_raise_still_renders():
    cursor = SessionCursor("lashsc1:1:2:s")
    for view in (Exploding(), type("V", (), {"messages": (Exploding(),), "usage": Exploding()})()):
        observation = SessionObservation(view, cursor)
        markup = render.observation_html(observation)
        parsed = assert_safe(markup, "Session observation", "lashsc1:1:2:s")
        assert "backend gone" not in markup
        assert parsed.shows("unknown")  # the session id could not be read
        bundle = lash_nb.mimebundle(observation)
        assert bundle["text/plain"].startswith("<SessionObservation session=None")
        assert render.html_for(GapResume(
            LiveReplayGap("s", cursor, cursor, SessionRevision(1), LiveReplayGapReason.TRIMMED), observation
        ))
    processes = render.processes_html([Exploding()])
    assert_safe(processes, "live processes (1)")
    store_line = render.clients_html([("A", True, cursor, 1, 0, 0, True)], Exploding())
    assert_safe(store_line, "store: ? events held")


def test_huge_exception_class_names_are_cut_everywhere_errors_are_shown():
    huge = type("E" * 1_000_000, (Exception,), {})
    err = huge("<b>boom</b>")
    text, markup = render.error_text(err), render.error_html(err)
    assert text.startswith("EEE") and text.endswith(": <b>boom</b>") and len(text) < render.ID_MAX_CHARS + 100
    assert len(markup) < render.ID_MAX_CHARS + 500
    assert_safe(markup, "<b>boom</b>")

    class Mute(Exception):
        def __str__(self):
            raise ValueError("nope")

    mute = type("M" * 1_000_000, (Mute,), {})()
    assert len(render.error_text(mute)) < 2 * render.ID_MAX_CHARS + 100
    assert len(render.error_html(mute)) < 2 * render.ID_MAX_CHARS + 500
    with pytest.raises(TypeError, match="no lash_nb rendering") as caught:
        render.plain_text(type("T" * 1_000_000, (), {})())
    assert len(str(caught.value)) < render.ID_MAX_CHARS + 500


def test_every_plain_text_is_valid_utf8():
    bad = "x\ud800y"  # a lone surrogate: valid in JSON and in a str, not in UTF-8
    view = type("V", (), {"session_id": bad, "turn_index": bad, "messages": ()})()
    cursor = SessionCursor(bad)
    values = [
        SessionObservation(view, cursor),
        cursor,
        LiveReplayGap(bad, cursor, cursor, SessionRevision(1), LiveReplayGapReason.TRIMMED),
        make_event("s", 1, TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(bad)))),
    ]
    for value in values:
        plain = lash_nb.mimebundle(value)["text/plain"]
        plain.encode("utf-8")  # what a kernel's reply message needs
        assert plain == render.plain_text(value) == repr(Rich(value))
        lash_nb.mimebundle(value)["text/html"].encode("utf-8")
    assert render.plain_text(values[0]).endswith("turn=x\ufffdy messages=0>")  # repaired, not dropped
    err = RuntimeError(bad)  # a provider's message, say
    assert render.error_text(err) == "RuntimeError: x\ufffdy"
    render.error_html(err).encode("utf-8")


def test_tables_refuse_a_bare_string_of_columns_and_unbounded_row_counts():
    events = [make_event("s", 1, QueueChanged(SessionQueueEventKind.ENQUEUED, ("b",)))]
    with pytest.raises(ValueError, match="columns must be a list of column names"):
        render.events_table_html(events, columns="text")
    with pytest.raises(ValueError, match="not the string 'abc'"):
        render.events_table_html("abc")
    for bad in (10**100, True, 0):
        with pytest.raises(ValueError, match="max_rows must be an int"):
            render.events_table_html(EventHistory(), max_rows=bad)
        with pytest.raises(ValueError, match="max_rows must be an int"):
            render.processes_html([], max_rows=bad)
    with pytest.raises(ValueError, match="max_chars must be an int"):
        render.event_detail_html(events[0], max_chars=True)
    assert_safe(render.events_table_html(events, columns=["text"]), "enqueued b")


def test_missed_is_an_integer_or_plain_words_never_a_float_or_nan():
    gap = LiveReplayGap("s", SessionCursor("lashsc1:1:2:s"), SessionCursor("lashsc1:1:14:s"), SessionRevision(3), LiveReplayGapReason.TRIMMED)
    assert gap.missed_events == 12 and render.missed_text(gap) == "12"
    assert "<dt>missed events</dt><dd>12</dd>" in render.gap_html(gap)
    assert render.gap_log_html([("A", gap)], total=1).endswith("<td>12</td><td></td></tr></table>")
    # with the explanation made when the gap was met: which bound trimmed, and the missed range
    why = lash_nb.explain_gap(gap, first_retained=15, tail=20, max_events=6)
    assert why.cause == lash_nb.TrimCause.COUNT and why.missed == 12
    log = render.gap_log_html([("A", gap)], total=1, explanations={id(gap): why})
    assert log.endswith(f"<td>12</td><td>{html.escape(why.text)}</td></tr></table>") and "count" in why.text
    assert f"<dt>why</dt><dd>{html.escape(why.text)}</dd>" in render.gap_html(gap, explanation=why)

    class FloatCount:  # a gap whose count went through a float column (a DataFrame of gaps)
        reason, session_id, latest_revision = "trimmed", "s", 3
        requested_cursor, latest_cursor = gap.requested_cursor, gap.latest_cursor

        def __init__(self, missed):
            self.missed_events = missed

    assert render.missed_text(FloatCount(12.0)) == "12"
    for none in (None, float("nan"), float("inf"), 2.5, "12", True):
        assert render.missed_text(FloatCount(none)) == render.MISSED_UNKNOWN
        assert "nan" not in render.gap_log_html([("A", FloatCount(none))], total=1).lower()


def test_cancel_log_writes_each_outcome_once():
    log = render.cancel_log_html([("qwb-1", "refused"), ("qwb-2", "cancelled"), ("qwb-3", "unknown")], total=3)
    texts = Markup(log).texts
    assert texts == [
        f"qwb-1: {CancelOutcome.REFUSED.meaning}",
        "qwb-2: cancelled",
        f"qwb-3: {CancelOutcome.UNKNOWN.meaning}",
    ]
    assert log.count("qwb-1") == 1 and 'class="lash-cancel-refused"' in log
