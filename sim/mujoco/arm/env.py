"""The arm suite as a batched environment: N table-top scenes stepped in parallel in one process.

Action (7-D, each in [-1, 1], LIBERO's convention): end-effector translation ``[0:3]`` (x 0.02 m per
step), rotation ``[3:6]`` as an axis-angle in the world frame (x 0.15 rad per step), gripper ``[6]``
(-1 open, +1 closed). A damped-least-squares differential inverse-kinematics controller turns the
end-effector command into joint position targets, held for 20 physics steps (control at 20 Hz).

Observation: ``observation.state`` float32 ``[N, 8]`` (TCP position, TCP axis-angle, finger openings),
``observation.images.agentview`` / ``observation.images.wrist`` uint8 ``[N, H, W, 3]`` when asked
for, ``task`` (N instructions). Reward: 1.0 on the step the task is solved, else 0; an episode
terminates on success and truncates at the task's ``max_steps``.
"""

from __future__ import annotations

import functools
import os
import string
from collections.abc import Sequence
from pathlib import Path
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
from sim.mujoco.arm.tasks import (
    ARM_TASKS,
    BLOCKS,
    FIXTURES,
    TASK_INDEX,
    Expert,
    Readings,
    SceneView,
    initial_layout,
    target_rotation,
)
from sim.mujoco.engine import BatchedRenderer, BatchedSimulator
from sim.mujoco.rotations import mat_to_axis_angle, quat_to_axis_angle, quat_to_mat, yaw_quat

SCENE_XML = Path(__file__).parent / "assets" / "scene.xml"
CONTROL_HZ = 20
SUBSTEPS = 20  # 20 x 2.5 ms physics steps per control step
MAX_TRANSLATION = 0.02  # metres per control step at action 1.0
MAX_ROTATION = 0.15  # radians per control step at action 1.0
FINGER_OPEN = 0.04
ARM_JOINTS = 7
CAMERAS = ("agentview", "wrist")
STATE_DIM = 8
# TCP position (m, within the arm's reach), TCP axis-angle (rad), finger openings (m).
STATE_LOW = np.array([-1.5, -1.5, -0.5, -np.pi, -np.pi, -np.pi, -0.01, -0.01], np.float32)
STATE_HIGH = np.array([1.5, 1.5, 1.5, np.pi, np.pi, np.pi, 0.05, 0.05], np.float32)
ACTION_DIM = 7
HOME_TCP = np.array([-0.08, 0.0, 0.22])
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


@functools.cache
def load_model() -> mujoco.MjModel:
    """Compile the arm scene (cached; callers copy it before changing per-episode parameters)."""
    return mujoco.MjModel.from_xml_path(str(SCENE_XML))


class DifferentialIK:
    """Damped least-squares IK from end-effector deltas to joint position targets, batched over envs.

    For each env: ``dq = J^T (J J^T + lambda^2 I)^-1 [dp; dr] + (I - J^+ J) k (q_home - q)``, with the
    6x7 TCP Jacobian J (`Readings.tcp_jacobian`); the null-space term keeps the redundant 7th DoF near home.
    """

    def __init__(self, model: mujoco.MjModel, damping: float = 0.03, nullspace_gain: float = 0.2) -> None:
        self.damping = damping
        self.nullspace_gain = nullspace_gain
        self.joint_low = model.jnt_range[:ARM_JOINTS, 0]
        self.joint_high = model.jnt_range[:ARM_JOINTS, 1]
        self.home_qpos = np.zeros(ARM_JOINTS)

    def solve(self, jacobians: np.ndarray, qpos: np.ndarray, twist: np.ndarray) -> np.ndarray:
        """Joint targets ``[N, 7]`` moving the TCP by ``twist`` ``[N, 6]`` from joints ``qpos`` ``[N, 7]``."""
        jt = np.swapaxes(jacobians, 1, 2)
        gram = jacobians @ jt + (self.damping**2) * np.eye(6)
        pinv = jt @ np.linalg.inv(gram)  # [N, 7, 6]
        dq = (pinv @ twist[..., None])[..., 0]
        nullspace = np.eye(ARM_JOINTS) - pinv @ jacobians
        dq += (nullspace @ (self.nullspace_gain * (self.home_qpos - qpos))[..., None])[..., 0]
        return np.clip(qpos + dq, self.joint_low, self.joint_high)


@functools.cache
def home_qpos() -> np.ndarray:
    """Arm joints ``[7]`` with the TCP at ``HOME_TCP`` pointing down (solved once by iterating the IK)."""
    model = load_model()
    data = mujoco.MjData(model)
    ik = DifferentialIK(model, nullspace_gain=0.0)
    qpos = np.array([0.0, 0.3, 0.0, 1.9, 0.0, 0.94, 0.0])
    goal_rotation = target_rotation(0.0)
    for _ in range(200):
        data.qpos[:ARM_JOINTS] = qpos
        mujoco.mj_forward(model, data)
        readings = Readings.from_sensordata(data.sensordata[None])
        error_pos = HOME_TCP - readings.tcp_pos[0]
        error_rot = mat_to_axis_angle(goal_rotation @ quat_to_mat(readings.tcp_quat[0]).T)
        twist = np.concatenate([error_pos, error_rot])[None]
        qpos = ik.solve(readings.tcp_jacobian(), qpos[None], twist)[0]
    if np.linalg.norm(error_pos) > 1e-4:
        raise RuntimeError(f"home posture IK did not converge (error {np.linalg.norm(error_pos):.4f} m)")
    return qpos


class ArmBatchedEnv(BatchedEnv):
    """N environments of the arm suite, stepped in parallel by MuJoCo's thread pool.

    Args:
        num_envs: N.
        tasks: task names, assigned to envs round-robin (default: every task of the suite).
        cameras: cameras rendered into observations (``agentview``, ``wrist``); empty for none.
        image_size: square image side in pixels.
        autoreset_mode: ``same_step`` or ``disabled`` (see `sim.core`).
        num_threads: MuJoCo rollout threads (default: one per core).

    """

    TASK_NAMES = tuple(ARM_TASKS)
    CAMERA_NAMES = CAMERAS

    def __init__(
        self,
        num_envs: int = 16,
        tasks: Sequence[str] | None = None,
        cameras: Sequence[str] = CAMERAS,
        image_size: int = 128,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        num_threads: int | None = None,
        render_workers: int | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        task_names = tuple(tasks) if tasks is not None else tuple(ARM_TASKS)
        unknown = sorted(set(task_names) - set(ARM_TASKS))
        if unknown or not task_names:
            raise ValueError(
                f"unknown arm task(s) {unknown or task_names}; known tasks: {', '.join(ARM_TASKS)}"
            )
        unknown_cameras = sorted(set(cameras) - set(CAMERAS))
        if unknown_cameras:
            raise ValueError(f"unknown camera(s) {unknown_cameras}; the arm scene has {', '.join(CAMERAS)}")
        if not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be within [16, 512] pixels, got {image_size}")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be 'SameStep' or 'Disabled', got {autoreset_mode!r}")

        self.num_envs = num_envs
        self.task_specs = {name: task.spec for name, task in ARM_TASKS.items()}
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.metadata = {"autoreset_mode": mode, "render_fps": CONTROL_HZ}
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        observation_spaces: dict[str, gym.Space[Any]] = {
            OBS_STATE: gym.spaces.Box(STATE_LOW, STATE_HIGH, (STATE_DIM,), np.float32),
            TASK: gym.spaces.Text(max_length=200, charset=INSTRUCTION_CHARSET),
        }
        for camera in self.cameras:
            observation_spaces[image_key(camera)] = gym.spaces.Box(
                0, 255, (image_size, image_size, 3), np.uint8
            )
        self.single_observation_space = gym.spaces.Dict(observation_spaces)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

        if render_workers is None:
            render_workers = (os.cpu_count() or 1) if num_envs >= 4 else 0
        model = load_model()
        self.sim = BatchedSimulator(model, num_envs, SUBSTEPS, num_threads)
        self.renderer = (
            BatchedRenderer(self.sim, self.cameras, image_size, image_size, render_workers)
            if self.cameras
            else None
        )
        self.ik = DifferentialIK(model)
        self.ik.home_qpos = home_qpos()
        self._home_qpos = self.ik.home_qpos
        self._geom_ids = {
            prefix: [i for i in range(model.ngeom) if (model.geom(i).name or "").startswith(prefix)]
            for prefix in ("red_block", "blue_block", "spare_block", "bowl", "table", "zone")
        }
        self._fixture_body = {name: model.body(name).id for name in FIXTURES}
        self._block_qpos = [model.joint(name).qposadr[0] for name in BLOCKS]
        self._drawer_qpos = model.joint("drawer").qposadr[0]
        self._finger_qpos = [model.joint("left_finger").qposadr[0], model.joint("right_finger").qposadr[0]]

        first = task_names * (num_envs // len(task_names) + 1)
        self._tasks: list[str] = list(first[:num_envs])
        self._split = InitStateSplit.TRAIN
        self._init_state_ids = np.zeros(num_envs, np.int64)
        self._fixtures = {name: np.zeros((num_envs, 3)) for name in FIXTURES}
        self._steps = np.zeros(num_envs, np.int64)
        self._task_ids = np.zeros(num_envs, np.int64)  # TASK_INDEX of each env's task, set at reset
        self._max_steps = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._ended_by_success = np.zeros(num_envs, bool)
        self._views = [SceneView() for _ in range(num_envs)]
        self._experts: list[Expert | None] = [None] * num_envs
        self._expert_holds = np.zeros((num_envs, ACTION_DIM))
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
        request = parse_reset_options(options, self.num_envs, list(ARM_TASKS))
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
        """Advance every env one control step with ``actions`` ``[N, 7]``; see `sim.core`."""
        self._check_open()
        clipped, clipped_mask = validate_actions(actions, self.num_envs, ACTION_DIM)
        active = ~self._done
        frozen = np.flatnonzero(~active)  # DISABLED autoreset: finished envs stay where they ended
        frozen_state, frozen_sensors = self.sim.state[frozen], self.sim.sensordata[frozen]
        self.sim.step(self._controls(clipped))
        self.sim.state[frozen] = frozen_state
        self.sim.sensordata[frozen] = frozen_sensors
        self._steps[active] += 1
        readings = Readings.from_sensordata(self.sim.sensordata)
        success = self._success(readings)
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
        """The scripted experts' actions ``[N, 7]`` for the current states (advances each expert)."""
        self._check_open()
        readings = Readings.from_sensordata(self.sim.sensordata)
        actions = np.zeros((self.num_envs, ACTION_DIM), np.float32)
        for env_index in range(self.num_envs):
            view = self._views[env_index]
            readings.fill(view, env_index)
            expert = self._experts[env_index]
            target = next(expert, None) if expert is not None else None
            if target is None:  # the plan is over: stay still, gripper as it was
                self._experts[env_index] = None
                actions[env_index] = self._expert_holds[env_index]
                continue
            translation = (target.position - view.tcp_pos) / MAX_TRANSLATION
            rotation: np.ndarray = np.zeros(3)  # yaw None: keep the current orientation
            if target.yaw is not None:
                rotation_error = target_rotation(target.yaw) @ quat_to_mat(view.tcp_quat).T
                rotation = mat_to_axis_angle(rotation_error) / MAX_ROTATION
            action = np.concatenate([np.clip(translation, -1, 1), np.clip(rotation, -1, 1), [target.gripper]])
            self._expert_holds[env_index] = [0, 0, 0, 0, 0, 0, target.gripper]
            actions[env_index] = action
        return actions

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
        layout = initial_layout(task, self._split, state_id, self._home_qpos)
        model = self.sim.models[env_index]
        for prefix, geom_ids in self._geom_ids.items():
            if prefix in layout.colors:
                model.geom_rgba[geom_ids, :3] = layout.colors[prefix]
        for name, body_id in self._fixture_body.items():
            position = layout.fixture(name)
            model.body_pos[body_id] = position
            self._fixtures[name][env_index] = position
        qpos = model.qpos0.copy()
        qpos[:ARM_JOINTS] = layout.arm_qpos
        qpos[self._finger_qpos] = FINGER_OPEN
        qpos[self._drawer_qpos] = layout.drawer_opening
        for block_index, address in enumerate(self._block_qpos):
            x, y, yaw = layout.block_poses[block_index]
            qpos[address : address + 7] = [x, y, 0.02, *yaw_quat(yaw)]
        self.sim.set_env(env_index, qpos)
        self._task_ids[env_index] = TASK_INDEX[task]
        self._max_steps[env_index] = self.task_specs[task].max_steps
        self._init_state_ids[env_index] = state_id
        self._steps[env_index] = 0
        self._done[env_index] = False
        view = self._views[env_index]
        view.layout = layout
        Readings.from_sensordata(self.sim.sensordata).fill(view, env_index)
        self._experts[env_index] = ARM_TASKS[task].expert(view)
        self._expert_holds[env_index] = [0, 0, 0, 0, 0, 0, -1]
        self._ended_by_success[env_index] = False

    def _controls(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``[N, 7]`` in [-1, 1] -> actuator controls ``[N, 9]`` (joint and finger targets).

        The Jacobians come from sensors evaluated inside MuJoCo's threads, so this is pure numpy
        over the batch, with no per-environment Python loop.
        """
        readings = Readings.from_sensordata(self.sim.sensordata)
        twist = np.concatenate([actions[:, :3] * MAX_TRANSLATION, actions[:, 3:6] * MAX_ROTATION], axis=1)
        controls = np.empty((self.num_envs, 9))
        controls[:, :ARM_JOINTS] = self.ik.solve(readings.tcp_jacobian(), readings.arm_qpos, twist)
        controls[:, ARM_JOINTS:] = (FINGER_OPEN * (1.0 - actions[:, 6:7]) / 2.0).repeat(2, axis=1)
        return controls

    def _success(self, readings: Readings) -> np.ndarray:
        success = np.zeros(self.num_envs, bool)
        for name, task_index in TASK_INDEX.items():
            mask = self._task_ids == task_index
            if mask.any():
                success[mask] = ARM_TASKS[name].success(readings, self._fixtures)[mask]
        return success

    def _observe(
        self, reuse: dict[str, Any] | None = None, changed: np.ndarray | None = None
    ) -> dict[str, Any]:
        """The batched observation; with ``reuse``, only the ``changed`` envs are rendered again."""
        readings = Readings.from_sensordata(self.sim.sensordata)
        state = np.concatenate(
            [readings.tcp_pos, quat_to_axis_angle(readings.tcp_quat), readings.fingers], axis=1
        )
        obs: dict[str, Any] = {OBS_STATE: state.astype(np.float32)}
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
