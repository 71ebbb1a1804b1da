"""Where foreign exceptions become lash errors: lash_nb's one boundary around the stores it reads.

The widgets call the live replay store (statistics, retention, trimming), the queue store and
the process registry directly, and follow sources that may be any ``ObservationSource``. A
store's own failure there (a ``ConnectionError``, a driver error, a bug) must never reach a
notebook user as a bare foreign exception: ``translated`` turns it into the store's lash error,
with the original chained as ``__cause__``. Lash errors pass through unchanged, and so does
anything that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``).

Pure: no widget, IPython or asyncio code.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from lash_core import (
    LashError,
    LiveReplayStoreFailure,
    ProcessRegistryError,
    QueuedWorkError,
)
from lash_core._json import error_message

__all__ = ["translated", "as_lash_error", "REPLAY_STORE", "QUEUE_STORE", "PROCESS_REGISTRY", "FOREIGN_MESSAGE_MAX_CHARS"]

#: Characters of a foreign error's message kept in the lash error (the cause keeps all of it).
FOREIGN_MESSAGE_MAX_CHARS = 300

REPLAY_STORE = "live replay store"
QUEUE_STORE = "queue store"
PROCESS_REGISTRY = "process registry"


def _replay(message: str) -> LashError:
    return LiveReplayStoreFailure(message)  # its str() says "live replay store error: ..."


def _queue(message: str) -> LashError:
    return QueuedWorkError(f"queue store error: {message}")


def _processes(message: str) -> LashError:
    return ProcessRegistryError(f"process registry error: {message}")


_ERRORS = {REPLAY_STORE: _replay, QUEUE_STORE: _queue, PROCESS_REGISTRY: _processes}


def as_lash_error(store: str, action: str, err: Exception) -> LashError:
    """``err`` itself when it is a ``LashError``, else ``store``'s lash error saying what was
    being done, with ``err`` as its ``__cause__``."""
    if isinstance(err, LashError):
        return err
    mapped = _ERRORS[store](f"{action}: {error_message(err, FOREIGN_MESSAGE_MAX_CHARS)}")
    mapped.__cause__ = err
    return mapped


@contextlib.contextmanager
def translated(store: str, action: str) -> Iterator[None]:
    """Run a call into ``store`` (``REPLAY_STORE``, ``QUEUE_STORE`` or ``PROCESS_REGISTRY``); a
    foreign ``Exception`` leaves as that store's lash error (``LiveReplayStoreFailure``,
    ``QueuedWorkError``, ``ProcessRegistryError``) saying what was being done, cause chained."""
    try:
        yield
    except LashError:
        raise
    except Exception as err:
        raise as_lash_error(store, action, err) from err
