"""Child processes for the crash and race tests of the durable queue stores, and the parent's side.

Run as a script, ``python tests/crash_child.py MODE BACKEND TARGET ...`` where ``BACKEND`` is
``sqlite`` (``TARGET`` a file path) or ``postgres`` (``TARGET`` a DSN; the store's default schema,
its default clock: the database's):

* ``enqueue BACKEND TARGET SESSION START COUNT ITEMS``: enqueue one batch of ``ITEMS`` items per
  source key ``key-START`` .. ``key-(START+COUNT-1)``, printing ``KEY BATCH_ID`` (flushed) as each
  enqueue returns, after a first line ``ready``. The parent kills it with SIGKILL anywhere.
* ``worker BACKEND TARGET``: prints ``ready``, then answers JSON commands on stdin, one line each:
  ``{"op": "claim", "session", "owner", "ttl", "at"}`` -> ``{"claim": dict | null}``;
  ``{"op": "enqueue", "draft", "at"}`` -> ``{"batch": dict}``; ``{"op": "complete",
  "completion"}`` -> ``{"ok": true}``. ``at`` is a ``time.time()`` to wait for, so that several
  workers act at once. Any exception is answered ``{"error": "module.Class: message"}``.
* ``hold BACKEND TARGET SESSION TTL_MS``: claims the session's next batch, prints the claim as JSON
  and sleeps until killed.

The parent's helpers: ``Child`` (spawn, read lines, kill), ``open_store`` / ``close_store``,
``run_enqueue_crashes`` and ``check_enqueue_crashes`` (the SIGKILL enqueue crash test shared by the
PostgreSQL and SQLite tests), ``check_killed_claim_holder`` (a dead owner superseded after its lease).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from lash_core import (  # noqa: E402
    DeliveryPolicy,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkClaimExpired,
    QueuedWorkCompletion,
    SlotPolicy,
    TurnInput,
)

#: Seconds any one child step may take before the parent gives up on it (a hang is a failure).
STEP_TIMEOUT_S = 30.0


# --- both sides -----------------------------------------------------------------------------------


async def open_store(backend: str, target: str) -> Any:
    if backend == "sqlite":
        from lash_core.stores.sqlite import SqliteQueueStore

        return SqliteQueueStore(target)
    if backend == "postgres":
        from lash_core.stores.postgres import PostgresQueueStore

        return await PostgresQueueStore.open(target)
    raise ValueError(f"unknown backend {backend!r}")


async def close_store(store: Any) -> None:
    result = store.close()
    if asyncio.iscoroutine(result):
        await result


def batch_draft(session: str, key: str, items: int) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft(
        session,
        DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
        SlotPolicy.JOIN,
        [TurnInput.text(f"{key}:{j}") for j in range(items)],
        source_key=key,
    )


# --- the child ------------------------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _enqueue(
    backend: str, target: str, session: str, start: int, count: int, items: int
) -> None:
    store = await open_store(backend, target)
    _say("ready")
    for index in range(start, start + count):
        key = f"key-{index}"
        batch = await store.enqueue_queued_work(batch_draft(session, key, items))
        _say(f"{key} {batch.batch_id}")
    await close_store(store)
    _say("done")


async def _worker(backend: str, target: str) -> None:
    from lash_core import QueuedWorkBatchDraft as Draft

    store = await open_store(backend, target)
    _say("ready")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        delay = command.get("at", 0) - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            op = command["op"]
            if op == "claim":
                claim = await store.claim_ready_queued_work(
                    command["session"],
                    command["owner"],
                    QueuedWorkClaimBoundary.IDLE,
                    command["ttl"],
                    command.get("max_batches", 1),
                )
                answer: dict[str, Any] = {"claim": None if claim is None else claim.to_dict()}
            elif op == "enqueue":
                batch = await store.enqueue_queued_work(Draft.from_dict(command["draft"]))
                answer = {"batch": batch.to_dict()}
            elif op == "complete":
                await store.complete_queued_work(
                    QueuedWorkCompletion.from_dict(command["completion"])
                )
                answer = {"ok": True}
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as err:  # reported, so the parent can assert none leaked
            answer = {"error": f"{type(err).__module__}.{type(err).__qualname__}: {err}"}
        _say(json.dumps(answer))
    await close_store(store)


async def _hold(backend: str, target: str, session: str, ttl_ms: int) -> None:
    store = await open_store(backend, target)
    claim = await store.claim_ready_queued_work(
        session, f"holder-{os.getpid()}", QueuedWorkClaimBoundary.IDLE, ttl_ms, 1
    )
    _say(json.dumps(None if claim is None else claim.to_dict()))
    await asyncio.sleep(3600)  # until SIGKILL


def main(argv: list[str]) -> None:
    mode, backend, target, *rest = argv
    if mode == "enqueue":
        session, start, count, items = rest
        asyncio.run(_enqueue(backend, target, session, int(start), int(count), int(items)))
    elif mode == "worker":
        asyncio.run(_worker(backend, target))
    elif mode == "hold":
        session, ttl_ms = rest
        asyncio.run(_hold(backend, target, session, int(ttl_ms)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


# --- the parent -----------------------------------------------------------------------------------


class Child:
    """``crash_child.py MODE BACKEND TARGET ARGS`` as a child process with line-wise pipes."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._buffer = b""

    def readline(self, timeout: float = STEP_TIMEOUT_S) -> str | None:
        """The next complete line, or ``None`` at EOF; ``TimeoutError`` after ``timeout`` s."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no line from the child within {timeout} s: {self.stderr_tail()}"
                    )
                if not selector.select(left):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def expect(self, wanted: str) -> None:
        line = self.readline()
        if line != wanted:
            raise AssertionError(f"child said {line!r}, not {wanted!r}: {self.stderr_tail()}")

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        self.send(command)
        line = self.readline()
        if line is None:
            raise AssertionError(f"the child ended: {self.stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> list[str]:
        """SIGKILL the child; the complete lines it wrote before dying."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STEP_TIMEOUT_S)
        assert self.process.stdout is not None
        self._buffer += self.process.stdout.read()
        *lines, self._buffer = self._buffer.split(b"\n")  # a torn last line is not a line
        return [line.decode() for line in lines]

    def close(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STEP_TIMEOUT_S)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def stderr_tail(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read().decode(errors="replace")[-2000:]


def run_enqueue_crashes(
    backend: str,
    target: str,
    session: str,
    *,
    rounds: int,
    items: int,
    seed: int,
    max_delay_s: float = 0.08,
) -> dict[str, str]:
    """Kill enqueueing children with SIGKILL at random points, ``rounds`` times; every round
    starts a little before the last key it saw returned, so keys are re-enqueued across crashes.
    Returns each printed key's batch id (a key printed twice must name the same batch)."""
    rng = random.Random(seed)
    printed: dict[str, str] = {}
    progress = 0
    for _ in range(rounds):
        start = max(0, progress - rng.randint(0, 5))
        child = Child("enqueue", backend, target, session, str(start), "400", str(items))
        try:
            child.expect("ready")
            time.sleep(rng.uniform(0, max_delay_s))
            lines = child.kill()
        finally:
            child.close()
        for line in lines:
            if line in ("ready", "done"):
                continue
            key, batch_id = line.split()
            assert printed.setdefault(key, batch_id) == batch_id, (
                f"seed {seed}: {key} returned {batch_id}, earlier {printed[key]}"
            )
            progress = max(progress, int(key.removeprefix("key-")) + 1)
    return printed


async def check_enqueue_crashes(
    store: Any, session: str, printed: dict[str, str], *, items: int, seed: int
) -> None:
    """Every printed batch is stored exactly once with all its items; nothing is duplicated by
    source key; re-enqueueing every key returns the stored batch and adds nothing."""
    listed = await store.list_queued_work(session)
    ids = [b.batch_id for b in listed]
    keys = [b.source_key for b in listed]
    assert len(ids) == len(set(ids)), f"seed {seed}: a batch id is listed twice"
    assert len(keys) == len(set(keys)), f"seed {seed}: a source key is stored twice"
    by_key = {b.source_key: b for b in listed}
    for batch in listed:  # printed or not (killed between commit and print): whole
        assert [p.content for p in batch.payloads] == [
            f"{batch.source_key}:{j}" for j in range(items)
        ], f"seed {seed}: batch {batch.batch_id} is missing items"
    for key, batch_id in printed.items():
        assert key in by_key, f"seed {seed}: {key} (batch {batch_id}) returned but is gone"
        assert by_key[key].batch_id == batch_id, f"seed {seed}: {key} names another batch"
    for key, batch in by_key.items():
        assert key is not None
        again = await store.enqueue_queued_work(batch_draft(session, key, items))
        assert again == batch, f"seed {seed}: re-enqueueing {key} made or changed a batch"
    assert [b.batch_id for b in await store.list_queued_work(session)] == ids


async def check_killed_claim_holder(store: Any, backend: str, target: str) -> None:
    """A ``hold`` child killed while holding a claim leaves the batch listed (not pending); after
    the lease (the store's clock) another owner claims it with a larger fencing token, and the
    dead owner's late completion and renewal are refused (``QueuedWorkClaimExpired``)."""
    idle = QueuedWorkClaimBoundary.IDLE
    batch = await store.enqueue_queued_work(batch_draft("held", "held", 1))
    child = Child("hold", backend, target, "held", "1500")
    try:
        line = child.readline()
        assert line is not None and line != "null", child.stderr_tail()
        dead = QueuedWorkClaim.from_dict(json.loads(line))
        child.kill()
    finally:
        child.close()
    assert dead.batch_ids == (batch.batch_id,)
    assert [b.batch_id for b in await store.list_queued_work("held")] == [batch.batch_id]
    assert await store.list_pending_queued_work("held") == []
    assert await store.claim_ready_queued_work("held", "heir", idle, 60_000, 1) is None
    deadline = time.monotonic() + 10
    while (heir := await store.claim_ready_queued_work("held", "heir", idle, 60_000, 1)) is None:
        assert time.monotonic() < deadline, "the dead owner's lease never expired"
        await asyncio.sleep(0.1)
    assert heir.batch_ids == (batch.batch_id,)
    assert heir.fencing_token > dead.fencing_token
    assert heir.claimed_at_epoch_ms >= dead.expires_at_epoch_ms
    for late in (store.complete_queued_work(dead.completion()),
                 store.renew_queued_work_claim(dead, 60_000)):  # fmt: skip
        try:
            await late
        except QueuedWorkClaimExpired:
            pass
        else:
            raise AssertionError("the dead owner's late call was accepted")
    assert [b.batch_id for b in await store.list_queued_work("held")] == [batch.batch_id]
    await store.complete_queued_work(heir.completion())
    assert await store.list_queued_work("held") == []


if __name__ == "__main__":
    main(sys.argv[1:])
