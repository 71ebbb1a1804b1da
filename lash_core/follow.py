"""Follow a session in a shared store from another process, printing JSON Lines.

    python -m lash_core.follow STORE SESSION [--cursor C] [--namespace lash] [--idle 5] [--max-events N]

``STORE`` is a ``redis://`` / ``rediss://`` URL (``RedisLiveReplayStore``, extra ``[redis]``) or
the path of a SQLite store file (``SqliteLiveReplayStore``; replay only sees other processes'
appends at its next subscribe, so prefer Redis to follow live). The session is followed with a
``SessionFollower`` on a ``StoreSource``: the gap and lag policy is the follower's.

One JSON document per line on stdout, flushed per line:

* ``{"kind": "event", "position": N, "type": "<event type>", "event": <the event's wire
  document (spec wire.md)>}``;
* ``{"kind": "gap", "gap": <the gap document>, "resumed_from": "<fresh cursor>"}``;
* ``{"kind": "lagged", "count": N, "resumed_from": "<cursor>"}``;
* ``{"kind": "end", "reason": "idle" | "max_events" | "closed" | "signal" | "error",
  "cursor": "<last cursor>", "received": N, "gaps": N, "lags": N, "error": "..."}``: always last.

It starts from ``--cursor`` (default: the session's current tail, so only new events), stops after
``--idle`` seconds without an item (0: never), after ``--max-events`` events, on SIGTERM/SIGINT, or
when the store fails for good (exit status 1, with the error in the ``end`` line). A store that is
down at a read is retried every ``RETRY_S`` seconds for up to ``--retry-for`` seconds (default 30).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from ._errors import LashError, LiveReplayStoreError, ReplayClosed
from ._events import SessionObservationEvent
from ._follower import Lagged, SessionFollower
from ._handle import GapResume
from ._json import error_message
from ._replay import LiveReplayStore
from ._store_source import StoreSource

__all__ = ["main", "open_store", "follow"]

#: Seconds between attempts while the store is down.
RETRY_S = 0.5


def open_store(target: str, *, namespace: str = "lash") -> LiveReplayStore:
    """A replay store for ``target``: a Redis URL or a SQLite file path."""
    if target.startswith(("redis://", "rediss://", "unix://")):
        from .stores.redis import RedisLiveReplayStore

        return RedisLiveReplayStore.from_url(target, namespace=namespace)
    from .stores.sqlite import SqliteLiveReplayStore

    return SqliteLiveReplayStore(target)


def _line(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _item_document(item: Any) -> dict[str, Any]:
    if isinstance(item, SessionObservationEvent):
        return {
            "kind": "event",
            "position": item.live_position,
            "type": item.type,
            "event": item.to_dict(),
        }
    if isinstance(item, GapResume):
        return {
            "kind": "gap",
            "gap": item.gap.to_dict(),
            "resumed_from": str(item.observation.cursor),
        }
    if isinstance(item, Lagged):
        return {"kind": "lagged", "count": item.count, "resumed_from": str(item.resumed_from)}
    return {"kind": "unknown", "repr": repr(item)[:200]}


async def follow(
    store: LiveReplayStore,
    session_id: str,
    *,
    cursor: str | None = None,
    idle: float = 5.0,
    max_events: int | None = None,
    retry_for: float = 30.0,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Follow ``session_id`` printing a line per item (see the module docstring); returns the
    ``end`` document (also printed)."""
    follower = SessionFollower(StoreSource(store, session_id), cursor)
    stop = stop or asyncio.Event()
    reason, error = "closed", None
    loop = asyncio.get_running_loop()
    down_since: float | None = None
    try:
        while not stop.is_set():
            reader = asyncio.ensure_future(follower.next_items())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                {reader, stopper},
                timeout=idle if idle > 0 else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            stopper.cancel()
            if reader not in done:
                reader.cancel()
                reason = "signal" if stop.is_set() else "idle"
                break
            try:
                items = reader.result()
            except ReplayClosed:
                reason = "closed"
                break
            except LiveReplayStoreError as err:
                now = loop.time()
                down_since = now if down_since is None else down_since
                if now - down_since > retry_for:
                    reason, error = "error", error_message(err)
                    break
                follower.disconnect()
                await asyncio.sleep(RETRY_S)
                continue
            down_since = None
            for item in items:
                _line(_item_document(item))
            if max_events is not None and follower.received >= max_events:
                reason = "max_events"
                break
    finally:
        follower.close()
    end = {
        "kind": "end",
        "reason": reason,
        "cursor": str(follower.cursor) if follower.cursor is not None else None,
        "received": follower.received,
        "gaps": follower.gap_count,
        "lags": follower.lag_count,
    }
    if error is not None:
        end["error"] = error
    _line(end)
    return end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lash_core.follow", description=__doc__.split("\n")[0]
    )
    parser.add_argument("store", help="redis:// URL or SQLite store file")
    parser.add_argument("session", help="session id")
    parser.add_argument("--cursor", help="resume after this cursor (default: the current tail)")
    parser.add_argument("--namespace", default="lash", help="Redis key namespace (default lash)")
    parser.add_argument("--idle", type=float, default=5.0, help="stop after this many idle seconds")
    parser.add_argument("--max-events", type=int, default=None)
    parser.add_argument("--retry-for", type=float, default=30.0, help="seconds to retry a down store")
    args = parser.parse_args(argv)

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        store = open_store(args.store, namespace=args.namespace)
        try:
            return await follow(
                store,
                args.session,
                cursor=args.cursor,
                idle=args.idle,
                max_events=args.max_events,
                retry_for=args.retry_for,
                stop=stop,
            )
        finally:
            store.close()

    try:
        end = asyncio.run(run())
    except LashError as err:
        _line({"kind": "end", "reason": "error", "error": error_message(err)})
        return 1
    return 1 if end["reason"] == "error" else 0


if __name__ == "__main__":
    sys.exit(main())
