"""A single-key e-stop on the controlling terminal: one key press, no Enter, stops the robot.

`KeyEstop` puts a terminal in cbreak mode (keys arrive one by one and are not echoed; Ctrl-C still sends
SIGINT, so the signal e-stop keeps working) and reads it in a daemon thread; any of its ``keys`` calls
``estop("key 'q'")`` (`real.safety.SafetyLayer.estop`). It only acts on a TTY: with stdin a pipe, a file
or ``/dev/null`` (a service, a test runner) `KeyEstop.start` does nothing and returns False. `KeyEstop.stop`
(or leaving the ``with`` block) restores the terminal's settings; call it before a hard exit too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)

DEFAULT_KEYS = "q "


def describe_keys(keys: str) -> str:
    """Human names of ``keys``: ``"q or space"``."""
    return " or ".join("space" if key == " " else key for key in keys)


class KeyEstop:
    """Calls ``estop(reason)`` when one of ``keys`` is pressed on the terminal ``fd`` (see the module)."""

    def __init__(self, estop: Callable[[str], None], keys: str = DEFAULT_KEYS, fd: int | None = None) -> None:
        """Describe the listener; nothing changes on the terminal until `start`.

        Args:
            estop: called with the reason (``"key 'q'"``) at each press of a key in ``keys``.
            keys: the keys that stop, each one printable character (``"q "``: q or space).
            fd: the terminal's file descriptor (default: stdin's).

        Raises:
            ValueError: ``keys`` is empty or holds a character that is not printable (Enter, Ctrl-...).

        """
        if not keys or not all(key.isprintable() for key in keys):
            raise ValueError(f"e-stop keys must be printable characters ('q ': q or space), got {keys!r}")
        self.keys = keys
        self.presses = 0
        self._estop = estop
        self._fd = fd
        self._saved: list[Any] | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether the terminal is being listened to."""
        return self._thread is not None

    def start(self) -> bool:
        """Listen, if the file descriptor is a terminal; return whether it is (False: nothing was done).

        Raises:
            RuntimeError: already listening.

        """
        if self._thread is not None:
            raise RuntimeError("the key e-stop is already listening")
        fd = self._fd if self._fd is not None else _stdin_fd()
        if fd is None or not os.isatty(fd):
            return False
        self._fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)  # ISIG stays on: Ctrl-C is still SIGINT
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._listen, args=(fd, self._wake[0]), name="estop-keys")
        self._thread.daemon = True
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop listening and restore the terminal's settings (idempotent; safe in a signal handler)."""
        with self._lock:
            thread, wake, saved = self._thread, self._wake, self._saved
            self._thread, self._wake, self._saved = None, None, None
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake[1], b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        if saved is not None and self._fd is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self._fd, termios.TCSADRAIN, saved)
        if wake is not None:
            for end in wake:
                with contextlib.suppress(OSError):
                    os.close(end)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _listen(self, fd: int, wake: int) -> None:
        while True:
            try:
                readable, _, _ = select.select([fd, wake], [], [])
                if wake in readable:
                    return
                data = os.read(fd, 64)
            except OSError as error:  # the terminal went away (hang-up)
                logger.warning("key e-stop: the terminal is gone (%s); keys no longer stop the robot", error)
                return
            if not data:
                return
            for key in data.decode(errors="replace"):
                if key in self.keys:
                    self.presses += 1
                    self._estop(f"key {key!r}")


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno() if sys.stdin is not None else None
    except (OSError, ValueError):  # replaced by an object without a descriptor, or closed
        return None
