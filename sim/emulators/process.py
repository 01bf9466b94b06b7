"""An emulated device in a child process of its own, controlled over a pipe.

Each emulator (the servo bus, the camera server) runs where the interpreter lock of the process driving
it cannot delay it, as a real device would. `DeviceProcess` starts it from the fork server (children
start in milliseconds once the server runs), waits until it says it is ready, sends it requests and
stops it. The child's side of the protocol:

- its target is called as ``target(connection, *args)`` and first sends ``(True, value)`` once it is ready
  (`DeviceProcess.start` returns ``value``, e.g. a port) or ``(False, error)`` if it could not start
  (raised in the parent);
- then it answers every request tuple with ``(True, result)`` or ``(False, error)`` (raised in the
  caller), and answers ``("close",)`` with ``(True, None)`` before it exits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # the first start also starts the fork server, which imports the preloads
CLOSE_TIMEOUT_S = 5.0


class DeviceProcess:
    """Starts, talks to and stops one emulator process (see the module docstring)."""

    def __init__(self, label: str, preload: Sequence[str] = ()) -> None:
        """Describe the process; nothing runs until `start`.

        Args:
            label: what the device is called in messages (``"the camera server"``).
            preload: modules the fork server imports once, so that children start without importing them.

        """
        self.label = label
        self._preload = list(preload)
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    @property
    def process(self) -> BaseProcess | None:
        """The child process while running (None otherwise)."""
        return self._process

    @property
    def running(self) -> bool:
        """Whether the process was started and not closed."""
        return self._connection is not None

    def start(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> Any:
        """Start ``target(connection, *args)`` in a child process; return the value it sends when ready.

        Raises:
            RuntimeError: already running, or the child did not get ready within `START_TIMEOUT_S` or
                exited first.
            Exception: the error the child sent instead of being ready.

        """
        if self._process is not None:
            raise RuntimeError(f"{self.label} is already running")
        context = multiprocessing.get_context("forkserver")
        if self._preload:
            context.set_forkserver_preload(self._preload)
        ours, theirs = context.Pipe()
        process = context.Process(target=target, args=(theirs, *args), name=name, daemon=True)
        process.start()
        theirs.close()
        self._process, self._connection = process, ours
        try:
            if not ours.poll(START_TIMEOUT_S):
                raise RuntimeError(f"{self.label} did not start within {START_TIMEOUT_S} s")
            ok, value = ours.recv()
        except EOFError as error:
            self.close()
            raise RuntimeError(f"{self.label} exited while starting (its error is on stderr)") from error
        except BaseException:
            self.close()
            raise
        if not ok:
            self.close()
            raise value
        return value

    def call(self, *request: Any) -> Any:
        """Send ``request`` and return the child's result (thread-safe).

        Raises:
            RuntimeError: not running, or the process is gone.
            Exception: the error the child answered with.

        """
        if self._connection is None:
            raise RuntimeError(f"{self.label} is not running: call start() or use it as a context manager")
        with self._lock:
            try:
                self._connection.send(request)
                ok, value = self._connection.recv()
            except (OSError, EOFError) as error:
                raise RuntimeError(f"{self.label} process is gone") from error
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Ask the child to exit, wait for it, kill it if it does not (idempotent)."""
        process, connection = self._process, self._connection
        self._process, self._connection = None, None
        if connection is not None:
            with contextlib.suppress(OSError, EOFError):
                connection.send(("close",))
                connection.poll(CLOSE_TIMEOUT_S)
            connection.close()
        if process is not None:
            process.join(CLOSE_TIMEOUT_S)
            if process.is_alive():
                logger.warning("%s did not stop; killing it", self.label)
                process.kill()
                process.join()
