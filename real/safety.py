"""The safety layer between a policy and any robot driver: every action sent to hardware passes `filter`.

Rules, in the order `SafetyLayer.filter` applies them to an action ``[A]``:

1. ``nonfinite``: an action with NaN or inf is replaced by the hold action (and does not feed the watchdog);
2. ``range``: each dimension is clipped to ``[low, high]``;
3. ``slew``: each dimension moves at most ``max_step`` from the previous safe action;
4. ``workspace``: an action whose predicted end-effector position leaves the box is replaced by the hold
   action;
5. ``stopped``: after a stop (watchdog, e-stop, signal, key) every action is the hold action until `reset`.

The hold action is ``SafetyLimits.hold_action`` when set (zero motion for delta / velocity action spaces),
otherwise the previous safe action (absolute targets: stay where last commanded). The watchdog stops the
robot when no valid command came for ``watchdog_timeout_s``: call `SafetyLayer.check` every control tick.
A stop calls ``on_stop(reason)`` once. Each intervention is logged and counted by kind in
`SafetyLayer.counts`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import TextIO

import numpy as np

logger = logging.getLogger(__name__)

INTERVENTIONS = ("nonfinite", "range", "slew", "workspace", "stopped", "watchdog", "estop")

type PositionPredictor = Callable[[np.ndarray], np.ndarray]


def _vector(value: object, name: str, size: int | None = None) -> np.ndarray:
    array = np.array(value, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or (size is not None and array.shape != (size,)):
        raise ValueError(f"SafetyLimits.{name} must have shape ({size or 'A'},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"SafetyLimits.{name} must be finite, got {array}")
    return array


@dataclass(frozen=True)
class SafetyLimits:
    """Limits for an action space of A dimensions.

    Attributes:
        low: float ``[A]``, lowest allowed value per dimension.
        high: float ``[A]``, highest allowed value per dimension.
        max_step: float ``[A]``, largest change per step (slew limit); None for no slew limit.
        workspace_low: float ``[3]``, lower corner of the end-effector box (metres); None for no box.
        workspace_high: float ``[3]``, upper corner of the end-effector box; set with ``workspace_low``.
        watchdog_timeout_s: longest time without a valid command before the robot is stopped.
        hold_action: float ``[A]``, the action that holds the robot still; None to repeat the last safe
            action (absolute position targets).

    """

    low: np.ndarray
    high: np.ndarray
    max_step: np.ndarray | None = None
    workspace_low: np.ndarray | None = None
    workspace_high: np.ndarray | None = None
    watchdog_timeout_s: float = 0.5
    hold_action: np.ndarray | None = None

    def __post_init__(self) -> None:
        low = _vector(self.low, "low")
        size = low.shape[0]
        vectors = {"low": low, "high": _vector(self.high, "high", size)}
        for name, name_size in (("max_step", size), ("workspace_low", 3), ("workspace_high", 3)):
            if getattr(self, name) is not None:
                vectors[name] = _vector(getattr(self, name), name, name_size)
        if self.hold_action is not None:
            vectors["hold_action"] = _vector(self.hold_action, "hold_action", size)
        for name, vector in vectors.items():
            object.__setattr__(self, name, vector)

        if np.any(self.low > self.high):
            raise ValueError(f"SafetyLimits needs low <= high, got low={self.low} high={self.high}")
        if self.max_step is not None and np.any(self.max_step <= 0):
            raise ValueError(f"SafetyLimits.max_step must be > 0, got {self.max_step}")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("SafetyLimits.workspace_low and workspace_high must be set together")
        if self.workspace_low is not None and np.any(self.workspace_low > self.workspace_high):
            raise ValueError(
                f"SafetyLimits needs workspace_low <= workspace_high, got {self.workspace_low} "
                f"{self.workspace_high}"
            )
        hold = self.hold_action
        if hold is not None and (np.any(hold < self.low) or np.any(hold > self.high)):
            raise ValueError(f"SafetyLimits.hold_action {hold} is outside [low, high]")
        if not (math.isfinite(self.watchdog_timeout_s) and self.watchdog_timeout_s > 0):
            raise ValueError(f"SafetyLimits.watchdog_timeout_s must be > 0, got {self.watchdog_timeout_s}")

    @property
    def action_dim(self) -> int:
        """A, the number of action dimensions."""
        return self.low.shape[0]


class SafetyLayer:
    """Filters actions through `SafetyLimits`, runs the command watchdog and the e-stop.

    Not thread-safe except `estop` (signal handlers and the key thread call it); call `filter` and `check`
    from the control loop.
    """

    def __init__(
        self,
        limits: SafetyLimits,
        on_stop: Callable[[str], None] | None = None,
        hard_exit: Callable[[int], None] = os._exit,
    ) -> None:
        """Create a layer; it needs `reset` before `filter` unless ``limits.hold_action`` is set.

        Args:
            limits: the limits to enforce.
            on_stop: called once with the reason when the robot must stop (watchdog, e-stop, signal, key).
            hard_exit: called with an exit status on a second SIGINT / SIGTERM (tests inject a fake).

        """
        self.limits = limits
        self.counts: dict[str, int] = dict.fromkeys(INTERVENTIONS, 0)
        self._on_stop = on_stop
        self._hard_exit = hard_exit
        self._last: np.ndarray | None = None if limits.hold_action is None else limits.hold_action.copy()
        self._last_command_time: float | None = None
        self._stop_reason: str | None = None
        self._stop_lock = threading.Lock()
        self._signals_seen = 0
        self._previous_handlers: dict[int, signal._HANDLER] = {}

    @property
    def stopped(self) -> bool:
        """Whether the robot was stopped (every action is the hold action until `reset`)."""
        return self._stop_reason is not None

    def reset(self, reference: np.ndarray) -> None:
        """Arm the layer: ``reference`` ``[A]`` (e.g. the robot's present position) is the previous action.

        Clears a stop and the watchdog (it re-arms at the next valid command).
        """
        self._last = self._check_shape(reference, "reference").copy()
        self._last_command_time = None
        with self._stop_lock:
            self._stop_reason = None
        self._signals_seen = 0

    def filter(
        self, action: np.ndarray, now: float, predict_position: PositionPredictor | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Make ``action`` safe.

        Args:
            action: float ``[A]``, the policy's action.
            now: the time of the command (seconds, the clock `check` uses).
            predict_position: maps a candidate action ``[A]`` to the end-effector position ``[3]`` it leads
                to (the platform's kinematics and present state); required when a workspace box is set.

        Returns:
            The action to send ``[A]`` (float64) and the kinds of intervention applied, in rule order.

        Raises:
            ValueError: the action has the wrong shape, or a workspace box is set without a predictor.
            RuntimeError: no reference yet (call `reset`, or set ``hold_action``).

        """
        candidate = self._check_shape(action, "action")
        last = self._last
        if last is None:
            raise RuntimeError("SafetyLayer has no reference action: call reset(present_position) first")
        limits = self.limits
        hold = last if limits.hold_action is None else limits.hold_action
        if self.stopped:
            self._record("stopped", logging.DEBUG, f"robot stopped ({self._stop_reason}); holding")
            return hold.copy(), ("stopped",)
        if not np.all(np.isfinite(candidate)):
            self._record("nonfinite", logging.WARNING, f"non-finite action {candidate}; holding")
            return hold.copy(), ("nonfinite",)

        applied: list[str] = []
        safe = np.clip(candidate, limits.low, limits.high)
        if not np.array_equal(safe, candidate):
            applied.append("range")
            self._record("range", logging.INFO, f"action {candidate} clipped to {safe}")
        if limits.max_step is not None:
            stepped = np.clip(safe, last - limits.max_step, last + limits.max_step)
            if not np.array_equal(stepped, safe):
                applied.append("slew")
                self._record("slew", logging.INFO, f"action {safe} slew-limited to {stepped}")
            safe = stepped
        if limits.workspace_low is not None and limits.workspace_high is not None:
            if predict_position is None:
                raise ValueError("a workspace box is set: filter() needs predict_position")
            position = np.asarray(predict_position(safe), dtype=np.float64)
            if position.shape != (3,) or not np.all(np.isfinite(position)):
                raise ValueError(f"predict_position must return a finite [3] position, got {position}")
            if np.any(position < limits.workspace_low) or np.any(position > limits.workspace_high):
                applied.append("workspace")
                self._record("workspace", logging.WARNING, f"action {safe} leads to {position}; holding")
                safe = hold.copy()

        self._last = safe
        self.feed(now)
        return safe.copy(), tuple(applied)

    def feed(self, now: float) -> None:
        """Record a valid command at ``now``: the watchdog counts from here (`filter` calls it)."""
        self._last_command_time = now

    def check(self, now: float) -> bool:
        """Stop the robot if no valid command came within the timeout; return whether it is stopped.

        The watchdog arms at the first valid command after `reset`.
        """
        last = self._last_command_time
        if not self.stopped and last is not None and now - last > self.limits.watchdog_timeout_s:
            reason = f"no valid command for {now - last:.3f} s"
            self._record("watchdog", logging.ERROR, reason)
            self._stop(f"watchdog: {reason}")
        return self.stopped

    def estop(self, reason: str) -> None:
        """Emergency stop: call ``on_stop`` (once) and hold from now on, until `reset`."""
        self._record("estop", logging.ERROR, reason)
        self._stop(f"e-stop: {reason}")

    def install_signal_handlers(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Make the first of these signals an e-stop and the second a hard exit (status 128 + signal).

        Call from the main thread; `restore_signal_handlers` puts the previous handlers back.
        """
        for signum in signals:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def restore_signal_handlers(self) -> None:
        """Put back the handlers that `install_signal_handlers` replaced."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def start_key_listener(self, stream: TextIO, key: str = "q") -> threading.Thread:
        """E-stop when a line read from ``stream`` (e.g. ``sys.stdin``) is ``key``; off unless called.

        The listener is a daemon thread that ends at the key or at the end of the stream.
        """
        if not key.strip():
            raise ValueError("the e-stop key must be a visible character or word")

        def listen() -> None:
            for line in stream:
                if line.strip() == key:
                    self.estop(f"key {key!r}")
                    return

        thread = threading.Thread(target=listen, name="estop-key", daemon=True)
        thread.start()
        return thread

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        if self._signals_seen == 1:
            self.estop(f"signal {name} (send it again to exit at once)")
        else:
            logger.critical("second %s: exiting at once", name)
            self._hard_exit(128 + signum)

    def _stop(self, reason: str) -> None:
        with self._stop_lock:
            if self._stop_reason is not None:
                return
            self._stop_reason = reason
        if self._on_stop is not None:
            self._on_stop(reason)

    def _record(self, kind: str, level: int, message: str) -> None:
        self.counts[kind] += 1
        logger.log(level, "safety %s: %s", kind, message)

    def _check_shape(self, action: np.ndarray, name: str) -> np.ndarray:
        array = np.asarray(action, dtype=np.float64)
        if array.shape != (self.limits.action_dim,):
            raise ValueError(f"{name} must have shape ({self.limits.action_dim},), got {array.shape}")
        return array
