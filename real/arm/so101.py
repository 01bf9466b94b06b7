"""The SO-101 arm: LeRobot's ``SO101Follower`` built from `So101Config`, and its policy-space mapping.

Units. LeRobot's SO-101 action and observation are ``<motor>.pos`` for the six motors: the five body
joints in degrees (``use_degrees=True``: 0 is the calibrated middle pose, which is the MuJoCo model's
joint zero) and the gripper in 0..100 (0 closed) over its calibrated range. The policy's state is the
simulator's (`sim.mujoco.so101.env`): each joint's range in the model mapped onto [-1, 1]. So a body
joint's value is ``degrees(normalized_to_joints(s))`` and the gripper's is ``50 (s + 1)``. The policy's
action is the simulator's in ``robot.action_mode``: ``joint`` (the state's space: absolute targets) or
``ee`` (a TCP twist from the last command sent, turned into joint targets by the simulator's own
controller, `EndEffectorControl`, plus the gripper target).

The safety layer works in LeRobot's units: range = the model's joint ranges, slew = the configured
speeds times the control period, workspace = a box the TCP (forward kinematics on the model) must
stay in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from real.arm.config_so101 import So101Config
from real.robot import Platform
from real.safety import SafetyLimits
from sim.mujoco.so101.env import (
    ActionMode,
    EndEffectorControl,
    joint_ranges,
    joints_to_normalized,
    normalized_to_joints,
)
from sim.mujoco.so101.model import MOTOR_NAMES
from sim.mujoco.so101.tasks import So101Kinematics

if TYPE_CHECKING:
    from lerobot.robots.so_follower import SO101Follower

GRIPPER = len(MOTOR_NAMES) - 1


def make_so101_follower(config: So101Config) -> SO101Follower:
    """LeRobot's ``SO101Follower`` for ``config`` (no cameras: the deployment reads them itself).

    The bus driver's wait for each status packet becomes ``config.reply_timeout_ms`` (plus the wire time
    of the packet), in place of LeRobot's fixed 50 ms.

    Raises:
        ValueError: no port is set.

    """
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    if not config.port:
        raise ValueError(
            "robot.port is not set: give the servo bus's serial port, e.g. robot.port=/dev/ttyACM0"
        )
    follower = SO101Follower(
        SO101FollowerConfig(
            port=config.port,
            id=config.id,
            calibration_dir=Path(config.calibration_dir) if config.calibration_dir else None,
            use_degrees=True,
            max_relative_target=config.max_relative_target,
            num_read_retries=config.num_read_retries,
        )
    )
    handler = follower.bus.port_handler
    reply_timeout_ms = config.reply_timeout_ms

    # The same formula as LeRobot's own patch of the Feetech SDK (lerobot.motors.feetech.feetech), with
    # the reply allowance configurable.
    def set_packet_timeout(packet_length: int) -> None:
        handler.packet_start_time = handler.getCurrentTime()
        handler.packet_timeout = handler.tx_time_per_byte * (packet_length + 3) + reply_timeout_ms

    handler.setPacketTimeout = set_packet_timeout
    return follower


class So101Platform(Platform):
    """The SO-101 as the deployment loop drives it (see the module docstring)."""

    def __init__(self, config: So101Config) -> None:
        """Build the follower (not connected) and the model's kinematics for the workspace check."""
        self.config = config
        self.robot = make_so101_follower(config)
        self.action_keys = tuple(f"{motor}.pos" for motor in MOTOR_NAMES)
        self.action_mode = ActionMode(config.action_mode)
        self._kinematics = So101Kinematics()
        self._ee_control = EndEffectorControl() if self.action_mode is ActionMode.EE else None
        self.predict_position = self._tcp_position

    @property
    def action_names(self) -> tuple[str, ...]:
        """``joint``: the motors; ``ee``: the TCP twist's six components and the gripper."""
        if self.action_mode is ActionMode.JOINT:
            return self.state_names
        return ("ee.x", "ee.y", "ee.z", "ee.rx", "ee.ry", "ee.rz", "gripper")

    def to_policy(self, values: np.ndarray) -> np.ndarray:
        """LeRobot units ``[..., 6]`` (degrees, gripper 0..100) -> the normalized state ``[..., 6]``."""
        return joints_to_normalized(robot_units_to_joints(values))

    def to_robot(self, action: np.ndarray, last: np.ndarray) -> np.ndarray:
        """The policy's action (``joint``: ``[6]``, ``ee``: ``[7]``) after ``last`` -> LeRobot units."""
        action = np.asarray(action, dtype=np.float64)
        if self._ee_control is None:
            return joints_to_robot_units(normalized_to_joints(action))
        last_joints = robot_units_to_joints(last)
        return joints_to_robot_units(self._ee_control.joint_targets(action[None], last_joints[None])[0])

    def action_to_policy(self, sent: np.ndarray, last: np.ndarray) -> np.ndarray:
        """The command sent ``[6]`` after ``last`` ``[6]`` (LeRobot units) -> the policy action it is."""
        if self._ee_control is None:
            return self.to_policy(sent)
        targets, last_joints = robot_units_to_joints(sent), robot_units_to_joints(last)
        return self._ee_control.actions(targets[None], last_joints[None])[0]

    def safety_limits(self, control_period_s: float, watchdog_timeout_s: float) -> SafetyLimits:
        """The model's joint ranges, the configured speeds per control period, the TCP workspace box."""
        low, high = joints_to_robot_units(joint_ranges().T)
        speeds = [self.config.max_joint_speed_deg_s] * GRIPPER + [self.config.max_gripper_speed]
        return SafetyLimits(
            low=low,
            high=high,
            max_step=np.array(speeds) * control_period_s,
            workspace_low=np.array(self.config.workspace_low),
            workspace_high=np.array(self.config.workspace_high),
            watchdog_timeout_s=watchdog_timeout_s,
        )

    def connect(self) -> None:
        """Connect and configure the servos; on failure the port is closed again (nothing half open).

        Raises:
            ConnectionError: the port cannot be opened or a servo does not answer.
            RuntimeError: a servo is missing, or the arm is not calibrated (LeRobot's calibration file
                for ``config.id`` is missing or does not match the servos).

        """
        try:
            super().connect()
        except BaseException:
            handler = self.robot.bus.port_handler
            if handler.is_open:
                handler.closePort()
            raise

    def recover_link(self) -> bool:
        """Drop whatever sits in the serial input buffer after a failed exchange; whether it could.

        A late or partial status packet left there would be parsed as the answer to the next request
        (LeRobot's driver never flushes it), so every read after an error could fail or read stale data.
        """
        serial_port = self.robot.bus.port_handler.ser
        if serial_port is None or not serial_port.is_open:
            return False
        serial_port.reset_input_buffer()
        return True

    def discard_stale_input(self) -> int:
        """Drop status packets that arrived after their read gave up; how many bytes.

        When a try of LeRobot's sync read times out and its retry succeeds on the late replies of that
        try, the retry's own replies stay in the buffer, and every later read returns the previous read's
        positions (one tick stale; after a link cut, one more read "succeeds"). Nothing is outstanding
        between ticks, so whatever is buffered then is stale.
        """
        serial_port = self.robot.bus.port_handler.ser
        if serial_port is None or not serial_port.is_open:
            return 0
        waiting = serial_port.in_waiting
        if waiting:
            serial_port.reset_input_buffer()
        return waiting

    def _tcp_position(self, values: np.ndarray) -> np.ndarray:
        return self._kinematics.tcp(robot_units_to_joints(values))


def robot_units_to_joints(values: np.ndarray) -> np.ndarray:
    """LeRobot units ``[..., 6]`` (body joints in degrees, gripper 0..100) -> joint angles (radians)."""
    values = np.asarray(values, dtype=np.float64)
    joints = np.radians(values)
    low, high = joint_ranges()[GRIPPER]
    joints[..., GRIPPER] = low + values[..., GRIPPER] / 100.0 * (high - low)
    return joints


def joints_to_robot_units(joints: np.ndarray) -> np.ndarray:
    """Joint angles ``[..., 6]`` (radians) -> LeRobot units (body joints in degrees, gripper 0..100)."""
    joints = np.asarray(joints, dtype=np.float64)
    values = np.degrees(joints)
    low, high = joint_ranges()[GRIPPER]
    values[..., GRIPPER] = 100.0 * (joints[..., GRIPPER] - low) / (high - low)
    return values
