"""The SO-101 table tasks: initial states, success checks from physics, and scripted experts.

The scene (`scene.xml`) has one red block and a fixed green target zone. Two tasks:

- ``pick_place``: pick the block up and put it down inside the zone, gripper open at the end;
- ``push``: push the block into the zone without lifting it.

Initial state ``k`` of split ``s`` for task ``t`` (block position and yaw, arm posture near a ready pose)
is drawn from ``SeedSequence([TASK_INDEX[t], SPLIT_INDEX[s], k])``: deterministic, and the ``train`` and
``eval`` sets are disjoint by construction (independent continuous draws; a test checks it).

Experts plan in Cartesian space and turn each step's TCP goal into joint targets with damped
least-squares inverse kinematics on the MuJoCo model (`So101Kinematics`): the same absolute joint
targets a policy outputs and LeRobot's ``SO101Follower`` sends to the servos.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import mujoco
import numpy as np

from sim.core import InitStateSplit, TaskSpec
from sim.mujoco.rotations import axis_angle_to_mat, mat_to_axis_angle, rot_z, yaw_from_quat, yaw_quat
from sim.mujoco.so101.model import TCP_SITE, So101Indices, load_model

BLOCK_HALF = 0.0125  # the block is a 25 mm cube
ARM_JOINTS = 5  # the body joints before the gripper
GRIPPER_OPEN = 1.0  # rad: jaws ~6 cm apart at the tips
GRIPPER_CLOSED = -0.17453  # rad: the closed stop; on a block the servo squeezes it at stall torque
GRIPPER_RELEASED = 0.6  # rad: beyond this the jaws are wider than the block (it is not held)
# The point the jaws close on lies 10.5 mm from the TCP site, towards the moving jaw (gripper +z).
GRASP_OFFSET = 0.0105
GRIPPER_PUSH = 0.28  # rad: jaw tips ~18 mm apart, narrower than the block
PUSH_OFFSET = 0.007  # from the TCP site to the middle of the jaw tips at GRIPPER_PUSH
READY_TCP = np.array([0.17, 0.0, 0.11])
# Block positions: in reach of a downward grasp and clear of the target zone.
BLOCK_X = (0.14, 0.24)
BLOCK_Y = (-0.03, 0.16)
BLOCK_MAX_REACH = 0.26
BLOCK_ZONE_CLEARANCE = 0.1


@functools.cache
def scene_constants() -> tuple[np.ndarray, float]:
    """The target zone's centre ``[3]`` and radius (metres), read from the model."""
    model = load_model()
    zone = model.geom("target_zone")
    return model.geom_pos[zone.id].copy(), float(model.geom_size[zone.id, 0])


def down_rotation(yaw: float) -> np.ndarray:
    """Gripper orientation ``[3, 3]`` pointing at the table with the jaws closing along ``yaw``.

    Columns are the gripper frame's axes in the world: x (approach) points down, z (from the fixed to
    the moving jaw) is horizontal at heading ``yaw``.
    """
    return rot_z(yaw) @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


class So101Kinematics:
    """Forward and inverse kinematics of the SO-101's TCP on its MuJoCo model (one scratch `MjData`).

    IK minimizes ``|p_goal - p|^2 + w^2 |r_err|^2`` over the five body joints by damped least squares,
    with the orientation weighted low (``w``) so that where a vertical approach is out of reach the
    position is still met and the gripper tilts a little.
    """

    def __init__(self, orientation_weight: float = 0.15, damping: float = 1e-2) -> None:
        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self.indices = So101Indices.from_model(self.model)
        self.orientation_weight = orientation_weight
        self.damping = damping
        self._site = self.model.site(TCP_SITE).id
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._low = self.indices.joint_range[:ARM_JOINTS, 0]
        self._high = self.indices.joint_range[:ARM_JOINTS, 1]

    def _forward(self, joints: np.ndarray) -> None:
        self.data.qpos[self.indices.qpos] = joints
        mujoco.mj_kinematics(self.model, self.data)

    def tcp(self, joints: np.ndarray) -> np.ndarray:
        """TCP position ``[3]`` for joint angles ``[6]`` (radians)."""
        return self.pose(joints)[0]

    def pose(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position ``[3]`` and orientation ``[3, 3]`` (gripper axes as columns) for joints ``[6]``."""
        self._forward(joints)
        return self.data.site_xpos[self._site].copy(), self.data.site_xmat[self._site].reshape(3, 3).copy()

    def jacobian(self, joints: np.ndarray) -> np.ndarray:
        """The TCP's Jacobian ``[6, 5]`` (linear rows, then angular, world frame) over the body joints."""
        self._forward(joints)
        return self._site_jacobian()

    def _site_jacobian(self) -> np.ndarray:
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)
        dofs = self.indices.qvel[:ARM_JOINTS]
        return np.vstack([self._jacp[:, dofs], self._jacr[:, dofs]])

    def solve(
        self, position: np.ndarray, rotation: np.ndarray, start: np.ndarray, iterations: int = 30
    ) -> np.ndarray:
        """Joints ``[6]`` putting the TCP at ``position`` with orientation ``rotation`` ``[3, 3]``.

        Iterates from ``start``; the gripper joint is copied from it; body joints stay within their limits.
        """
        joints = np.array(start, dtype=np.float64)
        weight = self.orientation_weight
        error_rotation = np.zeros(3)
        quat = np.zeros(4)
        for _ in range(iterations):
            self._forward(joints)
            error_position = position - self.data.site_xpos[self._site]
            mujoco.mju_mat2Quat(quat, (rotation @ self.data.site_xmat[self._site].reshape(3, 3).T).ravel())
            mujoco.mju_quat2Vel(error_rotation, quat, 1.0)
            if np.linalg.norm(error_position) < 2e-4 and np.linalg.norm(error_rotation) < 2e-3:
                break
            jacobian = self._site_jacobian()
            jacobian[3:] *= weight
            error = np.concatenate([error_position, weight * error_rotation])
            gram = jacobian @ jacobian.T + self.damping**2 * np.eye(6)
            step = jacobian.T @ np.linalg.solve(gram, error)
            joints[:ARM_JOINTS] = np.clip(joints[:ARM_JOINTS] + step, self._low, self._high)
        return joints


@functools.cache
def ready_pose() -> np.ndarray:
    """Joint angles ``[6]`` with the TCP at `READY_TCP` pointing down and the gripper open."""
    kinematics = So101Kinematics()
    start = np.array([0.0, 0.0, 0.0, np.pi / 2, 0.0, GRIPPER_OPEN])
    return kinematics.solve(READY_TCP, down_rotation(0.0), start, iterations=200)


# --------------------------------------------------------------------------------------------------
# Initial states


@dataclass(frozen=True)
class InitialState:
    """Where an episode starts: arm joints ``[6]`` (radians), block position ``[2]`` and yaw."""

    arm_qpos: np.ndarray
    block_xy: np.ndarray
    block_yaw: float

    def scene_qpos(self, model: mujoco.MjModel) -> np.ndarray:
        """The scene's full ``qpos`` ``[nq]``: the arm at ``arm_qpos``, the block resting on the table."""
        qpos = model.qpos0.copy()
        qpos[So101Indices.from_model(model).qpos] = self.arm_qpos
        block = model.joint("block").qposadr[0]
        qpos[block : block + 7] = [*self.block_xy, BLOCK_HALF, *yaw_quat(self.block_yaw)]
        return qpos


def _sample_state(rng: np.random.Generator) -> InitialState:
    zone, _ = scene_constants()
    for _ in range(1000):
        xy = np.array([rng.uniform(*BLOCK_X), rng.uniform(*BLOCK_Y)])
        if np.linalg.norm(xy) <= BLOCK_MAX_REACH and np.linalg.norm(xy - zone[:2]) >= BLOCK_ZONE_CLEARANCE:
            break
    else:  # pragma: no cover - the region is large; a failure here is a programming error
        raise RuntimeError("could not sample a block position: the block region is empty")
    arm = ready_pose().copy()
    arm[:ARM_JOINTS] += rng.uniform(-0.08, 0.08, ARM_JOINTS)
    arm[ARM_JOINTS] = rng.uniform(0.7, GRIPPER_OPEN)
    return InitialState(arm_qpos=arm, block_xy=xy, block_yaw=float(rng.uniform(-np.pi / 4, np.pi / 4)))


# --------------------------------------------------------------------------------------------------
# Success checks, batched over the scene's qpos


@dataclass(frozen=True)
class SceneReadings:
    """What success checks and experts read, batched over N scenes.

    Attributes:
        arm_qpos: float ``[N, 6]`` joint angles (radians), `MOTOR_NAMES` order.
        block_pos: float ``[N, 3]`` block centre.
        block_quat: float ``[N, 4]`` block orientation (w, x, y, z).

    """

    arm_qpos: np.ndarray
    block_pos: np.ndarray
    block_quat: np.ndarray

    @classmethod
    def from_qpos(cls, qpos: np.ndarray, indices: So101Indices, block_address: int) -> SceneReadings:
        """Slice a batch of full ``qpos`` ``[N, nq]`` of the SO-101 scene."""
        return cls(
            arm_qpos=qpos[:, indices.qpos],
            block_pos=qpos[:, block_address : block_address + 3],
            block_quat=qpos[:, block_address + 3 : block_address + 7],
        )


def _block_in_zone(readings: SceneReadings) -> np.ndarray:
    zone, radius = scene_constants()
    inside = np.linalg.norm(readings.block_pos[:, :2] - zone[:2], axis=1) < radius
    return inside & (readings.block_pos[:, 2] < BLOCK_HALF + 0.005)


def _placed_in_zone(readings: SceneReadings) -> np.ndarray:
    return _block_in_zone(readings) & (readings.arm_qpos[:, ARM_JOINTS] > GRIPPER_RELEASED)


# --------------------------------------------------------------------------------------------------
# Scripted experts: generators that read the (in-place updated) ExpertView and yield joint targets [6].


@dataclass
class ExpertView:
    """One scene as an expert sees it, updated in place every step.

    Attributes:
        arm_qpos: ``[6]`` present joint angles.
        tcp: ``[3]`` present TCP position.
        block_pos: ``[3]`` block centre.
        block_quat: ``[4]`` block orientation.
        command: ``[6]`` the expert's last joint targets (its IK warm start).

    """

    kinematics: So101Kinematics
    arm_qpos: np.ndarray = field(default_factory=lambda: np.zeros(6))
    tcp: np.ndarray = field(default_factory=lambda: np.zeros(3))
    block_pos: np.ndarray = field(default_factory=lambda: np.zeros(3))
    block_quat: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    command: np.ndarray = field(default_factory=lambda: np.zeros(6))

    def update(self, readings: SceneReadings, index: int) -> None:
        """Copy scene ``index`` of ``readings`` into this view."""
        self.arm_qpos = readings.arm_qpos[index].copy()
        self.block_pos = readings.block_pos[index].copy()
        self.block_quat = readings.block_quat[index].copy()
        self.tcp = self.kinematics.tcp(self.arm_qpos)

    def grasp_yaw(self) -> float:
        """The jaw heading that closes on two opposite faces of the block, nearest the arm's own heading."""
        natural = math.atan2(self.block_pos[1], self.block_pos[0])
        yaw = float(yaw_from_quat(self.block_quat))
        return natural + ((yaw - natural + np.pi / 4) % (np.pi / 2) - np.pi / 4)


Expert = Generator[np.ndarray, None, None]
PUSH_SPEED = 0.005  # metres per control step while pushing
SPEED = 0.012  # at most this many metres per control step (0.24 m/s at 20 Hz)
TURN_SPEED = 0.15  # at most this many radians per control step
APPROACH_GAIN = 0.4  # each step of a move covers this fraction of what remains (within the limits)


def _capped_step(offset: np.ndarray, gain: float, limit: float) -> np.ndarray:
    """``gain * offset``, shortened to length ``limit`` where it would be longer."""
    return offset * min(gain, limit / max(float(np.linalg.norm(offset)), 1e-9))


def _move(
    view: ExpertView,
    goal: np.ndarray,
    yaw: float,
    gripper: float,
    tolerance: float = 0.006,
    timeout: int = 60,
    settle: int = 0,
) -> Expert:
    """Servo the commanded TCP onto ``goal``, pointing down at ``yaw``, until the TCP is within ``tolerance``.

    A proportional controller: each step covers `APPROACH_GAIN` of the remaining offset and turn, at
    most `SPEED` and `TURN_SPEED`. Every demonstrated action is then a function of the present offset,
    which a policy sees, can learn, and which corrects its own errors; a straight-line plan covers a
    few-centimetre reach in four equal steps whose size depends on where it started, which a policy
    trained on 50 such demonstrations reproduced centimetres off (README, "Training an SO-101 policy").
    """
    goal_rotation = down_rotation(yaw)
    for _ in range(timeout):
        if np.linalg.norm(view.tcp - goal) < tolerance:
            break
        position, rotation = view.kinematics.pose(view.command)
        offset = goal - position
        position = position + _capped_step(offset, APPROACH_GAIN, SPEED)
        turn = _capped_step(mat_to_axis_angle(goal_rotation @ rotation.T), APPROACH_GAIN, TURN_SPEED)
        view.command = view.kinematics.solve(position, axis_angle_to_mat(turn) @ rotation, view.command)
        view.command[ARM_JOINTS] = gripper
        yield view.command.copy()
    for _ in range(settle):
        yield view.command.copy()


def _grip(view: ExpertView, gripper: float, steps: int) -> Expert:
    view.command[ARM_JOINTS] = gripper
    for _ in range(steps):
        yield view.command.copy()


def _above(point: np.ndarray, height: float) -> np.ndarray:
    return np.array([point[0], point[1], height])


def _expert_pick_place(view: ExpertView) -> Expert:
    view.command = view.arm_qpos.copy()
    yaw = view.grasp_yaw()
    jaw_axis = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    grasp = view.block_pos - GRASP_OFFSET * jaw_axis
    yield from _move(view, _above(grasp, 0.07), yaw, GRIPPER_OPEN, tolerance=0.01)
    yield from _move(view, _above(grasp, 0.022), yaw, GRIPPER_OPEN, tolerance=0.005, settle=2)
    yield from _grip(view, GRIPPER_CLOSED, 8)
    yield from _move(view, _above(view.tcp, 0.08), yaw, GRIPPER_CLOSED, tolerance=0.015)
    zone, _ = scene_constants()
    place_yaw = math.atan2(zone[1], zone[0])
    release = zone - GRASP_OFFSET * np.array([math.cos(place_yaw), math.sin(place_yaw), 0.0])
    yield from _move(view, _above(release, 0.08), place_yaw, GRIPPER_CLOSED, tolerance=0.015)
    yield from _move(view, _above(release, 0.035), place_yaw, GRIPPER_CLOSED, tolerance=0.008)
    yield from _grip(view, GRIPPER_OPEN, 6)
    yield from _move(view, _above(view.tcp, 0.1), place_yaw, GRIPPER_OPEN, tolerance=0.015)


def _expert_push(view: ExpertView) -> Expert:
    view.command = view.arm_qpos.copy()
    zone, radius = scene_constants()

    def direction() -> np.ndarray:
        delta = zone[:2] - view.block_pos[:2]
        return delta / max(float(np.linalg.norm(delta)), 1e-6)

    for _attempt in range(5):
        push = direction()
        yaw = math.atan2(push[1], push[0]) + np.pi / 2  # jaws side by side across the push direction
        # Jaws ~2 cm apart push at two points, either side of the block's centre line.
        offset = PUSH_OFFSET * np.array([math.cos(yaw), math.sin(yaw)])
        behind = view.block_pos[:2] - (BLOCK_HALF + 0.025) * push - offset
        yield from _move(view, np.array([*behind, 0.06]), yaw, GRIPPER_PUSH, tolerance=0.01)
        yield from _move(view, np.array([*behind, 0.018]), yaw, GRIPPER_PUSH, tolerance=0.006)
        pusher = behind + offset  # where the commanded jaw tips are
        for _ in range(100):
            push = direction()
            contact = view.block_pos[:2] - (BLOCK_HALF + 0.006) * push
            lateral = contact - (view.tcp[:2] + offset)
            lateral -= np.dot(lateral, push) * push
            if np.linalg.norm(lateral) > 0.012:
                break  # the block slid sideways: back off and line up again
            if np.linalg.norm(view.block_pos[:2] - zone[:2]) < radius - 0.015:
                yield from _move(view, _above(view.tcp, 0.08), yaw, GRIPPER_PUSH, tolerance=0.015)
                return
            step = contact + 0.01 * push + lateral - pusher
            pusher = pusher + _capped_step(step, 1.0, PUSH_SPEED)
            view.command = view.kinematics.solve(
                np.array([*(pusher - offset), 0.018]), down_rotation(yaw), view.command
            )
            yield view.command.copy()
        yield from _move(view, _above(view.tcp, 0.06), yaw, GRIPPER_PUSH, tolerance=0.015)


# --------------------------------------------------------------------------------------------------
# The task table


@dataclass(frozen=True)
class So101Task:
    """A task of the SO-101 table: its spec, batched success check and scripted expert."""

    spec: TaskSpec
    success: Callable[[SceneReadings], np.ndarray]
    expert: Callable[[ExpertView], Expert]


SO101_TASKS: dict[str, So101Task] = {
    task.spec.name: task
    for task in [
        So101Task(
            TaskSpec("pick_place", "pick up the red block and place it in the green zone", 300),
            _placed_in_zone,
            _expert_pick_place,
        ),
        So101Task(
            TaskSpec("push", "push the red block into the green zone", 240), _block_in_zone, _expert_push
        ),
    ]
}
TASK_INDEX = {name: index for index, name in enumerate(SO101_TASKS)}
SPLIT_INDEX = {InitStateSplit.TRAIN: 0, InitStateSplit.EVAL: 1}


def initial_state(task: str, split: InitStateSplit | str, state_id: int) -> InitialState:
    """Initial state ``state_id`` of ``split`` for ``task`` (deterministic).

    Raises:
        ValueError: unknown task or split, or ``state_id`` out of range (the message gives the range).

    """
    if task not in SO101_TASKS:
        raise ValueError(f"unknown so101 task {task!r}; known tasks: {', '.join(SO101_TASKS)}")
    split = InitStateSplit(split)
    spec = SO101_TASKS[task].spec
    if not 0 <= state_id < spec.num_states(split):
        raise ValueError(
            f"init state id {state_id} out of range for {task} {split} (0..{spec.num_states(split) - 1})"
        )
    rng = np.random.default_rng(np.random.SeedSequence([TASK_INDEX[task], SPLIT_INDEX[split], state_id]))
    return _sample_state(rng)
