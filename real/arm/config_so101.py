"""Configuration of the SO-101 arm: its bus, calibration, cameras and safety limits (plain values)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.mujoco.so101.env import ActionMode


@dataclass
class So101Config:
    """The SO-101 follower arm (LeRobot's ``SO101Follower``) and what the deployment needs to drive it.

    Attributes:
        name: robot registry name.
        port: serial port of the servo bus (``/dev/ttyACM0``; the HIL harness sets the emulator's).
        id: calibration id: LeRobot reads ``<calibration_dir>/<id>.json``.
        calibration_dir: where the calibration lives; null means LeRobot's default folder.
        action_mode: what the policy's action means: ``joint`` (6-D absolute joint targets) or ``ee``
            (7-D TCP twist from the last command + gripper target); the mode the policy was trained in.
        cameras: camera name -> source (device index, video file or stream URL); names must be the
            policy's cameras.
        reply_timeout_ms: how long the bus driver waits for a servo's status packet (LeRobot: 50 ms).
        num_read_retries: extra attempts of a failed position read (LeRobot's default 2).
        max_relative_target: LeRobot's own cap on a goal's distance from the present position (degrees);
            null leaves it off (the safety layer's slew limit applies either way).
        max_joint_speed_deg_s: slew limit of the body joints' targets, degrees per second.
        max_gripper_speed: slew limit of the gripper target, in 0..100 units per second.
        workspace_low: lower corner (x, y, z, metres, base frame) of the box the TCP must stay in.
        workspace_high: upper corner of that box.

    """

    name: str = "so101"
    port: str = ""
    id: str = "so101"
    calibration_dir: str | None = None
    action_mode: str = "joint"
    cameras: dict[str, str] = field(default_factory=dict)
    reply_timeout_ms: float = 50.0
    num_read_retries: int = 2
    max_relative_target: float | None = None
    max_joint_speed_deg_s: float = 180.0
    max_gripper_speed: float = 400.0
    workspace_low: list[float] = field(default_factory=lambda: [-0.15, -0.4, 0.005])
    workspace_high: list[float] = field(default_factory=lambda: [0.5, 0.4, 0.5])

    def __post_init__(self) -> None:
        if self.action_mode not in tuple(ActionMode):
            choices = ", ".join(ActionMode)
            raise ValueError(f"robot.action_mode must be one of {choices}, got {self.action_mode!r}")
        if not self.id.strip():
            raise ValueError("robot.id must name the calibration (e.g. my_so101)")
        for key, value in (
            ("robot.reply_timeout_ms", self.reply_timeout_ms),
            ("robot.max_joint_speed_deg_s", self.max_joint_speed_deg_s),
            ("robot.max_gripper_speed", self.max_gripper_speed),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be > 0, got {value}")
        if self.num_read_retries < 0:
            raise ValueError(f"robot.num_read_retries must be >= 0, got {self.num_read_retries}")
        if self.max_relative_target is not None and not self.max_relative_target > 0:
            raise ValueError(f"robot.max_relative_target must be > 0 or null, got {self.max_relative_target}")
        for key in ("workspace_low", "workspace_high"):
            values = getattr(self, key)
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"robot.{key} must be 3 finite numbers (x, y, z in metres), got {values}")
        if any(low >= high for low, high in zip(self.workspace_low, self.workspace_high, strict=True)):
            raise ValueError(
                f"robot.workspace_low {self.workspace_low} must be below workspace_high {self.workspace_high}"
            )
