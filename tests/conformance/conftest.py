"""Fixtures of the conformance suite: one parametrized factory fixture per store kind.

Each test asks for ``replay_store_factory``, ``queue_store_factory`` or
``process_registry_factory`` and runs once per backend listed in ``backends.py``. The fixture
hands out an ``Opened`` view of the factory: the same ``open`` / ``reopen`` / ``close``, plus
closing at teardown whatever the test left open, and ``reopen`` skipping the test for a backend
that keeps nothing. ``clock`` is the ``FakeClock`` to open stores with.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import pytest

from lash_core.testing import FakeClock

from . import backends

S = TypeVar("S")


class Opened(Generic[S]):
    """A backend's factory as a test sees it (see the module docstring)."""

    def __init__(self, factory: backends.StoreFactory[S]) -> None:
        self.factory = factory
        self.name = factory.name
        self._open: list[S] = []

    def __repr__(self) -> str:
        return f"<Opened {self.name} stores={len(self._open)}>"

    def open(self, *, clock: FakeClock, **config: Any) -> S:
        store = self.factory.open(clock=clock, **config)
        self._open.append(store)
        return store

    @property
    def can_reopen(self) -> bool:
        return self.factory.reopen is not None

    def reopen(self, store: S) -> S:
        """The same data through a new store object; skips the test for a non-durable backend."""
        if self.factory.reopen is None:
            pytest.skip(f"the {self.name} backend keeps nothing across a reopen")
        fresh = self.factory.reopen(store)
        self._forget(store)
        self._open.append(fresh)
        return fresh

    def close(self, store: S) -> None:
        self._forget(store)
        self.factory.close(store)

    def close_all(self) -> None:
        while self._open:
            self.factory.close(self._open.pop())

    def _forget(self, store: S) -> None:
        self._open = [s for s in self._open if s is not store]


def _params(factories: list[Any]) -> list[Any]:
    return [pytest.param(f, id=f.name, marks=list(getattr(f, "marks", ()))) for f in factories]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=_params(backends.REPLAY_BACKENDS))
def replay_store_factory(request: pytest.FixtureRequest) -> Any:
    opened = Opened(request.param)
    yield opened
    opened.close_all()


@pytest.fixture(params=_params(backends.QUEUE_BACKENDS))
def queue_store_factory(request: pytest.FixtureRequest) -> Any:
    opened = Opened(request.param)
    yield opened
    opened.close_all()


@pytest.fixture(params=_params(backends.PROCESS_REGISTRY_BACKENDS))
def process_registry_factory(request: pytest.FixtureRequest) -> Any:
    opened = Opened(request.param)
    yield opened
    opened.close_all()
