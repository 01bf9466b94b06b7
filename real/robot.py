"""Robots as the deployment loop drives them: LeRobot's `Robot` and the policy's view of it.

The drivers are LeRobot's own (``connect``, ``get_observation``, ``send_action`` returning the action
really sent, ``disconnect``), so our robots and LeRobot's tooling work together. A `Platform` wraps one
and adds what a policy trained in our simulators needs: the mapping between the robot's units
(LeRobot's: degrees, 0..100 gripper) and the policy's normalized state and action spaces (the same as
the simulator's), the platform's safety limits in robot units, and how to recover its link after a
communication error. Platforms are looked up by name in `ROBOTS` (lazily: lerobot loads on use).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

from real.safety import PositionPredictor, SafetyLimits
from sim.registry import Registry

if TYPE_CHECKING:
    from lerobot.robots import Robot

ROBOTS = Registry("robot")
ROBOTS.register("so101", "real.arm.so101:So101Platform")


class Platform(abc.ABC):
    """One robot, seen through its action keys, unit mappings and safety limits.

    Attributes:
        robot: the LeRobot ``Robot`` (built, not yet connected).
        action_keys: the robot's action feature names, in the policy's state order (A of them); robot
            readings and commands are ``[A]`` arrays in this order.
        predict_position: the end-effector position ``[3]`` an action in robot units leads to (for the
            safety layer's workspace box), or None when the platform has no such kinematics.

    """

    robot: Robot
    action_keys: tuple[str, ...]
    predict_position: PositionPredictor | None = None

    @property
    def state_names(self) -> tuple[str, ...]:
        """The policy's state dimensions (S): the action keys without ``.pos``."""
        return tuple(key.removesuffix(".pos") for key in self.action_keys)

    @property
    def action_names(self) -> tuple[str, ...]:
        """The policy's action dimensions (P); by default the state's (the policy commands what it reads)."""
        return self.state_names

    @abc.abstractmethod
    def to_policy(self, values: np.ndarray) -> np.ndarray:
        """Robot readings ``[..., A]`` (robot units) -> the policy's normalized state ``[..., S]``."""

    @abc.abstractmethod
    def to_robot(self, action: np.ndarray, last: np.ndarray) -> np.ndarray:
        """The policy's action ``[P]`` -> the next command ``[A]`` in robot units.

        ``last`` ``[A]`` is the last command sent (at an episode's start: the robot's reading), the
        reference of actions that are relative to it.
        """

    def action_to_policy(self, sent: np.ndarray, last: np.ndarray) -> np.ndarray:
        """The command really sent ``[A]`` after ``last`` ``[A]`` -> the policy action ``[P]`` it amounts to.

        What the deployment records as the episode's action. By default the state mapping of ``sent``
        (right for platforms whose policy commands absolute positions).
        """
        return self.to_policy(sent)

    @abc.abstractmethod
    def safety_limits(self, control_period_s: float, watchdog_timeout_s: float) -> SafetyLimits:
        """Range, slew (per control period) and workspace limits in robot units, for `real.safety`."""

    def connect(self) -> None:
        """Connect the robot (never prompting: an uncalibrated robot is an error)."""
        self.robot.connect(calibrate=False)
        if not self.robot.is_calibrated:
            raise RuntimeError(f"{self.robot} is not calibrated; calibrate it with LeRobot first")

    def disconnect(self) -> None:
        """Disconnect the robot if it is connected."""
        if self.robot.is_connected:
            self.robot.disconnect()

    def recover_link(self) -> bool:
        """Clean up after a communication error; whether there was anything to do (default: no)."""
        return False

    def discard_stale_input(self) -> int:
        """Drop bytes that arrived while no request was outstanding; how many (default: none)."""
        return 0

    def values(self, features: dict[str, Any]) -> np.ndarray:
        """The action keys' values ``[A]`` (float64) of an observation or action dict."""
        missing = [key for key in self.action_keys if key not in features]
        if missing:
            raise KeyError(f"{self.robot} gave no {missing}; it has {sorted(features)}")
        return np.array([float(features[key]) for key in self.action_keys])

    def action(self, values: np.ndarray) -> dict[str, float]:
        """An action dict for ``send_action`` from values ``[A]`` in robot units."""
        return {key: float(value) for key, value in zip(self.action_keys, values, strict=True)}

    def state(self, observation: dict[str, Any]) -> np.ndarray:
        """The policy's ``observation.state`` float32 ``[S]`` from a robot observation."""
        return self.to_policy(self.values(observation)).astype(np.float32)
