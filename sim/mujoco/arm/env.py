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
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

from sim.core import AutoresetMode
from sim.mujoco.arm.tasks import (
    ARM_TASKS,
    BLOCKS,
    FIXTURES,
    Expert,
    Readings,
    SceneView,
    initial_layout,
    target_rotation,
)
from sim.mujoco.engine import MujocoBatchedEnv
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


class ArmBatchedEnv(MujocoBatchedEnv):
    """N environments of the arm suite, stepped in parallel by MuJoCo's thread pool.

    Args:
        num_envs: N.
        tasks: task names, assigned to envs round-robin (default: every task of the suite).
        cameras: cameras rendered into observations (``agentview``, ``wrist``); empty for none.
        image_size: square image side in pixels.
        autoreset_mode: ``same_step`` or ``disabled`` (see `sim.core`).
        num_threads: MuJoCo rollout threads (default: one per core).
        render_workers: render processes (default: one per core from 4 envs, else in-process).

    """

    SUITE = "arm"
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
        model = load_model()
        super().__init__(
            num_envs,
            tasks,
            cameras,
            image_size,
            autoreset_mode,
            task_specs={name: task.spec for name, task in ARM_TASKS.items()},
            model=model,
            substeps=SUBSTEPS,
            control_hz=CONTROL_HZ,
            action_dim=ACTION_DIM,
            state_space=gym.spaces.Box(STATE_LOW, STATE_HIGH, (STATE_DIM,), np.float32),
            num_threads=num_threads,
            render_workers=render_workers,
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
        self._fixtures = {name: np.zeros((self.num_envs, 3)) for name in FIXTURES}
        self._views = [SceneView() for _ in range(self.num_envs)]
        self._experts: list[Expert | None] = [None] * self.num_envs
        self._expert_holds = np.zeros((self.num_envs, ACTION_DIM))

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

    # ------------------------------------------------------------------------------------------------
    # The suite's part of `MujocoBatchedEnv`

    def _reset_scene(self, env_index: int, task: str, state_id: int) -> None:
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
        view = self._views[env_index]
        view.layout = layout
        Readings.from_sensordata(self.sim.sensordata).fill(view, env_index)
        self._experts[env_index] = ARM_TASKS[task].expert(view)
        self._expert_holds[env_index] = [0, 0, 0, 0, 0, 0, -1]

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

    def _task_success(self, task: str) -> np.ndarray:
        return ARM_TASKS[task].success(Readings.from_sensordata(self.sim.sensordata), self._fixtures)

    def _state(self) -> np.ndarray:
        readings = Readings.from_sensordata(self.sim.sensordata)
        state = np.concatenate(
            [readings.tcp_pos, quat_to_axis_angle(readings.tcp_quat), readings.fingers], axis=1
        )
        return state.astype(np.float32)
