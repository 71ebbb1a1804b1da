"""Command-line tour: ``python -m lash_core.demo [--db PATH]``.

Runs a scripted session offline on the embedded SQLite backend (no server), prints observation
events as a live client receives them, disconnects two clients, lets the replay buffer trim, and
reconnects them: one replays what it missed, the other gets a gap plus a fresh observation.
Exit status 0 means every check held.

The stores share one SQLite file: a fresh temporary one, removed at the end (the tour runs on a
fake clock, which must not meet the stamps of an earlier run), or ``--db PATH``, kept afterwards
to look into; each run then uses a session of its own in that file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from typing import TextIO

from ._cursor import SessionCursor
from ._events import SessionObservationEvent, TurnActivityPayload
from ._json import short_repr
from ._queue import DeliveryPolicy, SlotPolicy
from ._replay import LiveReplayStore, Replayed
from .testing import ReconnectOutcome, Scenario, SimulatedClient, StoreFileError

__all__ = ["main", "describe"]

#: Events the tour's store retains per session: small, so that a short absence trims.
TOUR_MAX_EVENTS = 8


def describe(event: SessionObservationEvent) -> str:
    """One line per event: position, revision, type and the interesting field."""
    position = event.live_position
    payload = event.payload
    if isinstance(payload, TurnActivityPayload):
        turn_event = payload.activity.event
        fields = turn_event.to_dict()
        fields.pop("type")
        detail = ", ".join(f"{k}={short_repr(v)}" for k, v in fields.items())
        what = f"turn_activity/{turn_event.type}"
    else:
        fields = payload.wire_fields(3, None)
        detail = ", ".join(f"{k}={short_repr(v)}" for k, v in fields.items())
        what = payload.type
    if len(detail) > 70:
        detail = detail[:67] + "..."
    return f"  #{position!s:<4} rev {int(event.revision):<3} {what:<38} {detail}"


def _show_outcome(out: TextIO, outcome: ReconnectOutcome, client: SimulatedClient) -> None:
    if outcome.gap is None:
        print(f"{client.name}: reconnect -> REPLAYED {len(outcome.replayed)} missed events:", file=out)
        for event in outcome.replayed:
            print(describe(event), file=out)
    else:
        gap = outcome.gap
        print(f"{client.name}: reconnect -> GAP ({gap.reason})", file=out)
        print(f"  requested cursor : {gap.requested_cursor}", file=out)
        print(f"  latest cursor    : {gap.latest_cursor} (revision {int(gap.latest_revision)})", file=out)
        print(f"  events missed    : {gap.missed_events}", file=out)
        view = outcome.observation.read_view if outcome.observation else None
        if view is not None:
            print(
                f"  fresh observation: turn_index={view.turn_index}, "
                f"{len(view.messages)} committed messages",
                file=out,
            )


def retained(store: LiveReplayStore, session_id: str, window: int) -> tuple[int, int]:
    """``(events retained, tail)`` of a session, asked through the store protocol alone (any
    backend): the oldest cursor within ``window`` of the tail that still replays holds them all."""
    tail = store.current_cursor(session_id, 0).parse().live_position
    for position in range(max(tail - window, 0), tail + 1):
        result = store.replay_after_cursor(SessionCursor.new(session_id, 0, position))
        if isinstance(result, Replayed):
            return len(result.events), tail
    return 0, tail  # not reached: a cursor at the tail always replays (nothing)


async def run_tour(
    out: TextIO = sys.stdout, *, delay: float = 0.03, path: str | os.PathLike[str] | None = None
) -> bool:
    """The tour; ``path`` is a SQLite file to run on and keep (default: a temporary one)."""
    session_id = "tour" if path is None else f"tour-{uuid.uuid4().hex[:8]}"
    scenario = await Scenario.create(
        session_id=session_id, max_events=TOUR_MAX_EVENTS, max_age=30.0, delay=delay, path=path
    )
    async with scenario:
        return await _tour(scenario, out)


async def _tour(scenario: Scenario, out: TextIO) -> bool:
    handle = scenario.handle
    print("lash_core tour: one scripted session, a live replay store of 8 events / 30 s", file=out)
    kept = "removed at the end" if scenario.temporary else "kept"
    print(f"stores: one SQLite file ({kept}): {scenario.path}\n", file=out)

    watcher = scenario.client("watcher")
    alice = scenario.client("alice")
    bob = scenario.client("bob")

    print("1. A turn streams; a connected client sees each event as it arrives:", file=out)
    turn = asyncio.create_task(handle.run_turn("Say hello"))
    while True:
        done = turn.done()  # read before pumping, so the last events are never left behind
        for event in watcher.pump():
            print(describe(event), file=out)
        if done:
            break
        await asyncio.sleep(0.01)
    await turn
    alice.pump()
    bob.pump()

    print("\n2. alice and bob disconnect, keeping their cursors.", file=out)
    alice.disconnect()
    bob.disconnect()

    print("   A queued input is enqueued while they are away:", file=out)
    batch = await handle.enqueue_turn_input(
        "What is 2 + 3?",
        DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
        SlotPolicy.EXCLUSIVE,
        source_key="tour-q1",
    )
    print(f"   batch {batch.batch_id} (seq {batch.enqueue_seq})", file=out)

    print("\n3. alice reconnects at once: the store still holds what she missed.", file=out)
    outcome = alice.reconnect()
    _show_outcome(out, outcome, alice)
    replay_ok = outcome.gap is None and len(outcome.replayed) == 1

    print("\n4. The queue worker runs the batch as a turn (a tool call); bob stays away.", file=out)
    ran = await handle.drain_queued_work()
    print(f"   turns run from the queue: {ran}; revision now {int(handle.observe().revision)}", file=out)
    assert scenario.clock is not None  # the tour runs on a fake clock
    scenario.clock.advance(31.0)
    scenario.store.trim_session(handle.session_id)
    window = TOUR_MAX_EVENTS
    held, tail = retained(scenario.store, handle.session_id, window)
    print(f"   31 s pass; retention trims: {held} events held, tail at #{tail}", file=out)

    print("\n5. bob reconnects with his old cursor:", file=out)
    outcome = bob.reconnect()
    _show_outcome(out, outcome, bob)
    gap_ok = outcome.gap is not None and str(outcome.gap.reason) == "trimmed"

    alice.pump()
    watcher.pump()
    views_ok = all(c.view_matches_server() for c in (watcher, alice, bob))
    print("\n6. Every client's reconstructed view equals the server's:", "yes" if views_ok else "NO", file=out)
    for client in (watcher, alice, bob):
        print(f"   {client.name:<8} cursor {client.cursor}  events {client.received}", file=out)
    ok = replay_ok and gap_ok and views_ok
    print("\ntour", "passed" if ok else "FAILED", file=out)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lash_core.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db", metavar="PATH", help="run on this SQLite file and keep it (its directory must exist)"
    )
    args = parser.parse_args(argv)
    try:
        return 0 if asyncio.run(run_tour(path=args.db)) else 1
    except StoreFileError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
