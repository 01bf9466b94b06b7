"""The SO-101 arm's MuJoCo model (`scene.xml`) and the names that tie it to LeRobot's `SO101Follower`.

Joint and actuator names are LeRobot's motor names, in bus-id order (id 1..6). LeRobot normalizes the
five body joints in degrees (``use_degrees=True``, its default) or in [-100, 100], and the gripper in
[0, 100] (0 closed, 100 open); the servo-bus emulator (`sim.emulators.feetech`) maps servo ticks to these
joints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

SCENE_PATH = Path(__file__).with_name("scene.xml")
MOTOR_NAMES: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
MOTOR_IDS: dict[str, int] = {name: index + 1 for index, name in enumerate(MOTOR_NAMES)}
CAMERAS: tuple[str, ...] = ("front", "wrist")
REST_KEYFRAME = "rest"
TCP_SITE = "tcp"


def load_model() -> mujoco.MjModel:
    """Compile the SO-101 table scene."""
    return mujoco.MjModel.from_xml_path(str(SCENE_PATH))


@dataclass(frozen=True)
class So101Indices:
    """Where each motor's joint and actuator live in a compiled model, in `MOTOR_NAMES` order.

    Attributes:
        qpos: int ``[6]``, joint addresses in ``data.qpos``.
        qvel: int ``[6]``, joint addresses in ``data.qvel``.
        actuator: int ``[6]``, actuator ids (``data.ctrl``, ``model.actuator_gainprm``).
        joint_range: float ``[6, 2]``, joint limits in radians.

    """

    qpos: np.ndarray
    qvel: np.ndarray
    actuator: np.ndarray
    joint_range: np.ndarray

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> So101Indices:
        """Look the motors up by name; a model without one of them is an error naming it."""
        joints, actuators = [], []
        for name in MOTOR_NAMES:
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            actuator = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, name)
            if joint < 0 or actuator < 0:
                raise ValueError(f"model has no joint and actuator named {name!r}; expected {MOTOR_NAMES}")
            joints.append(joint)
            actuators.append(actuator)
        joint_ids = np.array(joints)
        return cls(
            qpos=model.jnt_qposadr[joint_ids].copy(),
            qvel=model.jnt_dofadr[joint_ids].copy(),
            actuator=np.array(actuators),
            joint_range=model.jnt_range[joint_ids].copy(),
        )
