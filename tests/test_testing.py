"""The reusable scenario helpers in ``lash_core.testing``: bounded simulated clients, a strict clock."""

import math

import pytest

from lash_core._events import AssistantProseDelta, TurnActivity
from lash_core._gap import LiveReplayGapReason
from lash_core.testing import MAX_CLIENT_OUTCOMES, FakeClock, Scenario, SimulatedClient


def activity(text: str) -> TurnActivity:
    return TurnActivity.independent(AssistantProseDelta(text))


async def test_a_client_that_reconnects_forever_stays_bounded():
    s = await Scenario.create(session_id="bounded", max_events=1)
    client = s.client("c")
    assert (client.reconnects, client.gap_count, len(client.outcomes)) == (1, 0, 1)  # first connect
    rounds = MAX_CLIENT_OUTCOMES + 100
    for i in range(rounds):
        client.disconnect()
        if i % 2:  # two events while away, retention keeps one: a trimmed gap
            s.handle.record_turn_activity(activity(f"{i}a"))
            s.handle.record_turn_activity(activity(f"{i}b"))
        outcome = client.reconnect()
        assert outcome.kind == ("gap" if i % 2 else "replayed")
        assert client.outcomes[-1] is outcome
    assert len(client.outcomes) == MAX_CLIENT_OUTCOMES  # the recent ones only
    assert client.reconnects == rounds + 1  # but every one is counted
    assert client.gap_count == rounds // 2
    gaps = client.gaps
    assert len(gaps) == MAX_CLIENT_OUTCOMES // 2  # recent gaps, newest last
    assert all(o.gap.reason is LiveReplayGapReason.TRIMMED for o in gaps)
    assert gaps[-1] is client.outcomes[-1]
    assert client.view_matches_server()


async def test_client_arguments_are_checked_before_it_subscribes():
    s = await Scenario.create(session_id="args")
    for kwargs, error in (
        ({"keep_events": 2.5}, TypeError),
        ({"keep_events": True}, TypeError),
        ({"keep_events": -1}, ValueError),
        ({"keep_events": 10**30}, ValueError),
    ):
        with pytest.raises(error, match="keep_events"):
            SimulatedClient(s.handle, "x", **kwargs)
    with pytest.raises(TypeError, match="name"):
        SimulatedClient(s.handle, 5)  # type: ignore[arg-type]
    assert s.store.statistics(s.session_id).subscribers == 0  # no subscription leaked
    client = SimulatedClient(s.handle, "ok", keep_events=0)
    assert client.connected
    client.connect()  # again: the first subscription is closed, not left behind
    client.connect()
    assert s.store.statistics(s.session_id).subscribers == 1
    assert client.reconnects == 3


def test_fake_clock_refuses_what_a_monotonic_clock_cannot_be():
    for start, error in ((math.nan, ValueError), (math.inf, ValueError), ("1", TypeError), (True, TypeError)):
        with pytest.raises(error, match="start"):
            FakeClock(start)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="epoch_ms"):
        FakeClock(0.0, 1.5)  # type: ignore[arg-type]
    clock = FakeClock(10)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock() == 10.0 and clock.ms() == 1_750_000_000_000


def test_fake_clock_refuses_steps_past_what_its_readings_can_hold():
    from lash_core.testing import FakeClock

    clock = FakeClock()
    with pytest.raises(ValueError, match="2\\*\\*64-1"):
        clock.advance(1e308)
    clock.advance(1.5)
    assert clock() == 1001.5 and clock.ms() == 1_750_000_001_500
