"""The SO-101 table as a batched environment: N arms stepped in parallel in one process.

Action (6-D, each in [-1, 1]): absolute joint position targets in `MOTOR_NAMES` order, each joint's
range mapped linearly onto [-1, 1] (`joints_to_normalized`). LeRobot's ``SO101Follower`` takes the same
targets in degrees (body joints) and 0..100 (gripper, 0 closed), which span the same ranges, so a
policy's action maps one to one onto the real arm's (`real.arm.so101`). The servos are the MuJoCo
position actuators with the gains LeRobot configures on the STS3215 (P 16, D 32), as the servo-bus
emulator (`sim.emulators.feetech`) sets them; control runs at 20 Hz (25 physics steps of 2 ms).

Observation: ``observation.state`` float32 ``[N, 6]``, the joint positions normalized as the action
(what LeRobot reads from the servos); ``observation.images.front`` / ``observation.images.wrist`` uint8
``[N, H, W, 3]`` when asked for; ``task`` (N instructions). Reward: 1.0 on the step the task is solved,
else 0; an episode terminates on success and truncates at the task's ``max_steps``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import string
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.vector.utils import batch_space

from sim.core import (
    OBS_STATE,
    TASK,
    AutoresetMode,
    BatchedEnv,
    InitStateSplit,
    check_seed,
    image_key,
    parse_reset_options,
    validate_actions,
)
from sim.mujoco.engine import STATE_SPEC, BatchedRenderer, BatchedSimulator
from sim.mujoco.so101.model import CAMERAS, MOTOR_NAMES, So101Indices, load_model
from sim.mujoco.so101.tasks import (
    SO101_TASKS,
    TASK_INDEX,
    Expert,
    ExpertView,
    SceneReadings,
    So101Kinematics,
    initial_state,
)

CONTROL_HZ = 20
SUBSTEPS = 25  # 25 x 2 ms physics steps per control step
ACTION_DIM = STATE_DIM = len(MOTOR_NAMES)
# LeRobot writes P_Coefficient 16 and D_Coefficient 32 to every servo; the emulator turns one unit into
# 62 N m/rad and 0.085 N m s/rad (sim.emulators.feetech.KP_PER_P / KV_PER_D; a test checks they agree).
SERVO_KP = 16 * 62.0
SERVO_KV = 32 * 0.085
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


@functools.cache
def joint_ranges() -> np.ndarray:
    """Each joint's range ``[6, 2]`` (radians), `MOTOR_NAMES` order: what -1 and +1 mean."""
    return So101Indices.from_model(load_model()).joint_range


def joints_to_normalized(joints: np.ndarray) -> np.ndarray:
    """Joint angles ``[..., 6]`` (radians) -> [-1, 1] per joint over its range (not clipped)."""
    low, high = joint_ranges().T
    return 2.0 * (np.asarray(joints) - low) / (high - low) - 1.0


def normalized_to_joints(values: np.ndarray) -> np.ndarray:
    """[-1, 1] values ``[..., 6]`` -> joint angles (radians)."""
    low, high = joint_ranges().T
    return low + (np.asarray(values) + 1.0) * (high - low) / 2.0


def set_servo_gains(model: mujoco.MjModel, indices: So101Indices) -> None:
    """Give the model's position actuators LeRobot's servo gains (the scene ships them at zero)."""
    model.actuator_gainprm[indices.actuator, 0] = SERVO_KP
    model.actuator_biasprm[indices.actuator, 1] = -SERVO_KP
    model.actuator_biasprm[indices.actuator, 2] = -SERVO_KV


class So101BatchedEnv(BatchedEnv):
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

    """

    TASK_NAMES = tuple(SO101_TASKS)
    CAMERA_NAMES = CAMERAS

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
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        task_names = tuple(tasks) if tasks is not None else tuple(SO101_TASKS)
        unknown = sorted(set(task_names) - set(SO101_TASKS))
        if unknown or not task_names:
            raise ValueError(
                f"unknown so101 task(s) {unknown or task_names}; known tasks: {', '.join(SO101_TASKS)}"
            )
        unknown_cameras = sorted(set(cameras) - set(CAMERAS))
        if unknown_cameras:
            raise ValueError(f"unknown camera(s) {unknown_cameras}; the so101 scene has {', '.join(CAMERAS)}")
        if not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be within [16, 512] pixels, got {image_size}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be 'SameStep' or 'Disabled', got {autoreset_mode!r}")

        self.num_envs = num_envs
        self.task_specs = {
            name: task.spec if max_steps is None else dataclasses.replace(task.spec, max_steps=max_steps)
            for name, task in SO101_TASKS.items()
        }
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.metadata = {"autoreset_mode": mode, "render_fps": CONTROL_HZ}
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        observation_spaces: dict[str, gym.Space[Any]] = {
            # Joints can be pushed a little past their limits (MuJoCo's limits are soft).
            OBS_STATE: gym.spaces.Box(-1.1, 1.1, (STATE_DIM,), np.float32),
            TASK: gym.spaces.Text(max_length=200, charset=INSTRUCTION_CHARSET),
        }
        for camera in self.cameras:
            observation_spaces[image_key(camera)] = gym.spaces.Box(
                0, 255, (image_size, image_size, 3), np.uint8
            )
        self.single_observation_space = gym.spaces.Dict(observation_spaces)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

        model = load_model()
        self._indices = So101Indices.from_model(model)
        set_servo_gains(model, self._indices)
        self._block_address = int(model.joint("block").qposadr[0])
        self._qpos_offset = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)
        if STATE_SPEC & mujoco.mjtState.mjSTATE_QPOS == 0:  # pragma: no cover - engine invariant
            raise RuntimeError("the engine's state must contain qpos")
        self._nq = model.nq
        if render_workers is None:
            render_workers = (os.cpu_count() or 1) if num_envs >= 4 else 0
        self.sim = BatchedSimulator(model, num_envs, SUBSTEPS, num_threads)
        self.renderer = (
            BatchedRenderer(self.sim, self.cameras, image_size, image_size, render_workers)
            if self.cameras
            else None
        )
        kinematics = So101Kinematics()
        first = task_names * (num_envs // len(task_names) + 1)
        self._tasks: list[str] = list(first[:num_envs])
        self._split = InitStateSplit.TRAIN
        self._init_state_ids = np.zeros(num_envs, np.int64)
        self._task_ids = np.zeros(num_envs, np.int64)
        self._steps = np.zeros(num_envs, np.int64)
        self._max_steps = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._ended_by_success = np.zeros(num_envs, bool)
        self._views = [ExpertView(kinematics) for _ in range(num_envs)]
        self._experts: list[Expert | None] = [None] * num_envs
        self._rng = np.random.default_rng()
        self._closed = False

    # ------------------------------------------------------------------------------------------------
    # Contract

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task each environment is running."""
        return tuple(self._tasks)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset all N envs; see `sim.core` for ``options`` (split, tasks, init_state_ids)."""
        checked_seed = check_seed(seed)
        request = parse_reset_options(options, self.num_envs, list(SO101_TASKS))
        if checked_seed is not None:
            self._rng = np.random.default_rng(checked_seed)
        if request.tasks is not None:
            self._tasks = list(request.tasks)
        self._split = request.split
        if request.init_state_ids is not None:
            for env_index, state_id in enumerate(request.init_state_ids):
                limit = self.task_specs[self._tasks[env_index]].num_states(self._split)
                if state_id >= limit:
                    raise ValueError(
                        f"init_state_ids[{env_index}] = {state_id} is out of range: task "
                        f"{self._tasks[env_index]!r} has {limit} {self._split} initial states"
                    )
            ids = request.init_state_ids
        else:
            ids = np.array([self._draw_state_id(i) for i in range(self.num_envs)])
        for env_index in range(self.num_envs):
            self._reset_env(env_index, int(ids[env_index]))
        return self._observe(), self._info(np.zeros(self.num_envs, bool))

    def step(self, actions: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env one control step with absolute joint targets ``[N, 6]``; see `sim.core`."""
        self._check_open()
        clipped, clipped_mask = validate_actions(actions, self.num_envs, ACTION_DIM)
        active = ~self._done
        frozen = np.flatnonzero(~active)  # DISABLED autoreset: finished envs stay where they ended
        frozen_state = self.sim.state[frozen]
        self.sim.step(normalized_to_joints(clipped))
        self.sim.state[frozen] = frozen_state
        self._steps[active] += 1
        success = self._success(self.readings())
        terminated = success & active
        truncated = active & ~success & (self._steps >= self._max_steps)
        reward = terminated.astype(np.float64)
        if self.metadata["autoreset_mode"] is AutoresetMode.DISABLED:
            terminated |= self._done & self._ended_by_success
            truncated |= self._done & ~self._ended_by_success
            self._ended_by_success[active] = terminated[active]
            self._done |= terminated | truncated
            info = self._info(success)
            info["action_clipped"] = clipped_mask
            return self._observe(), reward, terminated, truncated, info

        finished = np.flatnonzero(terminated | truncated)
        info = self._info(success)
        info["action_clipped"] = clipped_mask
        if len(finished):
            final_obs = self._observe()
            info["final_obs"] = final_obs
            info["_final_obs"] = terminated | truncated
            info["final_success"] = success.copy()
            for env_index in finished:
                self._reset_env(int(env_index), self._draw_state_id(int(env_index)))
            info["task_id"] = self._task_ids.copy()
            info["init_state_id"] = self._init_state_ids.copy()
            return self._observe(reuse=final_obs, changed=finished), reward, terminated, truncated, info
        return self._observe(), reward, terminated, truncated, info

    def expert_action(self) -> np.ndarray:
        """The scripted experts' actions ``[N, 6]`` for the current states (advances each expert)."""
        self._check_open()
        readings = self.readings()
        actions = np.zeros((self.num_envs, ACTION_DIM), np.float32)
        for env_index in range(self.num_envs):
            view = self._views[env_index]
            view.update(readings, env_index)
            expert = self._experts[env_index]
            target = next(expert, None) if expert is not None else None
            if target is None:  # the plan is over: hold the last targets
                self._experts[env_index] = None
                target = view.command
            actions[env_index] = np.clip(joints_to_normalized(target), -1.0, 1.0)
        return actions

    def readings(self) -> SceneReadings:
        """Joint angles and block poses of the N scenes, from the physics state."""
        qpos = self.sim.state[:, self._qpos_offset : self._qpos_offset + self._nq]
        return SceneReadings.from_qpos(qpos, self._indices, self._block_address)

    def close(self, **kwargs: Any) -> None:
        """Release the thread pool and the render context (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.sim.close()
        if self.renderer is not None:
            self.renderer.close()

    # ------------------------------------------------------------------------------------------------
    # Internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the environment is closed")

    def _draw_state_id(self, env_index: int) -> int:
        return int(self._rng.integers(self.task_specs[self._tasks[env_index]].num_states(self._split)))

    def _reset_env(self, env_index: int, state_id: int) -> None:
        task = self._tasks[env_index]
        state = initial_state(task, self._split, state_id)
        self.sim.set_env(env_index, state.scene_qpos(self.sim.base_model))
        self._task_ids[env_index] = TASK_INDEX[task]
        self._max_steps[env_index] = self.task_specs[task].max_steps
        self._init_state_ids[env_index] = state_id
        self._steps[env_index] = 0
        self._done[env_index] = False
        self._ended_by_success[env_index] = False
        view = self._views[env_index]
        view.update(self.readings(), env_index)
        view.command = state.arm_qpos.copy()
        self._experts[env_index] = SO101_TASKS[task].expert(view)

    def _success(self, readings: SceneReadings) -> np.ndarray:
        success = np.zeros(self.num_envs, bool)
        for name, task_index in TASK_INDEX.items():
            mask = self._task_ids == task_index
            if mask.any():
                success[mask] = SO101_TASKS[name].success(readings)[mask]
        return success

    def _observe(
        self, reuse: dict[str, Any] | None = None, changed: np.ndarray | None = None
    ) -> dict[str, Any]:
        """The batched observation; with ``reuse``, only the ``changed`` envs are rendered again."""
        state = joints_to_normalized(self.readings().arm_qpos).astype(np.float32)
        obs: dict[str, Any] = {OBS_STATE: state}
        if self.renderer is not None:
            for camera, frames in self.renderer.render(changed).items():
                key = image_key(camera)
                if reuse is None:
                    obs[key] = frames
                else:
                    obs[key] = reuse[key].copy()
                    obs[key][changed] = frames
        obs[TASK] = tuple(self.task_specs[task].instruction for task in self._tasks)
        return obs

    def _info(self, success: np.ndarray) -> dict[str, Any]:
        return {
            "success": success,
            "task_id": self._task_ids.copy(),
            "init_state_id": self._init_state_ids.copy(),
        }
