"""The SO-101 table as a batched environment: N arms stepped in parallel in one process.

Two action modes (``action_mode``), each dimension in [-1, 1]:

- ``joint`` (6-D): absolute joint position targets in `MOTOR_NAMES` order, each joint's range mapped
  linearly onto [-1, 1] (`joints_to_normalized`). LeRobot's ``SO101Follower`` takes the same targets in
  degrees (body joints) and 0..100 (gripper, 0 closed), which span the same ranges, so a policy's
  action maps one to one onto the real arm's (`real.arm.so101`).
- ``ee`` (7-D, the arm suite's and LIBERO's layout): a TCP translation ``[0:3]`` (x `MAX_TRANSLATION`
  metres per step) and rotation ``[3:6]`` (axis-angle, world frame, x `MAX_ROTATION` rad per step)
  from the pose of the last joint targets, turned into new body-joint targets by damped least squares
  on the TCP's Jacobian (`EndEffectorControl`; the five joints cannot follow every 6-D twist, so it is
  met in the least-squares sense), and the gripper's normalized position target ``[6]`` as in
  ``joint``. The real arm uses the same mapping on the last command it sent.

The servos are the MuJoCo position actuators with the gains LeRobot configures on the STS3215 (P 16,
D 32), as the servo-bus emulator (`sim.emulators.feetech`) sets them; control runs at 20 Hz (25 physics
steps of 2 ms).

Observation: ``observation.state`` float32 ``[N, 6]``, the joint positions normalized as the action
(what LeRobot reads from the servos); ``observation.images.front`` / ``observation.images.wrist`` uint8
``[N, H, W, 3]`` when asked for; ``task`` (N instructions). Reward: 1.0 on the step the task is solved,
else 0; an episode terminates on success and truncates at the task's ``max_steps``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Sequence

import gymnasium as gym
import mujoco
import numpy as np

from sim.core import AutoresetMode
from sim.mujoco.engine import STATE_SPEC, MujocoBatchedEnv
from sim.mujoco.rotations import yaw_from_quat
from sim.mujoco.so101.model import CAMERAS, MOTOR_NAMES, So101Indices, load_model
from sim.mujoco.so101.tasks import (
    ARM_JOINTS,
    SO101_TASKS,
    Expert,
    ExpertView,
    SceneReadings,
    So101Kinematics,
    initial_state,
)

CONTROL_HZ = 20
SUBSTEPS = 25  # 25 x 2 ms physics steps per control step
STATE_DIM = len(MOTOR_NAMES)
# LeRobot writes P_Coefficient 16 and D_Coefficient 32 to every servo; the emulator turns one unit into
# 62 N m/rad and 0.085 N m s/rad (sim.emulators.feetech.KP_PER_P / KV_PER_D; a test checks they agree).
SERVO_KP = 16 * 62.0
SERVO_KV = 32 * 0.085


@functools.cache
def joint_ranges() -> np.ndarray:
    """Each joint's range ``[6, 2]`` (radians), `MOTOR_NAMES` order: what -1 and +1 mean."""
    return So101Indices.from_model(load_model()).joint_range


def joints_to_normalized(joints: np.ndarray) -> np.ndarray:
    """Joint angles ``[..., 6]`` (radians) -> [-1, 1] per joint over its range (not clipped)."""
    low, high = joint_ranges().T
    return 2.0 * (np.asarray(joints) - low) / (high - low) - 1.0


def normalized_to_joints(values: np.ndarray, joints: int | slice = slice(None)) -> np.ndarray:
    """[-1, 1] values ``[..., 6]`` (or ``[...]`` of the one joint index ``joints``) -> radians."""
    low, high = joint_ranges()[joints].T
    return low + (np.asarray(values) + 1.0) * (high - low) / 2.0


class ActionMode(enum.StrEnum):
    """What a policy's action means on the SO-101 (see the module docstring)."""

    JOINT = "joint"
    EE = "ee"

    @property
    def dim(self) -> int:
        """Action dimensions: 6 (joint targets) or 7 (TCP twist + gripper)."""
        return len(MOTOR_NAMES) if self is ActionMode.JOINT else EE_ACTION_DIM


EE_ACTION_DIM = 7
MAX_TRANSLATION = 0.05  # metres per control step at |action| = 1
MAX_ROTATION = 0.5  # radians per control step at |action| = 1
EE_DAMPING = 1e-2
# Rotation rows of the least squares count this much (per rad) against the translation rows (per metre):
# where the five joints cannot meet both, the TCP goes where it is told and the gripper tilts a little
# (the scripted experts' inverse kinematics weighs orientation the same way).
EE_ROTATION_WEIGHT = 0.15


class EndEffectorControl:
    """``ee`` actions <-> SO-101 joint targets, relative to the last joint targets.

    ``joint_targets`` is the controller: new body-joint targets = last targets + the damped,
    rotation-weighted (`EE_ROTATION_WEIGHT`) least-squares solution of ``J dq = twist`` (J: the TCP's
    ``[6, 5]`` Jacobian at the last targets), within the joint limits. ``actions`` is its inverse for a
    given target (``twist = J (target - last)``, clipped to [-1, 1]): how scripted experts' and recorded
    joint targets become ``ee`` actions.

    The reference is the last command, not the measured joints: a position servo holds its joint short
    of the target under gravity, so targets re-based on the measured joints every step would let the
    arm sink while the policy commands no motion.
    """

    def __init__(self) -> None:
        self.kinematics = So101Kinematics()
        self._scale = np.array([MAX_TRANSLATION] * 3 + [MAX_ROTATION] * 3)
        self._row_weight = np.array([1.0] * 3 + [EE_ROTATION_WEIGHT] * 3)
        self._low, self._high = joint_ranges()[:ARM_JOINTS].T

    def joint_targets(self, actions: np.ndarray, last: np.ndarray) -> np.ndarray:
        """``ee`` actions ``[N, 7]`` after joint targets ``last`` ``[N, 6]`` (rad) -> targets ``[N, 6]``."""
        targets = np.empty((len(actions), len(MOTOR_NAMES)))
        for index, (action, reference) in enumerate(zip(actions, last, strict=True)):
            jacobian = self.kinematics.jacobian(reference) * self._row_weight[:, None]
            gram = jacobian @ jacobian.T + EE_DAMPING**2 * np.eye(6)
            step = jacobian.T @ np.linalg.solve(gram, action[:6] * self._scale * self._row_weight)
            targets[index, :ARM_JOINTS] = np.clip(reference[:ARM_JOINTS] + step, self._low, self._high)
        targets[:, ARM_JOINTS] = normalized_to_joints(actions[:, 6], joints=ARM_JOINTS)
        return targets

    def actions(self, targets: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Joint targets ``[N, 6]`` after joint targets ``last`` ``[N, 6]`` -> ``ee`` actions ``[N, 7]``."""
        actions = np.empty((len(targets), EE_ACTION_DIM))
        for index, (target, reference) in enumerate(zip(targets, last, strict=True)):
            twist = self.kinematics.jacobian(reference) @ (target - reference)[:ARM_JOINTS]
            actions[index, :6] = twist / self._scale
        actions[:, 6] = joints_to_normalized(targets)[:, ARM_JOINTS]
        return np.clip(actions, -1.0, 1.0)


def set_servo_gains(model: mujoco.MjModel, indices: So101Indices) -> None:
    """Give the model's position actuators LeRobot's servo gains (the scene ships them at zero)."""
    model.actuator_gainprm[indices.actuator, 0] = SERVO_KP
    model.actuator_biasprm[indices.actuator, 1] = -SERVO_KP
    model.actuator_biasprm[indices.actuator, 2] = -SERVO_KV


class So101BatchedEnv(MujocoBatchedEnv):
    """N SO-101 table scenes, stepped in parallel by MuJoCo's thread pool.

    Args:
        num_envs: N.
        tasks: task names, assigned to envs round-robin (default: every task).
        cameras: cameras rendered into observations (``front``, ``wrist``); empty for none.
        image_size: square image side in pixels.
        autoreset_mode: ``same_step`` or ``disabled`` (see `sim.core`).
        num_threads: MuJoCo rollout threads (default: one per core).
        render_workers: render processes (default: one per core from 4 envs, else in-process).
        max_steps: episode limit in control steps for every task (default: each task's own).
        action_mode: ``joint`` (6-D joint targets) or ``ee`` (7-D TCP twist + gripper).

    """

    SUITE = "so101"
    TASK_NAMES = tuple(SO101_TASKS)
    CAMERA_NAMES = CAMERAS
    ENVIRONMENT_STATE_DIM = 5  # the block's position and yaw: `_environment_state`

    def __init__(
        self,
        num_envs: int = 16,
        tasks: Sequence[str] | None = None,
        cameras: Sequence[str] = CAMERAS,
        image_size: int = 96,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        num_threads: int | None = None,
        render_workers: int | None = None,
        max_steps: int | None = None,
        action_mode: ActionMode | str = ActionMode.JOINT,
    ) -> None:
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if action_mode not in tuple(ActionMode):
            choices = [str(mode) for mode in ActionMode]
            raise ValueError(f"action_mode must be one of {choices}, got {action_mode!r}")
        self.action_mode = ActionMode(action_mode)
        self._ee_control = EndEffectorControl() if self.action_mode is ActionMode.EE else None
        self._command = np.zeros((num_envs, STATE_DIM))  # the last joint targets (the ee reference)
        model = load_model()
        self._indices = So101Indices.from_model(model)
        set_servo_gains(model, self._indices)
        super().__init__(
            num_envs,
            tasks,
            cameras,
            image_size,
            autoreset_mode,
            task_specs={
                name: task.spec if max_steps is None else dataclasses.replace(task.spec, max_steps=max_steps)
                for name, task in SO101_TASKS.items()
            },
            model=model,
            substeps=SUBSTEPS,
            control_hz=CONTROL_HZ,
            action_dim=self.action_mode.dim,
            # Joints can be pushed a little past their limits (MuJoCo's limits are soft).
            state_space=gym.spaces.Box(-1.1, 1.1, (STATE_DIM,), np.float32),
            num_threads=num_threads,
            render_workers=render_workers,
        )
        self._block_address = int(model.joint("block").qposadr[0])
        self._qpos_offset = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)
        if STATE_SPEC & mujoco.mjtState.mjSTATE_QPOS == 0:  # pragma: no cover - engine invariant
            raise RuntimeError("the engine's state must contain qpos")
        self._nq = model.nq
        kinematics = So101Kinematics()
        self._views = [ExpertView(kinematics) for _ in range(self.num_envs)]
        self._experts: list[Expert | None] = [None] * self.num_envs

    def expert_action(self) -> np.ndarray:
        """The scripted experts' actions ``[N, A]`` for the current states (advances each expert).

        The experts plan joint targets; in the ``ee`` action mode these become the twists that reach
        them from the last targets (`EndEffectorControl.actions`).
        """
        self._check_open()
        readings = self.readings()
        targets = np.zeros((self.num_envs, STATE_DIM))
        for env_index in range(self.num_envs):
            view = self._views[env_index]
            view.update(readings, env_index)
            expert = self._experts[env_index]
            target = next(expert, None) if expert is not None else None
            if target is None:  # the plan is over: hold the last targets
                self._experts[env_index] = None
                target = view.command
            targets[env_index] = target
        if self._ee_control is not None:
            return self._ee_control.actions(targets, self._command).astype(np.float32)
        return np.clip(joints_to_normalized(targets), -1.0, 1.0).astype(np.float32)

    def readings(self) -> SceneReadings:
        """Joint angles and block poses of the N scenes, from the physics state."""
        qpos = self.sim.state[:, self._qpos_offset : self._qpos_offset + self._nq]
        return SceneReadings.from_qpos(qpos, self._indices, self._block_address)

    # ------------------------------------------------------------------------------------------------
    # The suite's part of `MujocoBatchedEnv`

    def _reset_scene(self, env_index: int, task: str, state_id: int) -> None:
        state = initial_state(task, self._split, state_id)
        self.sim.set_env(env_index, state.scene_qpos(self.sim.base_model))
        view = self._views[env_index]
        view.update(self.readings(), env_index)
        view.command = state.arm_qpos.copy()
        self._command[env_index] = state.arm_qpos
        self._experts[env_index] = SO101_TASKS[task].expert(view)

    def _controls(self, actions: np.ndarray) -> np.ndarray:
        if self._ee_control is None:
            return normalized_to_joints(actions)
        self._command = self._ee_control.joint_targets(actions, self._command)
        return self._command

    def _task_success(self, task: str) -> np.ndarray:
        return SO101_TASKS[task].success(self.readings())

    def _state(self) -> np.ndarray:
        return joints_to_normalized(self.readings().arm_qpos).astype(np.float32)

    def _environment_state(self) -> np.ndarray:
        """The block's centre (metres, base frame), ``cos 4 yaw`` and ``sin 4 yaw``: float32 ``[N, 5]``.

        Four times the yaw, because a cube looks the same every quarter turn.
        """
        readings = self.readings()
        yaw = 4.0 * yaw_from_quat(readings.block_quat)
        return np.column_stack([readings.block_pos, np.cos(yaw), np.sin(yaw)]).astype(np.float32)
