"""PeerKernel: a second, real IPython kernel driven from this one with jupyter-client.

A notebook uses it to show what survives a kernel restart and what another kernel sees:
``peer = PeerKernel.start()``, ``peer.run("print(1)")`` returns what the code printed,
``peer.restart()`` restarts that kernel (its memory is gone, files and servers are not),
``peer.shutdown()`` ends it (also ``with PeerKernel.start() as peer``).

The kernel runs this interpreter (``sys.executable``, so the same packages), from a kernelspec
written to a temporary directory: no installed kernelspec is used or changed. ``run`` raises
``PeerKernelError`` with the remote exception's name and message when the code fails, and on a
timeout (``timeout`` seconds, default 60).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any

__all__ = ["PeerKernel", "PeerKernelError"]


class PeerKernelError(RuntimeError):
    """The peer kernel's code raised, or it did not answer in time (the message says which)."""


class PeerKernel:
    """A second kernel on this interpreter (see the module docstring)."""

    def __init__(self, *, timeout: float = 60.0, cwd: str | None = None) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        self.timeout = timeout
        self._dir = tempfile.mkdtemp(prefix="lash-peer-kernel-")
        kernels = os.path.join(self._dir, "kernels")
        os.makedirs(os.path.join(kernels, "lash-peer"))
        spec = {  # what ipykernel's own kernelspec says, for this very interpreter
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "lash peer",
            "language": "python",
            "metadata": {"debugger": False},
        }
        with open(os.path.join(kernels, "lash-peer", "kernel.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f)
        specs = KernelSpecManager(kernel_dirs=[kernels])
        # IPC transport: Unix sockets in our temporary directory, not TCP ports on loopback
        self._manager = KernelManager(
            kernel_name="lash-peer",
            kernel_spec_manager=specs,
            transport="ipc",
            ip=os.path.join(self._dir, "kernel"),
        )
        self._cwd = cwd or os.getcwd()
        self._client: Any = None
        self._shut = False

    @classmethod
    def start(cls, *, timeout: float = 60.0, cwd: str | None = None) -> PeerKernel:
        peer = cls(timeout=timeout, cwd=cwd)
        try:
            peer._manager.start_kernel(cwd=peer._cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            peer._connect()
        except BaseException:
            peer.shutdown()
            raise
        return peer

    def __enter__(self) -> PeerKernel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @property
    def connection_file(self) -> str:
        """The kernel's connection file (what ``lash_nb.remote.KernelSource`` attaches to)."""
        return str(self._manager.connection_file)

    @property
    def pid(self) -> int | None:
        provisioner = getattr(self._manager, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return getattr(process, "pid", None)

    def _connect(self) -> None:
        client = self._manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=self.timeout)
        except RuntimeError as err:
            client.stop_channels()
            raise PeerKernelError(f"the peer kernel did not start: {err}") from err
        self._client = client

    def run(self, code: str) -> str:
        """Execute ``code`` in the peer kernel; returns its stdout (and the text of its result).

        Raises ``PeerKernelError`` when the code raises (its exception's name and message), when
        it reads standard input (a peer has no one to answer), when the kernel is not running or
        died, and after ``timeout`` seconds (the code is then interrupted, so the kernel can take
        the next call)."""
        if self._client is None:
            raise PeerKernelError("the peer kernel is not running")
        if not self._manager.is_alive():
            raise PeerKernelError("the peer kernel died; restart() starts a new one")
        parts: list[str] = []
        failure: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content.get("name") == "stdout":
                parts.append(content["text"])
            elif kind == "execute_result":
                parts.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                failure.append(f"{content['ename']}: {content['evalue']}")

        try:
            self._client.execute_interactive(
                code, timeout=self.timeout, output_hook=hook, allow_stdin=False
            )
        except TimeoutError as err:
            if not self._manager.is_alive():
                raise PeerKernelError("the peer kernel died while running the code") from err
            self._manager.interrupt_kernel()  # so that the next call is not queued behind it
            try:  # requests run in order: once this empty one answers, the interrupted one is done
                self._client.execute_interactive("", timeout=self.timeout, allow_stdin=False)
            except TimeoutError:
                pass
            raise PeerKernelError(
                f"the peer kernel did not answer in {self.timeout} s (the code was interrupted)"
            ) from err
        except (RuntimeError, ValueError, TypeError, OSError) as err:
            raise PeerKernelError(f"the peer kernel could not run the code: {err}") from err
        if failure:
            raise PeerKernelError(f"the peer kernel's code raised {failure[0]}")
        return "".join(parts)

    def restart(self) -> None:
        """Restart the peer kernel: a new process, empty memory. Raises ``PeerKernelError``
        after ``shutdown()`` (start a new ``PeerKernel`` instead)."""
        if self._shut:
            raise PeerKernelError("the peer kernel was shut down; start a new PeerKernel")
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        self._manager.restart_kernel(now=True)
        self._connect()

    def shutdown(self) -> None:
        """End the peer kernel and remove its kernelspec. Idempotent."""
        self._shut = True
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        try:
            if self._manager.has_kernel:
                self._manager.shutdown_kernel(now=True)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
