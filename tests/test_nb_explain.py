"""Which retention bound dropped what a ``trimmed`` gap's client missed (``lash_nb._explain``).

The reference is the real ``InMemoryLiveReplayStore``: the same appends, at the same fake times,
go to a store with both bounds, one with only the count bound and one with only the age bound;
what the single-bound stores dropped says which bound removed each missed position.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lash_core import (
    AssistantProseDelta,
    Gap,
    InMemoryLiveReplayStore,
    LiveReplayGap,
    LiveReplayGapReason,
    Replayed,
    SessionCursor,
    SessionRevision,
    TurnActivity,
    TurnActivityPayload,
)
from lash_core.testing import FakeClock, Scenario
from lash_nb._explain import GapExplanation, TrimCause, explain_gap, dropped_count, trim_cause

SID = "explain-session"
TRIMMED = LiveReplayGapReason.TRIMMED
UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE
#: an age bound no test reaches, and a count bound no test fills
FAR_AGE = 1e12
MANY = 10**9
PAYLOAD = TurnActivityPayload(TurnActivity.independent(AssistantProseDelta("x")))


def cursor(position: int) -> SessionCursor:
    return SessionCursor.new(SID, 0, position)


def gap(requested: int, latest: int, reason=TRIMMED) -> LiveReplayGap:
    return LiveReplayGap(SID, cursor(requested), cursor(latest), SessionRevision(0), reason)


def first_of(stats) -> int:
    """The first retained position; ``tail + 1`` when nothing is retained."""
    return stats.tail_position + 1 if stats.oldest_position is None else stats.oldest_position


def run(stores, clock: FakeClock, steps, final_dt: float) -> None:
    """Advance the shared clock and append to every store, step by step; then trim them all."""
    for dt, count in steps:
        clock.now += dt
        for _ in range(count):
            for store in stores:
                store.append(SID, 0, PAYLOAD)
    clock.now += final_dt
    for store in stores:
        store.trim_session(SID)


def expected_cause(missed: range, first_count: int) -> TrimCause:
    """The bound(s) that removed ``missed``: the count-only store dropped exactly ``< first_count``."""
    by_count = [q < first_count for q in missed]
    if all(by_count):
        return TrimCause.COUNT
    if not any(by_count):
        return TrimCause.AGE
    return TrimCause.COUNT_AND_AGE


# --- the rule against the real store ----------------------------------------------------------------

steps = st.lists(
    st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 9.0]), st.integers(0, 6)),
    min_size=1,
    max_size=10,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_events=st.integers(0, 12),
    max_age=st.sampled_from([0.0, 1.0, 2.0, 4.5, 10.0]),
    steps=steps,
    final_dt=st.sampled_from([0.0, 1.0, 3.0, 12.0]),
    data=st.data(),
)
def test_trim_cause_names_the_bounds_that_removed_the_missed_positions(
    max_events, max_age, steps, final_dt, data
):
    clock = FakeClock()
    both = InMemoryLiveReplayStore.with_bounds(max_events, max_age, clock=clock)
    count_only = InMemoryLiveReplayStore.with_bounds(max_events, FAR_AGE, clock=clock)
    age_only = InMemoryLiveReplayStore.with_bounds(MANY, max_age, clock=clock)
    run((both, count_only, age_only), clock, steps, final_dt)
    stats = both.statistics(SID)
    tail = stats.tail_position
    assert count_only.statistics(SID).tail_position == age_only.statistics(SID).tail_position == tail
    first_count, first_age = first_of(count_only.statistics(SID)), first_of(age_only.statistics(SID))
    # what both bounds keep is what each keeps: nothing is removed that neither bound removed
    assert first_of(stats) == max(first_count, first_age)

    requested = data.draw(st.integers(0, tail + 2), label="requested position")
    result = both.replay_after_cursor(cursor(requested))
    cause = trim_cause(requested, stats.oldest_position, tail, max_events)
    missed_n = dropped_count(requested, stats.oldest_position, tail)
    if isinstance(result, Replayed) or result.reason is UNAVAILABLE:
        event("no trimmed gap")
        # nothing was missed, and the inputs cannot name a cause
        assert (missed_n, cause) == (0, TrimCause.UNKNOWN)
        return
    assert isinstance(result, Gap) and result.reason is TRIMMED
    missed = range(requested + 1, first_of(stats))
    assert missed_n == len(missed) > 0
    expected = expected_cause(missed, first_count)
    event(f"cause: {expected}")  # --hypothesis-show-statistics: all three come up
    assert cause is expected
    # and what the count bound did not remove, the age bound did
    assert all(q < first_age for q in missed if q >= first_count)

    explained = explain_gap(
        gap(requested, tail), first_retained=stats.oldest_position, tail=tail, max_events=max_events
    )
    # dropped: the needed positions retention removed; missed: every one the client never gets
    assert (explained.reason, explained.cause, explained.dropped) == (TRIMMED, expected, len(missed))
    assert explained.missed == tail - requested == gap(requested, tail).missed_events
    assert explained.text.startswith(f"trimmed by {expected}: retention dropped {len(missed)} event")


# --- one example per cause ----------------------------------------------------------------------------


def appended(store, count: int) -> None:
    for _ in range(count):
        store.append(SID, 0, PAYLOAD)


def test_a_count_trim():
    clock = FakeClock()
    store = InMemoryLiveReplayStore.with_bounds(3, 1_000.0, clock=clock)
    appended(store, 10)  # keeps 8..10
    assert store.replay_after_cursor(cursor(2)) == Gap(TRIMMED)
    stats = store.statistics(SID)
    assert (stats.oldest_position, stats.tail_position) == (8, 10)
    assert trim_cause(2, 8, 10, 3) is TrimCause.COUNT
    assert dropped_count(2, 8, 10) == 5
    explained = explain_gap(gap(2, 10), first_retained=8, tail=10, max_events=3)
    assert explained == GapExplanation(
        reason=TRIMMED,
        cause=TrimCause.COUNT,
        missed=8,
        dropped=5,
        requested_position=2,
        kept=(8, 10),
        text=(
            "trimmed by count: retention dropped 5 events this client still needed "
            "(positions 3..7; the store kept 8..10); it resumes from a fresh observation, "
            "8 events after its cursor"
        ),
    )


def test_an_age_trim():
    clock = FakeClock()
    store = InMemoryLiveReplayStore.with_bounds(100, 10.0, clock=clock)
    appended(store, 5)
    clock.now += 11.0
    appended(store, 3)  # 1..5 are too old: keeps 6..8
    assert store.replay_after_cursor(cursor(2)) == Gap(TRIMMED)
    assert store.statistics(SID).oldest_position == 6
    assert trim_cause(2, 6, 8, 100) is TrimCause.AGE
    explained = explain_gap(gap(2, 8), first_retained=6, tail=8, max_events=100)
    assert explained.text == (
        "trimmed by age: retention dropped 3 events this client still needed (positions 3..5; "
        "the store kept 6..8); it resumes from a fresh observation, 6 events after its cursor"
    )


def test_a_count_then_age_trim():
    clock = FakeClock()
    store = InMemoryLiveReplayStore.with_bounds(5, 10.0, clock=clock)
    appended(store, 10)  # count keeps 6..10
    clock.now += 11.0
    appended(store, 2)  # count keeps 8..12, then age drops 8..10
    stats = store.statistics(SID)
    assert (stats.oldest_position, stats.tail_position) == (11, 12)
    # the line is 12 - 5 = 7: 3..7 went by count, 8..10 by age
    assert trim_cause(2, 11, 12, 5) is TrimCause.COUNT_AND_AGE
    assert trim_cause(7, 11, 12, 5) is TrimCause.AGE  # 8..10: above the line
    assert trim_cause(2, 8, 12, 5) is TrimCause.COUNT  # had only 3..7 gone
    explained = explain_gap(gap(2, 12), first_retained=11, tail=12, max_events=5)
    assert explained.text == (
        "trimmed by count and age: retention dropped 8 events this client still needed "
        "(positions 3..10; the store kept 11..12); it resumes from a fresh observation, "
        "10 events after its cursor"
    )


def test_a_store_that_retains_nothing():
    # every position after the cursor up to the tail was missed
    assert dropped_count(4, None, 40) == 36
    assert trim_cause(4, None, 40, 24) is TrimCause.COUNT_AND_AGE  # 5..16 by count, 17..40 by age
    assert trim_cause(20, None, 40, 24) is TrimCause.AGE
    assert trim_cause(4, None, 40, 0) is TrimCause.COUNT  # max_events 0 keeps nothing
    explained = explain_gap(gap(39, 40), first_retained=None, tail=40, max_events=24)
    assert explained.text == (
        "trimmed by age: retention dropped 1 event this client still needed (position 40; the "
        "store kept none); it resumes from a fresh observation, 1 event after its cursor"
    )
    assert explained.kept is None


def test_unknown_when_the_inputs_cannot_say():
    assert trim_cause(2, 8, 10, None) is TrimCause.UNKNOWN  # no count bound given
    assert trim_cause(7, 8, 10, 3) is TrimCause.UNKNOWN  # 7 + 1 == first: nothing missed
    assert trim_cause(9, 8, 10, 3) is TrimCause.UNKNOWN  # replays 10
    assert trim_cause(10, 8, 10, 3) is TrimCause.UNKNOWN  # at the tail
    assert trim_cause(12, 8, 10, 3) is TrimCause.UNKNOWN  # past the tail (unavailable)
    assert trim_cause(10, None, 10, 3) is TrimCause.UNKNOWN  # empty, at the tail
    explained = explain_gap(gap(2, 10), first_retained=8, tail=10, max_events=None)
    assert (explained.cause, explained.dropped, explained.missed) == (TrimCause.UNKNOWN, 5, 8)
    assert explained.text == (
        "trimmed (cause unknown: no count bound given): retention dropped 5 events this client "
        "still needed (positions 3..7; the store kept 8..10); it resumes from a fresh observation, "
        "8 events after its cursor"
    )


def test_dropped_count_edges():
    assert dropped_count(0, 1, 5) == 0  # a fresh cursor before a full buffer
    assert dropped_count(0, 2, 5) == 1
    assert dropped_count(5, 1, 5) == 0  # at the tail
    assert dropped_count(9, 1, 5) == 0  # past the tail: never negative
    assert dropped_count(9, None, 5) == 0
    assert dropped_count(5, None, 5) == 0
    assert dropped_count(0, None, 0) == 0  # a session never appended to
    assert dropped_count(0, 9, 5) == 5  # first past the tail (inconsistent): never past the tail
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises((TypeError, ValueError)):
            dropped_count(bad, None, 5)
        with pytest.raises((TypeError, ValueError)):
            trim_cause(1, None, 5, bad)
    with pytest.raises(ValueError, match="tail must not be negative"):
        dropped_count(0, None, -1)
    with pytest.raises(TypeError, match="first_retained must be an int"):
        trim_cause(0, 2.0, 5, 1)


def test_unavailable_gaps_have_no_cause_and_no_count():
    ahead = explain_gap(gap(50, 40, UNAVAILABLE), first_retained=17, tail=40, max_events=24)
    assert (ahead.reason, ahead.cause, ahead.missed, ahead.kept) == (UNAVAILABLE, None, None, (17, 40))
    assert ahead.text == (
        "unavailable: position 50 is past the store's tail 40 (a cursor from the future, or "
        "from a store that restarted); nothing can be replayed, the client reloads"
    )
    earlier = explain_gap(gap(3, 40, UNAVAILABLE), first_retained=17, tail=40, max_events=24)
    assert "never had position 3" in earlier.text and earlier.cause is None


def test_explain_gap_with_cursors_that_do_not_parse_or_positions_read_at_another_moment():
    odd = LiveReplayGap(SID, SessionCursor("not a cursor"), cursor(10), SessionRevision(0), TRIMMED)
    explained = explain_gap(odd, first_retained=8, max_events=3)  # tail: the latest cursor's, 10
    assert (explained.cause, explained.dropped, explained.missed, explained.requested_position) == (
        TrimCause.UNKNOWN, None, None, None
    )
    assert explained.text.startswith("trimmed: the cursors do not parse")
    # statistics showing nothing missed after the cursor: read before the trim, say
    stale = explain_gap(gap(5, 10), first_retained=6, tail=10, max_events=3)
    assert (stale.cause, stale.dropped, stale.missed) == (TrimCause.UNKNOWN, None, 5)
    assert "show nothing missed after 5" in stale.text
    # the tail defaults to the gap's latest cursor
    assert explain_gap(gap(2, 10), first_retained=8, max_events=3).dropped == 5
    odd_unavailable = LiveReplayGap(SID, SessionCursor("x"), cursor(10), SessionRevision(0), UNAVAILABLE)
    assert "does not parse" in explain_gap(odd_unavailable, first_retained=None).text


def test_explain_gap_refuses_what_is_not_a_gap_and_explanations_check_their_fields():
    with pytest.raises(TypeError, match="gap must be a LiveReplayGap"):
        explain_gap(Gap(TRIMMED), first_retained=None)
    with pytest.raises(ValueError, match="tail must not be negative"):
        explain_gap(gap(2, 10), first_retained=None, tail=-1)
    with pytest.raises(ValueError, match="a trimmed gap has a cause"):
        GapExplanation(UNAVAILABLE, TrimCause.AGE, None, None, 1, None, "")
    with pytest.raises(ValueError, match="a trimmed gap has a cause"):
        GapExplanation(TRIMMED, None, None, None, 1, None, "")
    with pytest.raises(ValueError, match="dropped must not be negative"):
        GapExplanation(TRIMMED, TrimCause.AGE, 3, -1, 1, None, "")
    assert GapExplanation("trimmed", "age", 1, 1, 1, None, "x").cause is TrimCause.AGE
    assert [c.value for c in TrimCause] == ["count", "age", "count and age", "unknown"]


async def test_a_simulated_reconnect_explained_with_the_simulators_own_inputs():
    """What the simulator would pass: the store's statistics and config, read after the gap."""
    from lash_nb import ReconnectSimulator

    async with await Scenario.create(backend="memory", max_events=3, max_age=60.0) as s:
        sim = ReconnectSimulator(s.handle, clock=s.clock, clients=("A", "B"))
        sim.disconnect("A")
        for i in range(10):
            s.handle.record_queue_changed("enqueued", [f"b{i}"])
        outcome = sim.reconnect("A")
        assert outcome.gap is not None and outcome.gap.reason is TRIMMED
        stats, _note, error = sim._statistics()
        assert not error
        config = sim._replay_store.config
        explained = explain_gap(
            outcome.gap,
            first_retained=stats.oldest_position,
            tail=stats.tail_position,
            max_events=config.max_events_per_session,
        )
        assert explained.cause is TrimCause.COUNT
        # the gap counts every event between the cursors; the explanation those never replayable
        assert explained.dropped == outcome.gap.missed_events - stats.retained_events
        assert explained.missed == outcome.gap.missed_events  # the same number the gap log shows
        assert f"the store kept {stats.oldest_position}..{stats.tail_position})" in explained.text

        # an age trim: B, up to date, falls behind by time, not by count
        sim.pump()
        assert sim.clients["B"].cursor.live_position() == stats.tail_position
        sim.disconnect("B")
        s.handle.record_queue_changed("enqueued", ["late"])
        s.clock.advance(61.0)
        s.handle.record_queue_changed("enqueued", ["later"])
        outcome = sim.reconnect("B")
        stats, _note, _error = sim._statistics()
        explained = explain_gap(
            outcome.gap, first_retained=stats.oldest_position, tail=stats.tail_position,
            max_events=sim._replay_store.config.max_events_per_session,
        )
        assert explained.cause is TrimCause.AGE and explained.dropped == 1
