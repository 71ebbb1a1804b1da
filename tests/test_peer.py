"""PeerKernel: a second real kernel, driven with jupyter-client."""

from __future__ import annotations

import os

import pytest

from lash_nb import PeerKernel, PeerKernelError


def test_a_peer_kernel_runs_code_restarts_empty_and_reports_errors_typed():
    peer = PeerKernel.start()
    try:
        first_pid = peer.pid
        assert peer.run("x = 41\nprint(x + 1)") == "42\n"
        assert peer.run("x") == "41\n"  # an expression's value comes back as text
        with pytest.raises(PeerKernelError, match="ZeroDivisionError"):
            peer.run("1 / 0")
        peer.restart()
        assert peer.pid != first_pid
        with pytest.raises(PeerKernelError, match="NameError"):
            peer.run("print(x)")  # a restart empties the kernel's memory
        directory = peer._dir
    finally:
        peer.shutdown()
    peer.shutdown()  # idempotent
    assert not os.path.exists(directory)  # its kernelspec and sockets are gone
    with pytest.raises(PeerKernelError, match="not running"):
        peer.run("print(1)")


def test_a_peer_that_does_not_answer_in_time_is_interrupted_and_stays_usable():
    with PeerKernel.start(timeout=2.0) as peer:
        with pytest.raises(PeerKernelError, match="did not answer"):
            peer.run("import time; time.sleep(30)")
        assert peer.run("print('alive')") == "alive\n"  # not queued behind the sleeper
        with pytest.raises(PeerKernelError, match="StdinNotImplementedError"):
            peer.run("input('?')")  # nobody answers a peer's stdin
        with pytest.raises(PeerKernelError, match="died"):
            peer.run("import os; os._exit(1)")
        with pytest.raises(PeerKernelError, match="died"):
            peer.run("print(1)")
        peer.restart()
        assert peer.run("print('back')") == "back\n"
    with pytest.raises(PeerKernelError, match="shut down"):
        peer.restart()
