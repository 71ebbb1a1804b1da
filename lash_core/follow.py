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
* ``{"kind": "reconnected", "resumed_from": "<cursor>", "attempts": N, "down_for_s": S}``: the
  store was down and the follower is back (what it then replayed, or a gap, follows);
* ``{"kind": "end", "reason": "idle" | "max_events" | "closed" | "signal" | "error",
  "cursor": "<last cursor>", "received": N, "gaps": N, "lags": N, "error": "..."}``: always last.

It starts from ``--cursor`` (default: the session's current tail, so only new events), stops after
``--idle`` seconds without an item (0: never), after ``--max-events`` events, on SIGTERM/SIGINT, or
when the store fails for good (exit status 1, with the error in the ``end`` line and one line on
stderr). A store that is down, at the start or at a read, is retried every ``RETRY_S`` seconds for
up to ``--retry-for`` seconds (default 30; a Redis read first retries for its own reconnect window,
10 s, so a shorter ``--retry-for`` gives up after about that long). ``STORE`` must be a Redis URL
or an existing file: anything else is refused (exit status 1; 2 for bad options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from ._errors import (
    InvalidObservationError,
    LashError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    ReplayClosed,
)
from ._events import SessionObservationEvent
from ._follower import Lagged, Reconnected, RetryPolicy, SessionFollower
from ._handle import GapResume
from ._json import error_message, short_repr
from ._replay import LiveReplayStore
from ._store_source import StoreSource

__all__ = ["main", "open_store", "follow"]

#: Seconds between attempts while the store is down.
RETRY_S = 0.5


def open_store(target: str, *, namespace: str = "lash") -> LiveReplayStore:
    """A replay store for ``target``: a ``redis://`` / ``rediss://`` / ``unix://`` URL, or the
    path of an existing SQLite store file. Anything else raises ``InvalidObservationError`` (a
    path that does not exist is refused rather than created: a mistyped URL must not become an
    empty store file); a missing extra raises ``ImportError`` naming it."""
    if target.startswith(("redis://", "rediss://", "unix://")):
        from .stores.redis import RedisLiveReplayStore

        return RedisLiveReplayStore.from_url(target, namespace=namespace)
    if "://" in target or target.startswith("redis:"):
        raise InvalidObservationError(
            f"unsupported store URL {short_repr(target)}: use redis://host:port/db,"
            " rediss://..., unix://... or the path of a SQLite store file"
        )
    if not os.path.isfile(target):
        raise InvalidObservationError(
            f"no SQLite store file at {short_repr(target)} (and not a redis:// URL)"
        )
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
    if isinstance(item, Reconnected):
        return {
            "kind": "reconnected",
            "resumed_from": str(item.cursor),
            "attempts": item.attempts,
            "down_for_s": round(item.down_for_s, 3),
        }
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
    ``end`` document (also printed). Outages are ridden out by the follower's ``RetryPolicy``
    (every ``RETRY_S`` seconds, giving up after ``retry_for``)."""
    stop = stop or asyncio.Event()
    reason, error = "closed", None
    policy = RetryPolicy(initial_delay_s=RETRY_S, max_delay_s=RETRY_S, give_up_after_s=retry_for)
    source = StoreSource(store, session_id)
    follower: SessionFollower | None = None
    down_since = time.monotonic()
    while follower is None:  # the start reads the store's tail (no --cursor): retried the same way
        try:
            follower = SessionFollower(source, cursor, retry=policy)
        except LiveReplayStoreFailure as err:
            if time.monotonic() - down_since > retry_for or stop.is_set():
                return _end("error", None, 0, 0, 0, error_message(err))
            await asyncio.sleep(RETRY_S)
        except LiveReplayStoreError as err:  # a cursor of another session, a malformed one
            return _end("error", None, 0, 0, 0, error_message(err))
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
            except LiveReplayStoreError as err:  # down for longer than --retry-for
                reason, error = "error", error_message(err)
                break
            for item in items:
                _line(_item_document(item))
            if max_events is not None and follower.received >= max_events:
                reason = "max_events"
                break
    finally:
        follower.close()
    cursor_text = str(follower.cursor) if follower.cursor is not None else None
    return _end(
        reason, cursor_text, follower.received, follower.gap_count, follower.lag_count, error
    )


def _end(
    reason: str, cursor: str | None, received: int, gaps: int, lags: int, error: str | None
) -> dict[str, Any]:
    """Print (and return) the ``end`` line; an error is also told on stderr, in one line."""
    end: dict[str, Any] = {
        "kind": "end",
        "reason": reason,
        "cursor": cursor,
        "received": received,
        "gaps": gaps,
        "lags": lags,
    }
    if error is not None:
        end["error"] = error
        print(f"lash_core.follow: {error}", file=sys.stderr)
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
    parser.add_argument(
        "--idle", type=float, default=5.0, help="stop after this many idle seconds (0: never)"
    )
    parser.add_argument(
        "--max-events", type=int, default=None, help="stop after this many events (default: no limit)"
    )
    parser.add_argument(
        "--retry-for",
        type=float,
        default=30.0,
        help="seconds to keep retrying a store that is down (at least the store's own reconnect"
        " window: 10 s for Redis)",
    )
    args = parser.parse_args(argv)
    if not args.idle >= 0 or not args.retry_for >= 0:  # also refuses nan
        parser.error("--idle and --retry-for must be seconds >= 0")
    if args.max_events is not None and args.max_events < 1:
        parser.error("--max-events must be at least 1")

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
    except (LashError, ImportError) as err:
        _end("error", args.cursor, 0, 0, 0, error_message(err))
        return 1
    return 1 if end["reason"] == "error" else 0


if __name__ == "__main__":
    sys.exit(main())
