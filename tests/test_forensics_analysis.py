"""Forensic analyses (``lash_nb.forensics._analysis`` and ``_timeline``): ``gap_report``,
``reconstruct_turns``, ``compare`` and ``timeline`` on logs written line by line with
``encode_line`` and read back with ``load_log``, and on the streams of real ``Scenario`` turns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lash_core import (
    AssistantProseDelta,
    Committed,
    DeliveryPolicy,
    LiveReplayGap,
    LiveReplayGapReason,
    ModelRequestStarted,
    ObservationSummary,
    QueueChanged,
    ScriptedModel,
    SessionCursor,
    SessionFollower,
    SessionObservation,
    SessionObservationEvent,
    SessionQueueEventKind,
    SessionRevision,
    SlotPolicy,
    TurnActivity,
    TurnActivityPayload,
)
from lash_core._replay import POSITION_BASE_SHIFT
from lash_core.testing import Scenario
from lash_nb.forensics import GapRecord, LagRecord, LoadedLog, encode_line, load_log
from lash_nb.forensics._analysis import (
    DUPLICATE_COLUMNS,
    EXTRA_COLUMNS,
    FINAL_VIEW_COLUMNS,
    MISSED_COLUMNS,
    MISSING_COLUMNS,
    OUT_OF_ORDER_COLUMNS,
    RESTART_COLUMNS,
    REVISION_JUMP_COLUMNS,
    SESSION_COLUMNS,
    SNAPSHOT_JUMP_COLUMNS,
    TURN_COLUMNS,
    Comparison,
    GapReport,
    compare,
    gap_report,
    reconstruct_turns,
)
from lash_nb.forensics._timeline import timeline

REPO = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def base(k: int) -> int:
    """The position base of the ``k``-th instance of a store (instance numbering)."""
    return (1_750_000_000_000 + 1_000 * k) << POSITION_BASE_SHIFT


# --- building logs ----------------------------------------------------------------------------------


def event(session: str, position: int, revision: int = 0, payload: Any = None) -> SessionObservationEvent:
    if payload is None:
        payload = TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(f"p{position} ")))
    return SessionObservationEvent(
        session, SessionRevision(revision), SessionCursor.new(session, revision, position), payload
    )


def gap(session: str, reason: str, requested: int, latest: int, revision: int = 0, *, fresh: bool = True) -> GapRecord:
    latest_cursor = SessionCursor.new(session, revision, latest)
    record = LiveReplayGap(
        session,
        SessionCursor.new(session, revision, requested),
        latest_cursor,
        SessionRevision(revision),
        LiveReplayGapReason(reason),
    )
    observation = SessionObservation(ObservationSummary(session, revision), latest_cursor) if fresh else None
    return GapRecord(record, observation)


def cursor(session: str, position: int, revision: int = 0) -> SessionCursor:
    return SessionCursor.new(session, revision, position)


def write(items: list[Any], *, times: bool = True) -> bytes:
    """The log of ``items`` (``bytes`` items are written as they are: bad lines)."""
    out = b""
    for k, item in enumerate(items):
        if isinstance(item, bytes):
            out += item + b"\n"
        else:
            out += encode_line(item, received_at=T0 + dt.timedelta(seconds=k) if times else None)
    return out


def load(items: list[Any], **kw: Any) -> LoadedLog:
    log = load_log(write(items, **kw))
    assert log.lines == len(items)
    return log


def column(frame: pd.DataFrame, name: str) -> list[Any]:
    return frame[name].to_numpy(dtype=object, na_value=None).tolist()


def rows(frame: pd.DataFrame, *names: str) -> list[tuple[Any, ...]]:
    return list(zip(*(column(frame, name) for name in names)))


def assert_schema(frame: pd.DataFrame, schema: Any) -> None:
    assert list(frame.columns) == list(schema)
    for name, dtype in schema.items():
        got = frame[name].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            assert isinstance(got, pd.CategoricalDtype), name
            assert set(dtype.categories) <= set(got.categories), name
        else:
            assert got == dtype, (name, got, dtype)


# --- gap_report: planted gaps (hypothesis) ---------------------------------------------------------


@dataclasses.dataclass
class Planted:
    """A session's lines and what gap_report must find in them (items, not line numbers yet)."""

    session: str
    items: list[Any] = dataclasses.field(default_factory=list)
    missing: list[tuple[int, int, Any]] = dataclasses.field(default_factory=list)  # first, last, gap item | None
    restarts: list[tuple[str, Any]] = dataclasses.field(default_factory=list)  # reason, item
    frontier: int = 0
    revision: int = 0
    instances: int = 0


STEP = st.one_of(
    st.tuples(st.just("trimmed"), st.integers(1, 6)),
    st.tuples(st.just("silent"), st.integers(1, 6)),
    st.tuples(st.just("restart"), st.integers(0, 3)),
    st.tuples(st.just("renumber"), st.integers(0, 3)),
    st.tuples(st.just("reconnect"), st.just(0)),
    st.tuples(st.just("lag"), st.integers(1, 9)),
    st.tuples(st.just("none"), st.just(0)),
)
CLEAN_STEP = st.one_of(
    st.tuples(st.just("reconnect"), st.just(0)),
    st.tuples(st.just("lag"), st.integers(1, 9)),
    st.tuples(st.just("none"), st.just(0)),
)


@st.composite
def planted_session(draw: Any, session: str, steps: Any) -> Planted:
    plan = Planted(session)
    start = draw(st.integers(0, 5))
    plan.frontier = start
    plan.revision = draw(st.integers(0, 3))
    if draw(st.booleans()):  # a cursor line: where the stream started, so a jump right after counts
        plan.items.append(cursor(session, start, plan.revision))
        lead = draw(st.integers(0, 3)) if steps is STEP else 0
        if lead:
            plan.missing.append((start + 1, start + lead, None))
            plan.frontier += lead

    def run(n: int) -> None:
        for _ in range(n):
            plan.frontier += 1
            plan.revision += draw(st.integers(0, 1))
            plan.items.append(event(session, plan.frontier, plan.revision))

    run(draw(st.integers(1, 4)))
    for step, k in draw(st.lists(steps, max_size=6)):
        f = plan.frontier
        if step == "trimmed":
            item = gap(session, "trimmed", f, f + k, plan.revision)
            plan.items.append(item)
            plan.missing.append((f + 1, f + k, item))
            plan.frontier = f + k
        elif step == "silent":
            plan.missing.append((f + 1, f + k, None))
            plan.frontier = f + k
        elif step == "restart":
            plan.instances += 1
            latest = base(plan.instances) + k
            item = gap(session, "unavailable", f, latest, plan.revision)
            plan.items.append(item)
            plan.restarts.append(("unavailable", item))
            plan.frontier = latest
        elif step == "renumber":
            plan.instances += 1
            new = base(plan.instances)
            if k:
                plan.missing.append((new + 1, new + k, None))
            plan.frontier = new + k
            plan.restarts.append(("numbering_change", "next event"))
        elif step == "reconnect":
            plan.items.append(cursor(session, f, plan.revision))
        elif step == "lag":
            plan.items.append(LagRecord(k, cursor(session, f, plan.revision)))
        n = draw(st.integers(1, 3))
        first = len(plan.items)
        run(n)
        if plan.restarts and plan.restarts[-1][1] == "next event":
            plan.restarts[-1] = ("numbering_change", plan.items[first])
    return plan


@st.composite
def planted_log(draw: Any, steps: Any = STEP) -> tuple[bytes, list[Planted], dict[int, int]]:
    names = draw(st.lists(st.sampled_from(["chat-1", "a:b:c", "s-3"]), min_size=1, max_size=3, unique=True))
    plans = [draw(planted_session(name, steps)) for name in names]
    bad = draw(st.integers(0, 2))
    tokens = [k for k, plan in enumerate(plans) for _ in plan.items] + [-1] * bad
    order = draw(st.permutations(tokens))
    queues = [list(plan.items) for plan in plans]
    items: list[Any] = []
    line_of: dict[int, int] = {}
    for token in order:
        item = b'{"not json' if token < 0 else queues[token].pop(0)
        items.append(item)
        line_of[id(item)] = len(items)
    return write(items), plans, line_of


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted_log())
def test_gap_report_finds_exactly_the_planted_gaps(case: Any) -> None:
    data, plans, line_of = case
    log = load_log(data)
    report = gap_report(log)
    expected = sorted(
        (plan.session, first, last, None if item is None else line_of[id(item)],
         "silent" if item is None else "trimmed")
        for plan in plans
        for first, last, item in plan.missing
    )
    found = sorted(rows(report.missing, "session_id", "first", "last", "explained_by", "reason"))
    assert found == expected
    assert column(report.missing, "count") == [r[2] - r[1] + 1 for r in rows(report.missing, "session_id", "first", "last")]
    restarts = sorted((plan.session, reason, line_of[id(item)]) for plan in plans for reason, item in plan.restarts)
    assert sorted(rows(report.restarts, "session_id", "reason", "line")) == restarts
    assert report.revision_jumps.empty  # revisions only ever go up by 0 or 1 here
    by_session = {r[0]: r for r in rows(report.sessions, "session_id", "events", "silent_losses", "events_lost")}
    assert set(by_session) == {plan.session for plan in plans}
    for plan in plans:
        _, events, silent, lost = by_session[plan.session]
        assert events == sum(isinstance(i, SessionObservationEvent) for i in plan.items)
        assert silent == sum(1 for m in plan.missing if m[2] is None)
        assert lost == sum(m[1] - m[0] + 1 for m in plan.missing if m[2] is not None)
    # each recorded trimmed gap lost exactly its planted range
    lost_by_line = dict(rows(report.gaps, "line", "events_lost"))
    for plan in plans:
        for first, last, item in plan.missing:
            if item is not None:
                assert lost_by_line[line_of[id(item)]] == last - first + 1
    assert report.has_silent_loss == any(m[2] is None for plan in plans for m in plan.missing)
    assert_schema(report.sessions, SESSION_COLUMNS)
    assert_schema(report.missing, MISSING_COLUMNS)
    assert_schema(report.restarts, RESTART_COLUMNS)


@settings(max_examples=60, deadline=None)
@given(planted_log(CLEAN_STEP))
def test_gap_report_finds_nothing_in_gap_free_logs(case: Any) -> None:
    data, plans, _ = case
    report = gap_report(load_log(data))
    assert report.missing.empty and report.restarts.empty and report.revision_jumps.empty
    assert report.gaps.empty and not report.has_silent_loss
    assert column(report.sessions, "missing_positions") == [0] * len(plans)
    assert column(report.sessions, "silent_losses") == [0] * len(plans)


# --- gap_report: cases ------------------------------------------------------------------------------


def test_gap_report_of_a_trimmed_gap_a_silent_jump_and_a_restart(tmp_path: Path) -> None:
    s = "chat-1"
    items = [
        cursor(s, 0),
        event(s, 1), event(s, 2),
        gap(s, "trimmed", 2, 6, 1),  # line 4: 3..6 lost, announced
        event(s, 7, 1),
        event(s, 9, 1),  # line 6: 8 lost silently
        gap(s, "unavailable", 9, base(1) + 2, 1),  # line 7: a restart, nothing counted
        event(s, base(1) + 3, 1),
    ]
    path = tmp_path / "client.jsonl"
    path.write_bytes(write(items))
    report = gap_report(path)  # a path loads
    assert report.source == str(path)
    assert rows(report.missing, "first", "last", "count", "line_before", "line_after", "explained_by", "reason") == [
        (3, 6, 4, 3, 5, 4, "trimmed"),
        (8, 8, 1, 5, 6, None, "silent"),
    ]
    assert rows(report.restarts, "line", "reason", "explained_by", "from_position", "to_position", "requested_position") == [
        (7, "unavailable", 7, 9, base(1) + 2, 9)
    ]
    assert rows(report.gaps, "line", "reason", "missed_events", "events_lost") == [
        (4, "trimmed", 4, 4),
        (7, "unavailable", None, None),
    ]
    (session,) = report.sessions.to_dict("records")
    assert session["events"] == 5 and session["missing_positions"] == 5
    assert session["events_lost"] == 4 and session["silent_missing"] == 1 and session["silent_losses"] == 1
    # one cursor line, where the stream started: not a reconnect
    assert session["restarts"] == 1 and session["reconnects"] == 0 and session["recorded_gaps"] == 2
    assert "1 silent" in repr(report)


def test_a_late_delivery_fills_its_hole_and_a_bad_line_is_counted_next_to_a_loss() -> None:
    s = "chat-1"
    items = [event(s, 1), event(s, 2), event(s, 5), event(s, 3), b"{broken", event(s, 7)]
    report = gap_report(load(items))
    # 3 arrived late (a step back); 4 and 6 never arrived; the bad line sits right before 7
    assert rows(report.missing, "first", "last", "reason", "error_lines") == [
        (4, 4, "silent", 0),
        (6, 6, "silent", 1),
    ]
    assert column(report.sessions, "steps_back") == [1]


def test_a_trimmed_gap_whose_cursors_do_not_parse_explains_the_next_jump() -> None:
    s = "chat-1"
    bare = (
        b'{"protocol_version":3,"session_id":"chat-1","requested_cursor":"opaque-1",'
        b'"latest_cursor":"opaque-2","latest_revision":0,"reason":"trimmed"}'
    )
    report = gap_report(load([event(s, 1), bare, event(s, 5)]))
    assert rows(report.missing, "first", "last", "explained_by", "reason") == [(2, 4, 2, "trimmed")]
    assert rows(report.gaps, "missed_events", "events_lost") == [(None, None)]


def test_revision_jumps_up_and_down_are_reported() -> None:
    s = "chat-1"
    items = [event(s, 1, 0), event(s, 2, 1), event(s, 3, 4), event(s, 4, 2), gap(s, "trimmed", 4, 6, 2), event(s, 7, 5)]
    report = gap_report(load(items))
    assert rows(report.revision_jumps, "line", "line_before", "position", "from_revision", "to_revision", "step", "across_gap") == [
        (3, 2, 3, 1, 4, 3, False),
        (4, 3, 4, 4, 2, -2, False),
        (6, 4, 7, 2, 5, 3, True),
    ]
    assert_schema(report.revision_jumps, REVISION_JUMP_COLUMNS)


def test_sessions_are_reported_apart_and_markers_follow_their_cursor() -> None:
    items = [
        cursor("a", 0), cursor("b", 10),
        event("a", 1), event("b", 11), event("a", 3), event("b", 12),
        LagRecord(4, cursor("b", 12)), event("b", 13),
        cursor("a", 3),  # a's stream started again: its one reconnect
    ]
    report = gap_report(load(items))
    assert rows(report.missing, "session_id", "first", "last") == [("a", 2, 2, )]
    assert rows(report.sessions, "session_id", "events", "reconnects", "lags", "first_position", "last_position") == [
        ("a", 2, 1, 0, 1, 3),
        ("b", 3, 0, 1, 11, 13),
    ]


def test_empty_and_wrong_inputs() -> None:
    report = gap_report(load_log(b""))
    for frame, schema in ((report.sessions, SESSION_COLUMNS), (report.missing, MISSING_COLUMNS),
                          (report.restarts, RESTART_COLUMNS), (report.revision_jumps, REVISION_JUMP_COLUMNS)):
        assert frame.empty
        assert_schema(frame, schema)
    assert reconstruct_turns(load_log(b"")).empty
    assert_schema(reconstruct_turns(load_log(b"")), TURN_COLUMNS)
    for call in (gap_report, reconstruct_turns, timeline):
        with pytest.raises(TypeError, match="takes a LoadedLog"):
            call(42)
    with pytest.raises(TypeError, match="compare takes a LoadedLog"):
        compare(load_log(b""), [1, 2])


def test_analyses_never_change_the_log() -> None:
    s = "chat-1"
    log = load([cursor(s, 0), event(s, 1), gap(s, "trimmed", 1, 4), event(s, 5), event(s, 9)])
    before = (log.frame.copy(), log.gaps.copy(), log.markers.copy(), log.errors.copy())
    gap_report(log)
    reconstruct_turns(log)
    compare(log, log)
    for frame, copy in zip((log.frame, log.gaps, log.markers, log.errors), before):
        pd.testing.assert_frame_equal(frame, copy)


def test_html_escapes_session_ids_and_texts() -> None:
    evil = "<script>alert(1)</script>"
    payload = TurnActivityPayload(TurnActivity.independent(AssistantProseDelta("<img src=x onerror=alert(2)>")))
    items = [cursor(evil, 0), event(evil, 1, payload=payload), gap(evil, "trimmed", 1, 3), event(evil, 6)]
    log = load(items)
    html = gap_report(log)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "silent losses" in html and "2 positions missing with no gap row" in html
    server = load([event(evil, p, payload=payload) for p in range(1, 8)])
    comparison = compare(log, server)
    html = comparison._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img" not in html
    assert "2 events missed without a gap announcing them" in html


# --- compare: planted misses, duplicates and reorderings (hypothesis) ------------------------------


@dataclasses.dataclass
class Delivery:
    """A client log derived from a server log, and what compare must find."""

    server: list[Any]
    client: list[Any]
    missed: dict[tuple[str, int], Any]  # -> gap item (announced) or None
    duplicates: dict[tuple[str, int], int]
    late: set[tuple[str, int]]
    gaps: list[Any]


@st.composite
def deliveries(draw: Any) -> Delivery:
    names = draw(st.lists(st.sampled_from(["chat-1", "x:y"]), min_size=1, max_size=2, unique=True))
    server: list[Any] = []
    per_client: list[list[Any]] = []
    missed: dict[tuple[str, int], Any] = {}
    duplicates: dict[tuple[str, int], int] = {}
    late: set[tuple[str, int]] = set()
    gaps: list[Any] = []
    for name in names:
        n = draw(st.integers(1, 25))
        revision = 0
        events = []
        for p in range(1, n + 1):
            revision += draw(st.integers(0, 1))
            events.append(event(name, p, revision))
        server.extend(events)
        client: list[Any] = [cursor(name, 0)]
        received: list[int] = []
        high = 0
        p = 1
        while p <= n:
            op = draw(st.sampled_from(["deliver", "deliver", "silent", "announced", "swap", "dup"]))
            if op == "dup" and received:
                q = draw(st.sampled_from(received))
                client.append(events[q - 1])
                duplicates[(name, q)] = duplicates.get((name, q), 1) + 1
                op = "deliver"  # a duplicate is never last: the next position follows it
            if op == "silent" and p < n:
                missed[(name, p)] = None
                p += 1
            elif op == "announced" and p < n and high == p - 1:
                k = draw(st.integers(1, n - p))
                item = gap(name, "trimmed", high, p + k - 1, events[p + k - 2].revision)
                client.append(item)
                gaps.append(item)
                for q in range(p, p + k):
                    missed[(name, q)] = item
                p += k
            elif op == "swap" and p + 1 < n:
                client += [events[p], events[p - 1]]
                received += [p + 1, p]
                late.add((name, p))
                high = p + 1
                p += 2
            else:
                client.append(events[p - 1])
                received.append(p)
                high = max(high, p)
                p += 1
        if client[-1] is not events[-1]:  # the last position arrives last: the final views agree
            client.append(events[-1])
        per_client.append(client)
    # interleave the sessions, each in its own order
    order = draw(st.permutations([k for k, items in enumerate(per_client) for _ in items]))
    mixed = [per_client[k].pop(0) for k in order]
    return Delivery(server, mixed, missed, duplicates, late, gaps)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_compare_finds_exactly_the_planted_misses_duplicates_and_reorderings(case: Delivery) -> None:
    client_data = write(case.client)
    line_of = {}
    for k, item in enumerate(case.client, start=1):
        line_of.setdefault(id(item), k)
    result = compare(load_log(client_data), load_log(write(case.server)))
    found = {(s, p): (announced, line) for s, p, announced, line in rows(result.missed, "session_id", "position", "announced", "gap_line")}
    expected = {
        key: (item is not None, None if item is None else line_of[id(item)])
        for key, item in case.missed.items()
    }
    assert found == expected
    assert {(s, p): n for s, p, n in rows(result.duplicates, "session_id", "position", "count")} == case.duplicates
    assert set(rows(result.out_of_order, "session_id", "position")) == case.late
    assert sorted(column(result.snapshot_jumps, "client_line")) == sorted(line_of[id(g)] for g in case.gaps)
    assert column(result.snapshot_jumps, "events_skipped") == column(result.snapshot_jumps, "missed_events")
    assert result.final_view_matches and all(column(result.final_views, "matches"))
    assert result.extra.empty
    s = result.summary
    assert s["missed"] == len(case.missed)
    assert s["missed_unannounced"] == sum(1 for item in case.missed.values() if item is None)
    assert s["duplicates"] == len(case.duplicates)
    assert s["duplicate_deliveries"] == sum(n - 1 for n in case.duplicates.values())
    assert s["received"] == len(case.server) - len(case.missed)
    assert s["not_yet_received"] == 0
    assert result.ok == (s["missed_unannounced"] == 0 and not case.late)


def test_compare_tables_have_their_schemas() -> None:
    result = compare(load([event("a", 1)]), load([event("a", 1), event("a", 2)]))
    for frame, schema in (
        (result.missed, MISSED_COLUMNS), (result.duplicates, DUPLICATE_COLUMNS),
        (result.out_of_order, OUT_OF_ORDER_COLUMNS), (result.snapshot_jumps, SNAPSHOT_JUMP_COLUMNS),
        (result.extra, EXTRA_COLUMNS), (result.final_views, FINAL_VIEW_COLUMNS),
    ):
        assert_schema(frame, schema)
    # the client stopped at 1: position 2 is not yet received, not missed, and the views differ
    assert result.missed.empty and result.summary["not_yet_received"] == 1
    assert not result.final_view_matches and not result.ok
    assert "final view differs" in repr(result)


def test_compare_across_a_restart_and_with_sessions_the_client_never_followed() -> None:
    s = "chat-1"
    server = [event(s, p, 1) for p in range(1, 11)] + [event(s, base(1) + p, 2) for p in range(1, 6)]
    server += [event("other", p) for p in range(1, 4)]
    restart = gap(s, "unavailable", 7, base(1) + 2, 2)
    client = [cursor(s, 0)] + server[:7] + [restart] + server[12:15] + [event(s, 99, 1)]
    result = compare(load(client), load(server))
    assert rows(result.missed, "position", "announced", "gap_line") == [
        (p, True, 9) for p in (8, 9, 10, base(1) + 1, base(1) + 2)
    ]
    # a stray old-numbered 99 after the restart is late (and unknown to the server); 8..10 were not
    assert rows(result.out_of_order, "position", "after_position", "server_line") == [(99, base(1) + 5, None)]
    assert rows(result.extra, "position", "client_line") == [(99, 13)]
    assert rows(result.snapshot_jumps, "position", "reason", "events_skipped", "missed_events") == [
        (base(1) + 2, "unavailable", 5, None)
    ]
    assert result.summary["sessions"] == 1  # "other" is not the client's
    # the client's last line is the stray 99, so its final view is not the server's
    assert not result.final_view_matches


def test_a_restart_resets_what_counts_as_out_of_order() -> None:
    """After an ``unavailable`` gap the numbering starts again: a lower position is no reordering
    (a store numbering from 1 again would reuse positions: spec README section 3 rules it out)."""
    s = "chat-1"
    server = [event(s, p) for p in range(1, 7)]
    client = [cursor(s, 4), server[4], server[5], gap(s, "unavailable", 6, 2), server[2]]
    result = compare(load(client), load(server))
    assert result.out_of_order.empty and result.duplicates.empty
    assert result.missed.empty  # its window starts after the cursor line: 5 and 6 arrived


def test_compare_reports_a_final_view_reached_through_a_fresh_observation() -> None:
    s = "chat-1"
    server = [event(s, p, p // 3) for p in range(1, 10)]
    client = [cursor(s, 0)] + server[:3] + [gap(s, "trimmed", 3, 9, server[-1].revision)]
    result = compare(load(client), load(server))
    assert result.final_view_matches
    assert rows(result.final_views, "client_position", "client_revision", "server_position", "server_revision") == [
        (9, 3, 9, 3)
    ]
    assert result.summary["missed_announced"] == 6 and result.ok


async def test_compare_and_gap_report_on_a_real_client_that_reconnected_after_retention() -> None:
    """A server-side follower records everything; a client disconnects, three turns run past a
    tiny retention, and it reconnects to a trimmed gap: every miss is announced."""
    async with await Scenario.create(backend="memory", max_events=4) as s:
        start = cursor(s.session_id, 0)
        server_follower = SessionFollower(s.handle, start)
        server_follower.connect()
        client = SessionFollower(s.handle, start)
        client.connect()
        server_items: list[Any] = [start]
        client_items: list[Any] = [start]
        await s.handle.run_turn("hello")
        server_items += server_follower.poll()
        client_items += client.poll()
        client.disconnect()
        for text in ("add", "more", "again"):
            await s.handle.run_turn(text)
            server_items += server_follower.poll()
        client_items.append(client.cursor)  # a reconnect line, as a recorder writes one
        result = client.connect()
        client_items += list(client.last_gaps) or list(result.events)
        client_items += client.poll()
        await s.handle.run_turn("last")
        server_items += server_follower.poll()
        client_items += client.poll()
        client_log, server_log = load(client_items), load(server_items)
        assert client_log.errors.empty and server_log.errors.empty
        comparison = compare(client_log, server_log)
        assert comparison.summary["missed"] > 0 and comparison.summary["missed_unannounced"] == 0
        assert comparison.duplicates.empty and comparison.out_of_order.empty
        assert comparison.final_view_matches and comparison.ok
        (jump,) = comparison.snapshot_jumps.to_dict("records")
        assert jump["reason"] == "trimmed" and jump["events_skipped"] == comparison.summary["missed"]
        report = gap_report(client_log)
        assert not report.has_silent_loss
        assert int(report.missing["count"].sum()) == comparison.summary["missed"]
        turns = reconstruct_turns(client_log)
        # turns 2..4 ran while it was away, all in the gap: they leave no row, the others are whole
        assert column(turns, "complete") == [True, True]
        assert column(turns, "committed_revision") == [1, 5]
        server_turns = reconstruct_turns(server_log)
        assert column(server_turns, "complete") == [True] * 5


# --- reconstruct_turns --------------------------------------------------------------------------------

REPLIES = (
    "Hello there, this reply is long enough to stream as several deltas.",
    ScriptedModel.tool_call("add", {"a": 2, "b": 3}, text="Let me add those. "),
    "2 + 3 = 5.",
    ScriptedModel.reply("Done <b>thinking</b>.", reasoning="Check the queue first."),
    ScriptedModel.failure("model down", text="Partial "),
)


async def scenario_events(queued: bool = False) -> tuple[list[SessionObservationEvent], Any]:
    async with await Scenario.create(backend="memory", replies=REPLIES, cycle=True) as s:
        for text in ("hi", "add", "think", "fail"):
            await s.handle.run_turn(text)
        batch = None
        if queued:
            batch = await s.handle.enqueue_turn_input(
                "queued", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE
            )
            assert await s.handle.drain_queued_work() == 1
        result = s.handle.resume_session_observation(cursor(s.session_id, 0))
        return list(result.events), batch


def streamed_turns(events: list[SessionObservationEvent]) -> list[dict[str, Any]]:
    """What was streamed, turn by turn (split at commits), read straight from the events."""
    turns: list[dict[str, Any]] = [{"text": "", "reasoning": "", "calls": [], "errors": []}]
    for e in events:
        payload = e.payload
        if isinstance(payload, Committed):
            turns[-1]["revision"] = int(e.revision)
            turns.append({"text": "", "reasoning": "", "calls": [], "errors": []})
            continue
        if not isinstance(payload, TurnActivityPayload):
            continue
        inner = payload.activity.event
        kind = inner.type
        if kind == "assistant_prose_delta":
            turns[-1]["text"] += inner.text
        elif kind == "reasoning_delta":
            turns[-1]["reasoning"] += inner.text
        elif kind == "tool_call_completed":
            turns[-1]["calls"].append((inner.call_id, inner.name, inner.args, inner.output, inner.duration_ms))
        elif kind == "error":
            turns[-1]["errors"].append(inner.message)
    return [t for t in turns if "revision" in t]


async def test_reconstruct_turns_matches_what_was_streamed(tmp_path: Path) -> None:
    events, batch = await scenario_events(queued=True)
    path = tmp_path / "turns.jsonl"
    path.write_bytes(write([cursor(events[0].session_id, 0)] + events))
    turns = reconstruct_turns(str(path))
    assert_schema(turns, TURN_COLUMNS)
    expected = streamed_turns(events)
    assert len(turns) == len(expected) == 5
    records = turns.to_dict("records")
    for row, want in zip(records, expected):
        assert row["assistant_text"] == want["text"]
        assert row["reasoning"] == want["reasoning"]
        assert [(c["call_id"], c["name"], c["args"], c["output"], c["duration_ms"]) for c in row["tool_calls"]] == want["calls"]
        assert row["errors"] == want["errors"]
        assert row["committed_revision"] == want["revision"]
        assert row["complete"] and pd.isna(row["incomplete_reason"])
    assert column(turns, "turn") == [1, 2, 3, 4, 5]
    assert records[0]["assistant_text"] == REPLIES[0]
    assert records[1]["assistant_text"] == "Let me add those. 2 + 3 = 5."
    assert records[1]["iterations"] == 2 and records[1]["tool_call_count"] == 1
    (call,) = records[1]["tool_calls"]
    assert call["name"] == "add" and call["args"] == {"a": 2, "b": 3} and call["completed"]
    assert records[2]["reasoning"] == "Check the queue first." and records[2]["assistant_text"] == "Done <b>thinking</b>."
    assert records[3]["errors"] and "model down" in records[3]["errors"][0]
    assert records[4]["started_by"] == "queued_work_started" and records[4]["batch_ids"] == (batch.batch_id,)
    assert column(turns, "started_by")[:4] == ["model_request_started"] * 4
    # usage: the turn's own tokens are the sum of its usage events; cumulative is the session's
    usage = [e.payload.activity.event for e in events
             if isinstance(e.payload, TurnActivityPayload) and e.payload.activity.event.type == "usage"]
    assert int(turns["input_tokens"].sum()) == usage[-1].cumulative.input_tokens
    assert records[-1]["cumulative_output_tokens"] == usage[-1].cumulative.output_tokens
    assert records[1]["usage_events"] == 2
    # times come from received_at: one second per line here
    assert records[0]["started_at"] == pd.Timestamp(T0 + dt.timedelta(seconds=1))
    assert all(r["started_at"] <= r["ended_at"] for r in records)


async def test_broken_and_cut_turns_are_incomplete_with_their_reason() -> None:
    events, _ = await scenario_events()
    sid = events[0].session_id
    commits = [k for k, e in enumerate(events) if isinstance(e.payload, Committed)]
    second = range(commits[0] + 1, commits[1] + 1)  # turn 2's events, its commit included

    def reasons(items: list[Any]) -> list[tuple[bool, Any]]:
        return rows(reconstruct_turns(load(items)), "complete", "incomplete_reason")

    ok = (True, None)
    # positions missing inside turn 2, silently
    dropped = [e for k, e in enumerate(events) if k not in (second[3], second[4])]
    assert reasons(dropped) == [ok, (False, "gap"), ok, ok]
    # a recorded trimmed gap inside turn 2
    p = events[second[3]].live_position
    with_gap = events[: second[3]] + [gap(sid, "trimmed", p - 1, p + 1, int(events[second[3]].revision))] + events[second[3] + 2:]
    assert reasons(with_gap) == [ok, (False, "gap"), ok, ok]
    # cut in the middle of the last turn
    assert reasons(events[: commits[3] - 2]) == [ok, ok, ok, (False, "end_of_log")]
    # starting mid-turn 1, and starting at turn 2's second model request
    assert reasons(events[3:]) == [(False, "started_before_log"), ok, ok, ok]
    second_request = [k for k in second if events[k].payload.type == "turn_activity"
                      and events[k].payload.activity.event.type == "model_request_started"][1]
    assert reasons(events[second_request:]) == [(False, "started_before_log"), ok, ok]
    # a gap that swallows turn 2's commit and turn 3's start: both are broken, turn 4 is whole
    swallowed = events[: commits[1] - 1] + events[commits[1] + 4:]
    table = reconstruct_turns(load(swallowed))
    assert rows(table, "complete", "incomplete_reason") == [ok, (False, "gap"), (False, "gap"), ok]
    assert column(table, "committed_revision")[1:3] == [None, events[commits[2]].revision]
    # a reconnect that replays what the client already had: nothing read twice
    replayed = events[: commits[1] + 1] + [cursor(sid, events[second[2]].live_position)] + events[second[3]:]
    table = reconstruct_turns(load(replayed))
    assert rows(table, "complete", "incomplete_reason") == [ok] * 4
    assert column(table, "assistant_text") == column(reconstruct_turns(load(events)), "assistant_text")


def test_turns_of_interleaved_sessions_are_kept_apart() -> None:
    def activity(inner: Any) -> TurnActivityPayload:
        return TurnActivityPayload(TurnActivity.independent(inner))

    items = []
    for s in ("a", "b"):
        items.append([
            event(s, 1, 0, activity(ModelRequestStarted(0))),
            event(s, 2, 0, activity(AssistantProseDelta(f"from {s} "))),
            event(s, 3, 0, QueueChanged(SessionQueueEventKind.ENQUEUED, ("qwb-1",))),
            event(s, 4, 0, activity(AssistantProseDelta("done"))),
            event(s, 5, 1, Committed(None)),
        ])
    mixed = [x for pair in zip(*items) for x in pair]
    table = reconstruct_turns(load(mixed, times=False))
    assert rows(table, "session_id", "assistant_text", "complete", "first_position", "last_position") == [
        ("a", "from a done", True, 1, 5),
        ("b", "from b done", True, 1, 5),
    ]
    assert column(table, "started_at") == [None, None]


def test_a_long_delta_and_a_tool_call_whose_start_was_lost_read_in_full() -> None:
    from lash_core import ToolCallCompleted

    long = "x<y>" * 2_000  # far past any summary bound of the text column
    activity = lambda inner: TurnActivityPayload(TurnActivity.independent(inner))  # noqa: E731
    items = [
        event("a", 1, 0, activity(ModelRequestStarted(0))),
        event("a", 2, 0, activity(AssistantProseDelta(long))),
        event("a", 4, 0, activity(ToolCallCompleted("c-9", "add", {"a": 1}, {"ok": [1, 2]}, 12))),
        event("a", 5, 1, Committed(None)),
    ]
    (row,) = reconstruct_turns(load(items)).to_dict("records")
    assert row["assistant_text"] == long
    assert row["tool_calls"] == [
        {"call_id": "c-9", "name": "add", "args": {"a": 1}, "output": {"ok": [1, 2]}, "duration_ms": 12, "completed": True}
    ]
    assert (row["complete"], row["incomplete_reason"], row["committed_revision"]) == (False, "gap", 1)


# --- timeline ----------------------------------------------------------------------------------------


def timeline_log(times: bool = True) -> LoadedLog:
    s = "chat-1"
    items = [
        cursor(s, 0),
        event(s, 1, 0, TurnActivityPayload(TurnActivity.independent(ModelRequestStarted(0)))),
        event(s, 2), event(s, 3),
        event(s, 4, 1, Committed(None)),
        gap(s, "trimmed", 4, 7, 1),
        event(s, 8, 1), event(s, 10, 1),  # 9: silent
        LagRecord(3, cursor(s, 10, 1)),
        cursor(s, 10, 1),
        gap(s, "unavailable", 10, base(1), 1),
        event(s, base(1) + 1, 2, Committed(None)),
    ]
    return load(items, times=times)


@pytest.mark.parametrize("by", ["time", "position", "line"])
def test_timeline_draws_kinds_gaps_restarts_reconnects_lags_and_revisions(by: str, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = timeline(timeline_log(), by=by)
    assert isinstance(fig, Figure)
    ax, twin = fig.axes
    kinds = [t.get_text() for t in ax.get_yticklabels()]
    assert kinds == ["model_request_started", "assistant_prose_delta", "committed"]
    # one mark line per kind, then a restart, a lag, the stream's start and one reconnect
    assert len(ax.lines) == 3 + 1 + 1 + 2
    assert len(ax.patches) == 2  # the trimmed range 5..7 and the silent 9
    assert len(twin.lines) == 1  # the revision steps
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(legend) == {
        "missing (trimmed gap)", "missing (silent loss)", "restart", "stream start", "reconnect", "lag", "revision"
    }
    path = tmp_path / f"timeline-{by}.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert fig._repr_png_()[:8] == PNG_MAGIC


def test_timeline_without_received_at_falls_back_to_positions_and_draws_on_a_given_axes() -> None:
    from matplotlib.figure import Figure

    fig = timeline(timeline_log(times=False))
    ax = fig.axes[0]
    assert "no received_at: by position" in ax.get_title() and ax.get_xlabel() == "live position"
    mine = Figure()
    axes = mine.add_subplot()
    assert timeline(timeline_log(), by="line", ax=axes) is mine
    with pytest.raises(ValueError, match="by must be one of"):
        timeline(timeline_log(), by="colour")
    with pytest.raises(ValueError, match="is not in the log"):
        timeline(timeline_log(), session_id="nope")
    empty = timeline(load_log(b""))
    assert empty._repr_png_()[:8] == PNG_MAGIC


def test_timeline_labels_from_data_are_never_mathtext() -> None:
    s = "$\\frac{1}{0}$ <b>"
    fig = timeline(load([event(s, 1), event(s, 3)]), session_id=s)
    assert "\\$" in fig.axes[0].get_title()
    assert fig._repr_png_()[:8] == PNG_MAGIC  # drawing it does not parse the id as math


@pytest.mark.slow
def test_forensics_imports_no_matplotlib_and_timeline_no_pyplot() -> None:
    """In a fresh interpreter: no matplotlib until ``timeline`` runs, never pyplot, and IPython
    renders the figure as a PNG (inline in Jupyter)."""
    code = textwrap.dedent(
        """
        import sys
        import lash_nb.forensics._analysis, lash_nb.forensics._timeline
        assert "matplotlib" not in sys.modules, "imported eagerly"
        from lash_nb.forensics import load_log
        from lash_nb.forensics._timeline import timeline
        fig = timeline(load_log(b""))
        from IPython.core.formatters import DisplayFormatter  # what Jupyter shows: a PNG
        data, _ = DisplayFormatter().format(fig)
        assert data["image/png"][:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        assert "matplotlib.pyplot" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


def test_reports_are_frozen_values() -> None:
    report = gap_report(load([event("a", 1)]))
    assert isinstance(report, GapReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.missing = pd.DataFrame()  # type: ignore[misc]
    result = compare(load([event("a", 1)]), load([event("a", 1)]))
    assert isinstance(result, Comparison) and result.ok
    with pytest.raises(TypeError):
        result.summary["missed"] = 3  # type: ignore[index]
