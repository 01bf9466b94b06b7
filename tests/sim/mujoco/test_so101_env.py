import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim.core import OBS_ENV_STATE, OBS_STATE, TASK, InitStateSplit, image_key
from sim.emulators.feetech import KP_PER_P, KV_PER_D
from sim.gym import SingleEnv
from sim.mujoco.so101.env import (
    MAX_TRANSLATION,
    SERVO_KP,
    SERVO_KV,
    STATE_DIM,
    ActionMode,
    EndEffectorControl,
    So101BatchedEnv,
    joint_ranges,
    joints_to_normalized,
    normalized_to_joints,
)
from sim.mujoco.so101.tasks import (
    APPROACH_GAIN,
    SO101_TASKS,
    SPEED,
    ExpertView,
    So101Kinematics,
    _move,
    down_rotation,
    initial_state,
    ready_pose,
)

TASKS = list(SO101_TASKS)


@pytest.fixture(scope="module")
def env():
    env = So101BatchedEnv(num_envs=2, cameras=("front", "wrist"), image_size=48, render_workers=0)
    yield env
    env.close()


def test_registered_as_so101():
    assert sim.ENVS.get("so101") is So101BatchedEnv


def test_observations_follow_lerobot_keys_and_spaces(env):
    obs, info = env.reset(seed=0)
    assert obs[OBS_STATE].shape == (2, STATE_DIM) and obs[OBS_STATE].dtype == np.float32
    for camera in ("front", "wrist"):
        frames = obs[image_key(camera)]
        assert frames.shape == (2, 48, 48, 3) and frames.dtype == np.uint8
        assert frames.std() > 10, "rendered frames should show a scene"
    assert obs[TASK] == tuple(SO101_TASKS[task].spec.instruction for task in TASKS)
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(info["success"], False)
    assert env.action_space.shape == (2, 6)


def test_state_is_the_normalized_joint_positions_of_the_initial_state(env):
    obs, _ = env.reset(options={"split": "eval", "init_state_ids": [3, 4]})
    for index, task in enumerate(TASKS):
        expected = joints_to_normalized(initial_state(task, "eval", 3 + index).arm_qpos)
        np.testing.assert_allclose(obs[OBS_STATE][index], expected, atol=1e-6)


def test_environment_state_is_the_block_pose_of_the_initial_state(env):
    obs, _ = env.reset(options={"split": "eval", "init_state_ids": [3, 4]})
    assert obs[OBS_ENV_STATE].shape == (2, 5) and obs[OBS_ENV_STATE].dtype == np.float32
    for index, task in enumerate(TASKS):
        start = initial_state(task, "eval", 3 + index)
        x, y, z, cos_4yaw, sin_4yaw = obs[OBS_ENV_STATE][index]
        np.testing.assert_allclose([x, y, z], [*start.block_xy, 0.0125], atol=1e-4)
        # A cube looks the same every quarter turn, and so does its encoded yaw.
        for quarter_turns in range(4):
            yaw = 4 * (start.block_yaw + quarter_turns * np.pi / 2)
            np.testing.assert_allclose([cos_4yaw, sin_4yaw], [np.cos(yaw), np.sin(yaw)], atol=1e-4)


def test_absolute_joint_targets_are_tracked_by_the_servos(env):
    env.reset(seed=1)
    target = joints_to_normalized(ready_pose() + np.array([0.2, -0.1, 0.1, -0.1, 0.3, 0.0]))
    for _ in range(20):
        obs, *_ = env.step(np.tile(target, (2, 1)))
    # Stiff position servos (LeRobot's P 16): within half a degree of the targets after 1 s.
    error = normalized_to_joints(obs[OBS_STATE]) - normalized_to_joints(target)
    assert np.abs(error).max() < np.radians(0.5)


def test_reset_is_deterministic_given_seed(env):
    first, _ = env.reset(seed=7)
    second, _ = env.reset(seed=7)
    np.testing.assert_array_equal(first[OBS_STATE], second[OBS_STATE])
    np.testing.assert_array_equal(first[image_key("front")], second[image_key("front")])


@pytest.mark.parametrize("task", TASKS)
def test_train_and_eval_initial_states_are_disjoint(task):
    def states(split):
        spec = SO101_TASKS[task].spec
        return {
            tuple(np.round([*s.block_xy, s.block_yaw], 9))
            for s in (initial_state(task, split, k) for k in range(spec.num_states(split)))
        }

    train, evaluation = states(InitStateSplit.TRAIN), states(InitStateSplit.EVAL)
    assert len(evaluation) == SO101_TASKS[task].spec.num_eval_states
    assert not train & evaluation


def test_normalization_maps_each_joint_range_onto_minus_one_one():
    ranges = joint_ranges()
    np.testing.assert_allclose(joints_to_normalized(ranges[:, 0]), -1.0)
    np.testing.assert_allclose(joints_to_normalized(ranges[:, 1]), 1.0)
    values = np.random.default_rng(0).uniform(-1, 1, (5, 6))
    np.testing.assert_allclose(joints_to_normalized(normalized_to_joints(values)), values)


def test_servo_gains_are_the_emulators_at_lerobots_coefficients():
    assert pytest.approx(16 * KP_PER_P) == SERVO_KP and pytest.approx(32 * KV_PER_D) == SERVO_KV


def test_inverse_kinematics_reaches_a_downward_pose():
    kinematics = So101Kinematics()
    goal = np.array([0.2, 0.05, 0.03])
    joints = kinematics.solve(goal, down_rotation(0.3), ready_pose(), iterations=100)
    np.testing.assert_allclose(kinematics.tcp(joints), goal, atol=1e-3)


def test_expert_moves_servo_the_tcp_proportionally_at_capped_speed():
    """Each step covers `APPROACH_GAIN` of the remaining offset, at most `SPEED`: far away the steps are
    SPEED long, near the goal they shrink geometrically (the arm never moves here: no physics)."""
    view = ExpertView(So101Kinematics())
    view.arm_qpos = ready_pose().copy()
    view.command = ready_pose().copy()
    view.tcp = view.kinematics.tcp(view.arm_qpos)
    goal = view.tcp + np.array([0.03, -0.03, -0.04])
    commanded = [view.kinematics.tcp(target) for target in _move(view, goal, 0.0, 1.0, timeout=12)]
    remaining = np.linalg.norm(np.array([view.tcp, *commanded]) - goal, axis=1)
    expected = [remaining[0]]
    for _ in commanded:
        expected.append(expected[-1] - min(APPROACH_GAIN * expected[-1], SPEED))
    np.testing.assert_allclose(remaining, expected, atol=1e-3)
    assert remaining[1] == pytest.approx(remaining[0] - SPEED, abs=1e-3) and remaining[-1] < 0.002


def test_ee_actions_and_joint_targets_invert_each_other():
    control = EndEffectorControl()
    rng = np.random.default_rng(0)
    last = np.stack([initial_state("push", "eval", i).arm_qpos for i in range(4)])
    low, high = joint_ranges().T
    targets = np.clip(last + rng.uniform(-0.05, 0.05, last.shape), low, high)
    actions = control.actions(targets, last)
    assert actions.shape == (4, 7) and np.abs(actions).max() < 1.0  # nothing clipped
    # Five joints: a target's twist determines it; the damping shortens the weakest direction by ~2%.
    np.testing.assert_allclose(control.joint_targets(actions, last), targets, atol=2e-3)


def test_an_ee_action_moves_the_tcp_along_the_commanded_direction():
    env = So101BatchedEnv(num_envs=1, cameras=(), action_mode="ee", autoreset_mode="Disabled")
    try:
        assert env.action_space.shape == (1, 7)
        env.reset(options={"split": "eval", "init_state_ids": [0]})
        kinematics = So101Kinematics()
        start = kinematics.tcp(env.readings().arm_qpos[0])
        hold = np.array([[0, 0, 0, 0, 0, 0, 1]], np.float32)  # no motion, gripper open
        # There and back along each axis (down first: the ready pose's wrist is near its upper limit).
        for direction in np.eye(3)[[0, 0, 1, 1, 2, 2]] * [[1], [-1], [1], [-1], [-1], [1]]:
            before = kinematics.tcp(env.readings().arm_qpos[0])
            for _ in range(8):
                env.step(hold + np.concatenate([0.2 * direction, np.zeros(4)]).astype(np.float32))
            for _ in range(10):  # let the servos catch up
                env.step(hold)
            moved = kinematics.tcp(env.readings().arm_qpos[0]) - before
            commanded = 8 * 0.2 * MAX_TRANSLATION  # 8 cm
            # With the orientation held, five joints cannot always translate exactly: the weighted least
            # squares trades a little translation against rotation (0.95-1.14 of it here).
            assert 0.85 * commanded < moved @ direction < 1.2 * commanded, moved
            assert np.linalg.norm(moved - (moved @ direction) * direction) < 0.1 * commanded, moved
        assert np.linalg.norm(kinematics.tcp(env.readings().arm_qpos[0]) - start) < 0.02
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("action_mode", list(ActionMode))
@pytest.mark.parametrize("task", TASKS)
def test_scripted_expert_solves_most_eval_states(task, action_mode):
    """At least 90% with joint targets; 80% through the ``ee`` controller, whose joint targets differ by
    0.001-0.004 rad from the expert's plan (damping), which the chaotic pushing contact can turn into a
    different outcome (84-91% on 32 train states; collection keeps successful episodes only)."""
    threshold = 0.9 if action_mode == "joint" else 0.8
    spec = SO101_TASKS[task].spec
    n = 16
    env = So101BatchedEnv(
        num_envs=n, tasks=[task], cameras=(), autoreset_mode="Disabled", action_mode=action_mode
    )
    try:
        env.reset(options={"split": "eval", "init_state_ids": np.arange(n)})
        solved = np.zeros(n, bool)
        for _ in range(spec.max_steps):
            _, _, terminated, truncated, _ = env.step(env.expert_action())
            solved |= terminated
            if (terminated | truncated).all():
                break
        assert (terminated | truncated).all()
        assert solved.mean() >= threshold, f"{task} ({action_mode}): expert solved {solved.mean():.0%}"
    finally:
        env.close()


def test_single_env_passes_gymnasium_checks():
    env = SingleEnv(So101BatchedEnv(num_envs=1, cameras=("front",), image_size=32, autoreset_mode="Disabled"))
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_inputs_are_validated(env):
    with pytest.raises(ValueError, match="known tasks: pick_place, push"):
        So101BatchedEnv(num_envs=1, tasks=["fly"])
    with pytest.raises(ValueError, match="front, wrist"):
        So101BatchedEnv(num_envs=1, cameras=("top",))
    with pytest.raises(ValueError, match="action_mode must be one of"):
        So101BatchedEnv(num_envs=1, action_mode="torque")
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"split": "eval", "init_state_ids": [50, 0]})
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full((2, 6), np.nan))
    with pytest.raises(ValueError, match="out of range"):
        initial_state("push", "eval", 50)
