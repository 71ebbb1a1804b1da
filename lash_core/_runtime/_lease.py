"""The lease heartbeat: a running turn keeps its queued-work claims alive, or learns it lost them.

Rules (read these before the code):

* A turn holds the claim it started from (idle boundary) and every claim it joined at a
  checkpoint. While it holds any, one asyncio task on the runtime's loop renews each held claim
  every ``renew_interval_ms`` (default: a third of the lease, so two missed renewals in a row
  still leave the lease live). The turn never waits on a renewal.
* The store decides validity, on its own clock. A renewal the store *refuses*
  (``QueuedWorkClaimExpired``: the claim is no longer held under its claim id and lease token,
  because another worker took the work over after the lease expired, or the claim was abandoned)
  means the claim is lost: the heartbeat stops and reports the loss once (``ClaimLost``).
* A renewal that *fails* (any other exception: the store is down, a timeout) is not a refusal.
  It is logged and tried again at the next tick. If the lease ran out meanwhile, the store's
  answer when it is back decides: nobody re-claimed the work, the renewal succeeds; somebody did,
  it is refused and the claim is lost.
* ``stop()`` cancels the task and waits for it; nothing outlives the turn and no exception of
  the heartbeat escapes unhandled. A heartbeat is used for one turn only.
* The turn side (``LashRuntime._drive_turn``) runs the turn body under ``guard``: when a claim is
  lost first, the body is cancelled and ``ClaimLostSignal`` raised instead of its result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .._errors import QueuedWorkClaimExpired
from .._json import error_message, truncate

__all__ = [
    "ClaimHeartbeat",
    "ClaimLost",
    "ClaimLostSignal",
    "HEARTBEAT_TASK_NAME",
    "MAX_LOSS_REASON_CHARS",
    "MAX_LOSS_BATCH_IDS",
]

logger = logging.getLogger("lash_core.runtime")

T = TypeVar("T")

#: Prefix of the heartbeat task's name (``asyncio.Task.get_name``), followed by the session id.
HEARTBEAT_TASK_NAME = "lash lease heartbeat"
#: Characters of the store's refusal kept in the loss message: a store may put anything in its
#: error text, and the message travels in the observation stream.
MAX_LOSS_REASON_CHARS = 500
#: Batch ids named in the loss message; a claim may hold up to 64, the rest are counted.
MAX_LOSS_BATCH_IDS = 8


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimLost:
    """A claim the store refused to renew: which one, and the store's ``error``."""

    session_id: str
    claim_id: str
    batch_ids: tuple[str, ...]
    error: BaseException

    @property
    def reason(self) -> str:
        """The store's refusal, at most ``MAX_LOSS_REASON_CHARS`` characters."""
        return error_message(self.error, MAX_LOSS_REASON_CHARS, with_type=False)

    @property
    def message(self) -> str:
        """One bounded line for the stream, the log and the raised error."""
        shown = ", ".join(self.batch_ids[:MAX_LOSS_BATCH_IDS])
        more = len(self.batch_ids) - MAX_LOSS_BATCH_IDS
        if more > 0:
            shown += f" and {more} more"
        claim = truncate(self.claim_id, 200)
        return (
            f"lost queued work claim `{claim}` (batches: {shown or 'none'}): {self.reason}; "
            "the turn stops without a commit and leaves this work to its current holder"
        )


class ClaimLostSignal(Exception):
    """Raised by ``ClaimHeartbeat.guard`` in place of the turn body's result (internal)."""

    def __init__(self, lost: ClaimLost) -> None:
        self.lost = lost
        super().__init__(lost.message)


class ClaimHeartbeat:
    """Renews a turn's queued-work claims on a timer; see the module rules.

    ``ttl_ms`` is the lease each renewal asks for (milliseconds) and ``interval_s`` the wait between
    renewals (seconds), through ``sleep`` (``asyncio.sleep`` unless a test injects a fake timer).
    """

    def __init__(
        self,
        store: Any,
        *,
        session_id: str,
        ttl_ms: int,
        interval_s: float,
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._ttl_ms = ttl_ms
        self._interval_s = interval_s
        self._sleep = sleep
        self._claims: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._lost_future: asyncio.Future[ClaimLost] | None = None
        self._lost: ClaimLost | None = None
        self._stopped = False
        self.renewals = 0
        self.failures = 0

    # -- reading -------------------------------------------------------------------------------------

    @property
    def claims(self) -> list[Any]:
        """The claims still held, each as last renewed (a lost claim is not among them)."""
        return list(self._claims)

    @property
    def lost(self) -> ClaimLost | None:
        return self._lost

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the turn side -------------------------------------------------------------------------------

    def hold(self, claim: Any) -> None:
        """Keep ``claim`` alive from now on; starts the timer task with the first claim."""
        if self._stopped:
            raise RuntimeError("this lease heartbeat was stopped")
        self._claims.append(claim)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{HEARTBEAT_TASK_NAME} ({self._session_id})"
            )

    async def guard(self, body: Coroutine[Any, Any, T]) -> T:
        """Run ``body`` as a task and return its result, or raise ``ClaimLostSignal`` when a claim
        is lost first (the body is cancelled and awaited). A loss wins over a body that finished
        in the same instant. Cancelling the caller cancels the body."""
        task = asyncio.get_running_loop().create_task(body)
        lost = self._lost_signal()
        try:
            await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _settle(task)
            raise
        if lost.done():
            await _settle(task)
            raise ClaimLostSignal(lost.result())
        return task.result()

    async def stop(self) -> None:
        """Cancel the timer and wait for it; idempotent, never raises (but for the caller's own
        cancellation)."""
        self._stopped = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait((task,))
        if not task.cancelled() and task.exception() is not None:  # _run never raises; be sure
            logger.error(
                "lease heartbeat ended with an error (session_id=%s)",
                self._session_id,
                exc_info=task.exception(),
            )

    # -- the timer -----------------------------------------------------------------------------------

    def _lost_signal(self) -> asyncio.Future[ClaimLost]:
        if self._lost_future is None:
            self._lost_future = asyncio.get_running_loop().create_future()
            if self._lost is not None:
                self._lost_future.set_result(self._lost)
        return self._lost_future

    async def _run(self) -> None:
        try:
            while self._lost is None:
                await self._sleep(self._interval_s)
                await self.renew_all()
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken timer: the claims are no longer kept, say so once
            logger.error(
                "lease heartbeat stopped: its timer failed (session_id=%s); held claims may expire",
                self._session_id,
                exc_info=True,
            )

    async def renew_all(self) -> None:
        """One tick: renew every held claim once (see the module rules)."""
        for claim in list(self._claims):
            if self._lost is not None:
                return
            try:
                renewed = await self._store.renew_queued_work_claim(claim, self._ttl_ms)
            except QueuedWorkClaimExpired as err:
                self._lose(claim, err)
                return
            except Exception:
                self.failures += 1
                logger.warning(
                    "could not renew queued work claim %s (session_id=%s); trying again at the "
                    "next renewal",
                    getattr(claim, "claim_id", "?"),
                    self._session_id,
                    exc_info=True,
                )
                continue
            self.renewals += 1
            for index, held in enumerate(self._claims):
                if held is claim:
                    self._claims[index] = renewed
                    break

    def _lose(self, claim: Any, err: BaseException) -> None:
        self._claims = [held for held in self._claims if held is not claim]
        lost = ClaimLost(
            session_id=self._session_id,
            claim_id=str(getattr(claim, "claim_id", "?")),
            batch_ids=tuple(getattr(claim, "batch_ids", ())),
            error=err,
        )
        self._lost = lost
        if self._lost_future is not None and not self._lost_future.done():
            self._lost_future.set_result(lost)

    def __repr__(self) -> str:
        return (
            f"<ClaimHeartbeat session_id={self._session_id!r} claims={len(self._claims)} "
            f"renewals={self.renewals} failures={self.failures} lost={self._lost is not None}>"
        )


async def _settle(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it still runs and wait for it to end, retrieving whatever it raised."""
    if not task.done():
        task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled() and task.exception() is not None:
        logger.debug("turn body ended with an error after it was abandoned", exc_info=task.exception())
