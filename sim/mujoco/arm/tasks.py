"""The arm suite's tasks: layouts (initial states), success checks and scripted experts.

Every task shares one scene family (`assets/scene.xml`): a 7-DoF arm, three blocks (red, blue and a
spare block of random colour), a bowl, a cabinet with a drawer, a green goal zone and a cyan ball.
A task's layout sampler decides which fixtures are on the table and where everything starts, with
pose and colour randomization; fixtures a task does not use are parked off the table, out of view.

Initial state ``k`` of split ``s`` for task ``t`` is the layout sampled from
``SeedSequence([TASK_INDEX[t], SPLIT_INDEX[s], k])``: deterministic, and the ``train`` and ``eval``
sets are disjoint by construction (independent continuous draws; a test checks it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from sim.core import InitStateSplit, TaskSpec
from sim.mujoco.rotations import quat_to_mat, rot_z, yaw_from_quat

BLOCKS = ("red_block", "blue_block", "spare_block")
RED, BLUE, SPARE = 0, 1, 2
BLOCK_HALF = 0.02
FIXTURES = ("bowl", "cabinet", "zone", "target")
PARKED = {
    "bowl": (2.0, 1.0, 0.0),
    "cabinet": (2.0, -1.0, 0.0),
    "zone": (2.5, 0.0, 0.0005),
    "target": (2.5, 1.0, 0.0),
}
TABLE_X = (-0.17, 0.17)
TABLE_Y = (-0.22, 0.22)
SPARE_COLORS = np.array(
    [[0.15, 0.7, 0.25], [0.95, 0.85, 0.15], [0.6, 0.25, 0.75], [0.95, 0.55, 0.1], [0.9, 0.9, 0.9]]
)
# The drawer's handle and inside, in the cabinet's frame at drawer opening 0 (see scene.xml).
HANDLE_OFFSET = np.array([-0.135, 0.0, 0.062])
DRAWER_FLOOR_Z = 0.02
DRAWER_INSIDE_X = (-0.075, 0.07)
DRAWER_INSIDE_HALF_Y = 0.065
GRIPPER_OPEN, GRIPPER_CLOSED = -1.0, 1.0


@dataclass
class Layout:
    """Where one episode starts: arm posture, block poses, fixture positions and colours."""

    arm_qpos: np.ndarray  # [7]
    block_poses: np.ndarray  # [3, 3]: x, y, yaw of red, blue, spare
    fixtures: dict[str, np.ndarray] = field(default_factory=dict)  # name -> xyz (absent: parked)
    drawer_opening: float = 0.0
    colors: dict[str, np.ndarray] = field(default_factory=dict)  # geom-name prefix -> rgb

    def fixture(self, name: str) -> np.ndarray:
        """World position of a fixture (its parking spot when the task does not use it)."""
        return self.fixtures.get(name, np.asarray(PARKED[name]))


@dataclass
class SceneView:
    """Privileged readings of one environment, updated in place every step (what experts see)."""

    tcp_pos: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tcp_quat: np.ndarray = field(default_factory=lambda: np.array([1.0, 0, 0, 0]))
    fingers: np.ndarray = field(default_factory=lambda: np.zeros(2))
    drawer: float = 0.0
    block_pos: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    block_quat: np.ndarray = field(default_factory=lambda: np.tile([1.0, 0, 0, 0], (3, 1)))
    layout: Layout | None = None

    def fixture(self, name: str) -> np.ndarray:
        """World position of a fixture in this episode."""
        assert self.layout is not None
        return self.layout.fixture(name)

    def handle(self) -> np.ndarray:
        """World position of the drawer handle's centre."""
        return self.fixture("cabinet") + HANDLE_OFFSET + np.array([-self.drawer, 0.0, 0.0])

    def block_yaw(self, block: int) -> float:
        """Gripper yaw that puts the fingers on two opposite faces of ``block`` (in [-pi/4, pi/4])."""
        yaw = float(yaw_from_quat(self.block_quat[block]))
        return (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4


@dataclass(frozen=True)
class Readings:
    """Batched sensor readings, views into the simulator's ``sensordata`` ``[N, 80]``."""

    tcp_pos: np.ndarray  # [N, 3]
    tcp_quat: np.ndarray  # [N, 4]
    fingers: np.ndarray  # [N, 2]
    drawer: np.ndarray  # [N]
    block_pos: np.ndarray  # [N, 3, 3]
    block_quat: np.ndarray  # [N, 3, 4]
    arm_qpos: np.ndarray  # [N, 7]
    joint_pos: np.ndarray  # [N, 7, 3] world position of each arm joint
    joint_axis: np.ndarray  # [N, 7, 3] world axis of each arm joint

    @classmethod
    def from_sensordata(cls, sensordata: np.ndarray) -> Readings:
        """Slice ``[N, 80]`` sensordata in the order scene.xml declares its sensors."""
        n = len(sensordata)
        return cls(
            tcp_pos=sensordata[:, 0:3],
            tcp_quat=sensordata[:, 3:7],
            fingers=sensordata[:, 7:9],
            drawer=sensordata[:, 9],
            block_pos=sensordata[:, 10:19].reshape(n, 3, 3),
            block_quat=sensordata[:, 19:31].reshape(n, 3, 4),
            arm_qpos=sensordata[:, 31:38],
            joint_pos=sensordata[:, 38:59].reshape(n, 7, 3),
            joint_axis=sensordata[:, 59:80].reshape(n, 7, 3),
        )

    def tcp_jacobian(self) -> np.ndarray:
        """The TCP Jacobian ``[N, 6, 7]`` (linear; angular) of the 7 hinge joints.

        Column i is ``[a_i x (p_tcp - p_i); a_i]`` for joint axis ``a_i`` through point ``p_i``.
        """
        linear = np.cross(self.joint_axis, self.tcp_pos[:, None, :] - self.joint_pos)
        return np.concatenate([linear, self.joint_axis], axis=2).transpose(0, 2, 1)

    def fill(self, view: SceneView, env_index: int) -> None:
        """Copy environment ``env_index``'s readings into ``view``."""
        view.tcp_pos = self.tcp_pos[env_index].copy()
        view.tcp_quat = self.tcp_quat[env_index].copy()
        view.fingers = self.fingers[env_index].copy()
        view.drawer = float(self.drawer[env_index])
        view.block_pos = self.block_pos[env_index].copy()
        view.block_quat = self.block_quat[env_index].copy()


# --------------------------------------------------------------------------------------------------
# Layout sampling


def _sample_positions(
    rng: np.random.Generator,
    items: list[tuple[str, float, tuple[float, float], tuple[float, float]]],
    occupied: list[tuple[np.ndarray, float]],
) -> dict[str, np.ndarray]:
    """Rejection-sample xy positions for ``(name, radius, x_range, y_range)`` items, no overlaps."""
    placed: dict[str, np.ndarray] = {}
    for name, radius, x_range, y_range in items:
        for _ in range(1000):
            xy = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
            if all(np.linalg.norm(xy - other) > radius + other_radius for other, other_radius in occupied):
                placed[name] = xy
                occupied.append((xy, radius))
                break
        else:
            raise RuntimeError(f"could not place {name} without overlap; the layout regions are too tight")
    return placed


def _base_layout(rng: np.random.Generator, home_qpos: np.ndarray) -> Layout:
    jitter = lambda rgb, amount=0.06: np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0, 1)  # noqa: E731
    colors = {
        "red_block": jitter([0.85, 0.12, 0.1]),
        "blue_block": jitter([0.1, 0.25, 0.85]),
        "spare_block": jitter(SPARE_COLORS[rng.integers(len(SPARE_COLORS))]),
        "bowl": jitter([0.95, 0.85, 0.3]),
        "table": jitter([0.72, 0.66, 0.58], 0.04),
        "zone": jitter([0.15, 0.75, 0.3], 0.04),
    }
    arm_qpos = home_qpos + rng.uniform(-0.04, 0.04, 7)
    return Layout(arm_qpos=arm_qpos, block_poses=np.zeros((3, 3)), colors=colors)


BLOCK_RADIUS = 0.035


def _place_blocks(rng: np.random.Generator, layout: Layout, occupied: list[tuple[np.ndarray, float]]) -> None:
    items = [(name, BLOCK_RADIUS, TABLE_X, TABLE_Y) for name in BLOCKS]
    placed = _sample_positions(rng, items, occupied)
    for index, name in enumerate(BLOCKS):
        layout.block_poses[index] = [*placed[name], rng.uniform(-np.pi, np.pi)]


def _with_fixtures(*names: str, cabinet: bool = False, drawer_open: tuple[float, float] = (0.0, 0.0)):
    """A layout sampler: the named fixtures at random places, then the three blocks around them."""

    def sample(rng: np.random.Generator, home_qpos: np.ndarray) -> Layout:
        layout = _base_layout(rng, home_qpos)
        occupied: list[tuple[np.ndarray, float]] = []
        if cabinet:
            xy = np.array([rng.uniform(0.14, 0.18), rng.uniform(-0.1, 0.1)])
            layout.fixtures["cabinet"] = np.array([*xy, 0.0])
            layout.drawer_opening = float(rng.uniform(*drawer_open))
            # The cabinet and the space its drawer slides into.
            occupied += [(xy + np.array([-0.02, 0.0]), 0.13), (xy + np.array([-0.16, 0.0]), 0.1)]
        sizes = {"bowl": 0.085, "zone": 0.065, "target": 0.0}
        placed = _sample_positions(
            rng, [(n, sizes[n], TABLE_X, TABLE_Y) for n in names if n != "target"], occupied
        )
        for name, xy in placed.items():
            layout.fixtures[name] = np.array([*xy, 0.0005 if name == "zone" else 0.0])
        if "target" in names:
            # Low over the table, so one camera's view pins it down to within the success radius.
            layout.fixtures["target"] = np.array(
                [rng.uniform(*TABLE_X), rng.uniform(*TABLE_Y), rng.uniform(0.05, 0.09)]
            )
        _place_blocks(rng, layout, occupied)
        return layout

    return sample


# --------------------------------------------------------------------------------------------------
# Success checks, batched: (readings [N], fixtures {name: [N, 3]}) -> bool [N]

Fixtures = dict[str, np.ndarray]


def _in_bowl(block_pos: np.ndarray, bowl: np.ndarray) -> np.ndarray:
    return (np.linalg.norm(block_pos[:, :2] - bowl[:, :2], axis=1) < 0.055) & (block_pos[:, 2] < 0.05)


def _gripper_open(r: Readings) -> np.ndarray:
    return r.fingers.min(axis=1) > 0.025


def _reach_target(r: Readings, f: Fixtures) -> np.ndarray:
    return np.linalg.norm(r.tcp_pos - f["target"], axis=1) < 0.03


def _lift_block(r: Readings, f: Fixtures) -> np.ndarray:
    return r.block_pos[:, RED, 2] > 0.1


def _push_to_zone(r: Readings, f: Fixtures) -> np.ndarray:
    offset = np.abs(r.block_pos[:, BLUE, :2] - f["zone"][:, :2])
    return (offset < 0.05).all(axis=1) & (r.block_pos[:, BLUE, 2] < 0.03)


def _place_in_bowl(r: Readings, f: Fixtures) -> np.ndarray:
    return _in_bowl(r.block_pos[:, RED], f["bowl"]) & _gripper_open(r)


def _both_in_bowl(r: Readings, f: Fixtures) -> np.ndarray:
    return (
        _in_bowl(r.block_pos[:, RED], f["bowl"])
        & _in_bowl(r.block_pos[:, BLUE], f["bowl"])
        & _gripper_open(r)
    )


def _stack_blocks(r: Readings, f: Fixtures) -> np.ndarray:
    red, blue = r.block_pos[:, RED], r.block_pos[:, BLUE]
    aligned = np.linalg.norm(red[:, :2] - blue[:, :2], axis=1) < 0.025
    on_top = np.abs(red[:, 2] - blue[:, 2] - 2 * BLOCK_HALF) < 0.008
    return aligned & on_top & (blue[:, 2] < 0.03) & _gripper_open(r)


def _open_drawer(r: Readings, f: Fixtures) -> np.ndarray:
    return r.drawer > 0.09


def _close_drawer(r: Readings, f: Fixtures) -> np.ndarray:
    return r.drawer < 0.01


def _put_in_drawer(r: Readings, f: Fixtures) -> np.ndarray:
    local = r.block_pos[:, RED] - f["cabinet"]
    local_x = local[:, 0] + r.drawer
    inside_x = (local_x > DRAWER_INSIDE_X[0]) & (local_x < DRAWER_INSIDE_X[1])
    inside_y = np.abs(local[:, 1]) < DRAWER_INSIDE_HALF_Y
    resting = local[:, 2] < DRAWER_FLOOR_Z + BLOCK_HALF + 0.01
    return inside_x & inside_y & resting & _gripper_open(r)


# --------------------------------------------------------------------------------------------------
# Scripted experts: generators that read the (in-place updated) SceneView and yield targets.


@dataclass(frozen=True)
class Target:
    """What the expert wants this step: TCP position, gripper yaw and gripper command.

    A yaw orients the gripper pointing down at that yaw; None keeps its current orientation.
    """

    position: np.ndarray
    yaw: float | None
    gripper: float


Expert = Generator[Target, None, None]


def _go(
    view: SceneView,
    where: Callable[[], np.ndarray],
    gripper: float,
    yaw: float | None = 0.0,
    tolerance: float = 0.008,
    settle: int = 0,
    timeout: int = 80,
) -> Expert:
    """Move the TCP to ``where()`` (re-evaluated each step), then hold for ``settle`` steps."""
    for _ in range(timeout):
        target = where()
        if np.linalg.norm(target - view.tcp_pos) < tolerance:
            break
        yield Target(target, yaw, gripper)
    for _ in range(settle):
        yield Target(where(), yaw, gripper)


def _above(point: np.ndarray, height: float) -> np.ndarray:
    return np.array([point[0], point[1], height])


def _pick(view: SceneView, block: int, lift_to: float = 0.14) -> Expert:
    yaw = view.block_yaw(block)
    yield from _go(view, lambda: _above(view.block_pos[block], 0.1), GRIPPER_OPEN, yaw, tolerance=0.01)
    yaw = view.block_yaw(block)
    yield from _go(view, lambda: _above(view.block_pos[block], 0.1), GRIPPER_OPEN, yaw, tolerance=0.006)
    grasp = _above(view.block_pos[block], BLOCK_HALF)
    yield from _go(view, lambda: grasp, GRIPPER_OPEN, yaw, tolerance=0.005, settle=2)
    yield from _go(view, lambda: grasp, GRIPPER_CLOSED, yaw, tolerance=0.0, timeout=0, settle=6)
    hold = view.tcp_pos.copy()
    yield from _go(view, lambda: _above(hold, lift_to), GRIPPER_CLOSED, yaw, tolerance=0.01)


def _place(view: SceneView, where: Callable[[], np.ndarray], release_height: float, yaw: float) -> Expert:
    yield from _go(view, lambda: _above(where(), 0.14), GRIPPER_CLOSED, yaw, tolerance=0.01)
    yield from _go(view, lambda: _above(where(), release_height), GRIPPER_CLOSED, yaw, tolerance=0.006)
    yield from _go(
        view, lambda: _above(where(), release_height), GRIPPER_OPEN, yaw, tolerance=0.0, timeout=0, settle=5
    )
    yield from _go(view, lambda: _above(view.tcp_pos, 0.16), GRIPPER_OPEN, yaw, tolerance=0.01)


def _current_yaw(view: SceneView) -> float:
    """Yaw of a downward-pointing gripper: its finger axis is (-sin yaw, cos yaw, 0)."""
    finger_axis = quat_to_mat(view.tcp_quat)[:, 1]
    return float(np.arctan2(-finger_axis[0], finger_axis[1]))


def _expert_reach_target(view: SceneView) -> Expert:
    # Keeps the gripper's orientation: reaching needs no turn (and a turn the cameras hardly show is
    # hard to imitate), so its demonstrations are translations only.
    yield from _go(view, lambda: view.fixture("target"), GRIPPER_OPEN, None, tolerance=0.005, timeout=200)


def _expert_lift_block(view: SceneView) -> Expert:
    yield from _pick(view, RED, lift_to=0.16)


def _expert_place_in_bowl(view: SceneView) -> Expert:
    yield from _pick(view, RED)
    yield from _place(view, lambda: view.fixture("bowl"), 0.055, _current_yaw(view))


def _expert_both_in_bowl(view: SceneView) -> Expert:
    yield from _pick(view, RED)
    yield from _place(view, lambda: view.fixture("bowl") + np.array([0.0, 0.025, 0.0]), 0.055, 0.0)
    yield from _pick(view, BLUE)
    yield from _place(view, lambda: view.fixture("bowl") + np.array([0.0, -0.025, 0.0]), 0.055, 0.0)


def _expert_stack_blocks(view: SceneView) -> Expert:
    yield from _pick(view, RED, lift_to=0.14)
    blue_yaw = view.block_yaw(BLUE)
    yield from _place(
        view, lambda: view.block_pos[BLUE], view.block_pos[BLUE, 2] + 2 * BLOCK_HALF + 0.004, blue_yaw
    )


def _expert_push_to_zone(view: SceneView) -> Expert:
    def direction() -> np.ndarray:
        delta = view.fixture("zone")[:2] - view.block_pos[BLUE, :2]
        return delta / max(np.linalg.norm(delta), 1e-6)

    for _attempt in range(3):
        d = direction()
        yield from _go(view, functools.partial(_behind_block, view, d, 0.1), GRIPPER_CLOSED, tolerance=0.01)
        yield from _go(
            view, functools.partial(_behind_block, view, d, 0.025), GRIPPER_CLOSED, tolerance=0.008
        )
        for _ in range(120):
            d = direction()
            block = view.block_pos[BLUE, :2]
            contact_point = block - (BLOCK_HALF + 0.018) * d
            lateral = contact_point - view.tcp_pos[:2]
            lateral -= np.dot(lateral, d) * d
            if np.linalg.norm(lateral) > 0.02:
                break  # the block slid sideways: back off and line up again
            if np.all(np.abs(block - view.fixture("zone")[:2]) < 0.03):
                yield from _go(view, lambda: _above(view.tcp_pos, 0.12), GRIPPER_CLOSED, tolerance=0.01)
                return
            yield Target(np.array([*(contact_point + 0.02 * d + lateral), 0.025]), 0.0, GRIPPER_CLOSED)
        yield from _go(view, lambda: _above(view.tcp_pos, 0.1), GRIPPER_CLOSED, tolerance=0.01)


def _behind_block(view: SceneView, direction: np.ndarray, height: float) -> np.ndarray:
    """The point 6.5 cm behind the blue block, opposite the push ``direction``, at ``height``."""
    return np.array([*(view.block_pos[BLUE, :2] - 0.065 * direction), height])


def _expert_open_drawer(view: SceneView) -> Expert:
    # Hook the closed fingers between the drawer front and the handle, then pull towards the robot.
    hook = lambda: view.handle() + np.array([0.021, 0.0, -0.01])  # noqa: E731
    yield from _go(view, lambda: hook() + np.array([0.0, 0.0, 0.08]), GRIPPER_CLOSED, tolerance=0.008)
    yield from _go(view, hook, GRIPPER_CLOSED, tolerance=0.006)
    yield from _go(
        view, lambda: hook() + np.array([-0.02, 0.0, 0.0]), GRIPPER_CLOSED, tolerance=0.0, timeout=0
    )
    start = view.fixture("cabinet") + HANDLE_OFFSET
    for _ in range(80):
        if view.drawer > 0.115:
            break
        yield Target(hook() + np.array([-0.03, 0.0, 0.0]), 0.0, GRIPPER_CLOSED)
    yield from _go(view, lambda: _above(view.tcp_pos, start[2] + 0.1), GRIPPER_OPEN, tolerance=0.01)


def _expert_close_drawer(view: SceneView) -> Expert:
    front = lambda: view.handle() + np.array([-0.03, 0.0, -0.01])  # noqa: E731
    yield from _go(view, lambda: front() + np.array([0.0, 0.0, 0.08]), GRIPPER_CLOSED, tolerance=0.01)
    yield from _go(view, front, GRIPPER_CLOSED, tolerance=0.008)
    for _ in range(80):
        if view.drawer < 0.004:
            break
        yield Target(front() + np.array([0.05, 0.0, 0.0]), 0.0, GRIPPER_CLOSED)
    yield from _go(view, lambda: _above(view.tcp_pos, 0.16), GRIPPER_CLOSED, tolerance=0.01)


def _expert_put_in_drawer(view: SceneView) -> Expert:
    yield from _pick(view, RED, lift_to=0.16)
    inside = lambda: view.fixture("cabinet") + np.array([-0.145 - (view.drawer - 0.12), 0.0, 0.0])  # noqa: E731
    yield from _place(view, inside, 0.08, 0.0)


# --------------------------------------------------------------------------------------------------
# The task table


@dataclass(frozen=True)
class ArmTask:
    """A task of the arm suite: its spec, layout sampler, batched success check and scripted expert."""

    spec: TaskSpec
    sample_layout: Callable[[np.random.Generator, np.ndarray], Layout]
    success: Callable[[Readings, Fixtures], np.ndarray]
    expert: Callable[[SceneView], Expert]


ARM_TASKS: dict[str, ArmTask] = {
    task.spec.name: task
    for task in [
        ArmTask(
            TaskSpec("reach_target", "move the gripper to the cyan ball", 60),
            _with_fixtures("target"),
            _reach_target,
            _expert_reach_target,
        ),
        ArmTask(
            TaskSpec("lift_block", "pick up the red block", 80),
            _with_fixtures(),
            _lift_block,
            _expert_lift_block,
        ),
        ArmTask(
            TaskSpec("push_to_zone", "push the blue block onto the green square", 200),
            _with_fixtures("zone"),
            _push_to_zone,
            _expert_push_to_zone,
        ),
        ArmTask(
            TaskSpec("place_in_bowl", "put the red block in the bowl", 120),
            _with_fixtures("bowl"),
            _place_in_bowl,
            _expert_place_in_bowl,
        ),
        ArmTask(
            TaskSpec("close_drawer", "close the drawer", 80),
            _with_fixtures(cabinet=True, drawer_open=(0.08, 0.12)),
            _close_drawer,
            _expert_close_drawer,
        ),
        ArmTask(
            TaskSpec("open_drawer", "open the drawer", 100),
            _with_fixtures(cabinet=True),
            _open_drawer,
            _expert_open_drawer,
        ),
        ArmTask(
            TaskSpec("stack_blocks", "stack the red block on the blue block", 150),
            _with_fixtures(),
            _stack_blocks,
            _expert_stack_blocks,
        ),
        ArmTask(
            TaskSpec("put_in_drawer", "put the red block in the drawer", 160),
            _with_fixtures(cabinet=True, drawer_open=(0.115, 0.125)),
            _put_in_drawer,
            _expert_put_in_drawer,
        ),
        ArmTask(
            TaskSpec("both_in_bowl", "put the red block and the blue block in the bowl", 260),
            _with_fixtures("bowl"),
            _both_in_bowl,
            _expert_both_in_bowl,
        ),
    ]
}
TASK_INDEX = {name: index for index, name in enumerate(ARM_TASKS)}
SPLIT_INDEX = {InitStateSplit.TRAIN: 0, InitStateSplit.EVAL: 1}


def initial_layout(task: str, split: InitStateSplit, state_id: int, home_qpos: np.ndarray) -> Layout:
    """The layout of initial state ``state_id`` of ``split`` for ``task`` (deterministic)."""
    spec = ARM_TASKS[task].spec
    if not 0 <= state_id < spec.num_states(split):
        raise ValueError(
            f"init state id {state_id} out of range for {task} {split} (0..{spec.num_states(split) - 1})"
        )
    rng = np.random.default_rng(np.random.SeedSequence([TASK_INDEX[task], SPLIT_INDEX[split], state_id]))
    return ARM_TASKS[task].sample_layout(rng, home_qpos)


DOWN = np.diag([-1.0, 1.0, -1.0])  # TCP frame pointing at the table, fingers closing along world y


def target_rotation(yaw: float) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` of a downward-pointing gripper turned by ``yaw`` about world z."""
    return rot_z(yaw) @ DOWN
