import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim.core import OBS_STATE, TASK, AutoresetMode, InitStateSplit, image_key
from sim.gym import gym_id
from sim.mujoco.arm.env import ACTION_DIM, STATE_DIM, ArmBatchedEnv, home_qpos
from sim.mujoco.arm.tasks import ARM_TASKS, initial_layout

TASKS = list(ARM_TASKS)


@pytest.fixture(scope="module")
def env():
    env = ArmBatchedEnv(
        num_envs=4, tasks=["lift_block", "open_drawer"], cameras=("agentview", "wrist"), image_size=64
    )
    yield env
    env.close()


def test_observations_follow_lerobot_keys_and_spaces(env):
    obs, info = env.reset(seed=0)
    assert obs[OBS_STATE].shape == (4, STATE_DIM) and obs[OBS_STATE].dtype == np.float32
    for camera in ("agentview", "wrist"):
        frames = obs[image_key(camera)]
        assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
        assert frames.std() > 10, "rendered frames should show a scene, not a blank image"
    assert obs[TASK] == (
        "pick up the red block",
        "open the drawer",
        "pick up the red block",
        "open the drawer",
    )
    assert env.observation_space.contains({k: v for k, v in obs.items() if k != TASK} | {TASK: obs[TASK]})
    np.testing.assert_array_equal(info["success"], False)
    assert env.action_space.shape == (4, ACTION_DIM)


def test_reset_is_deterministic_given_seed(env):
    first, _ = env.reset(seed=7)
    second, _ = env.reset(seed=7)
    np.testing.assert_array_equal(first[OBS_STATE], second[OBS_STATE])
    np.testing.assert_array_equal(first[image_key("agentview")], second[image_key("agentview")])


def _block_poses(task, split):
    states = range(ARM_TASKS[task].spec.num_states(split))
    return {
        tuple(np.round(initial_layout(task, split, k, home_qpos()).block_poses.ravel(), 9)) for k in states
    }


@pytest.mark.parametrize("task", TASKS)
def test_train_and_eval_initial_states_are_disjoint(task):
    train, evaluation = _block_poses(task, InitStateSplit.TRAIN), _block_poses(task, InitStateSplit.EVAL)
    assert len(evaluation) == ARM_TASKS[task].spec.num_eval_states, "duplicate eval states"
    assert not train & evaluation, "train and eval initial states overlap"


@pytest.mark.parametrize("task", TASKS)
def test_scripted_expert_solves_at_least_95_percent_of_eval_states(task):
    spec = ARM_TASKS[task].spec
    env = ArmBatchedEnv(num_envs=spec.num_eval_states, tasks=[task], cameras=(), autoreset_mode="Disabled")
    try:
        env.reset(options={"split": "eval", "init_state_ids": np.arange(spec.num_eval_states)})
        solved = np.zeros(env.num_envs, bool)
        for _ in range(spec.max_steps):
            _, reward, terminated, truncated, _info = env.step(env.expert_action())
            solved |= terminated
            if (terminated | truncated).all():
                break
        assert (terminated | truncated).all(), "every episode must end by max_steps"
        np.testing.assert_array_equal(reward[terminated], reward[terminated])  # reward is defined
        assert solved.mean() >= 0.95, f"{task}: expert solved {solved.mean():.0%} of eval states"
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_success_check_fails_when_the_arm_does_nothing(task):
    env = ArmBatchedEnv(num_envs=8, tasks=[task], cameras=(), autoreset_mode="Disabled")
    try:
        env.reset(seed=0, options={"split": "eval"})
        hold_still = np.zeros((8, ACTION_DIM))
        for _ in range(ARM_TASKS[task].spec.max_steps):
            _, _, terminated, truncated, info = env.step(hold_still)
            assert not info["success"].any(), f"{task}: success without doing anything"
        assert truncated.all() and not terminated.any()
    finally:
        env.close()


def test_same_step_autoreset_reports_final_observation():
    env = ArmBatchedEnv(num_envs=2, tasks=["reach_target"], cameras=())
    try:
        env.reset(seed=0)
        for _ in range(60):
            obs, reward, terminated, _truncated, info = env.step(env.expert_action())
            if terminated.any():
                break
        assert terminated.any(), "the expert reaches the ball within the episode"
        assert "final_obs" in info and info["_final_obs"][terminated].all()
        assert info["final_success"][terminated].all()
        assert reward[terminated].tolist() == [1.0] * int(terminated.sum())
        # The new episode starts near home, not at the ball.
        assert not np.allclose(obs[OBS_STATE][terminated], info["final_obs"][OBS_STATE][terminated])
    finally:
        env.close()


def test_disabled_autoreset_freezes_finished_envs():
    env = ArmBatchedEnv(num_envs=2, tasks=["reach_target"], cameras=(), autoreset_mode=AutoresetMode.DISABLED)
    try:
        env.reset(seed=0, options={"split": "eval", "init_state_ids": [0, 1]})
        for _ in range(60):
            obs, _, terminated, _, _ = env.step(env.expert_action())
            if terminated.all():
                break
        frozen = obs[OBS_STATE].copy()
        obs, reward, terminated, _, _ = env.step(np.ones((2, ACTION_DIM)))
        np.testing.assert_array_equal(obs[OBS_STATE], frozen)
        assert terminated.all() and (reward == 0).all()
    finally:
        env.close()


def test_disabled_autoreset_neither_simulates_nor_renders_finished_envs():
    env = ArmBatchedEnv(
        num_envs=2,
        tasks=["reach_target"],
        cameras=("agentview",),
        image_size=32,
        render_workers=0,
        autoreset_mode=AutoresetMode.DISABLED,
    )
    rendered: list[list[int] | None] = []
    render = env.renderer.render

    def recording_render(indices=None):
        rendered.append(None if indices is None else list(indices))
        return render(indices)

    env.renderer.render = recording_render
    lift = np.zeros(ACTION_DIM)
    lift[2] = 0.5  # env 1 moves up and away, never reaching its target
    try:
        env.reset(seed=0, options={"split": "eval", "init_state_ids": [0, 1]})
        for _ in range(60):
            actions = env.expert_action()
            actions[1] = lift
            obs, _, terminated, truncated, _ = env.step(actions)
            if terminated[0]:
                break
        assert terminated[0] and not (terminated[1] or truncated[1]), "env 0 finished first"
        final_state, final_frame = obs[OBS_STATE][0].copy(), obs[image_key("agentview")][0].copy()
        rendered.clear()
        for _ in range(3):
            obs, _, _, _, _ = env.step(np.stack([lift, lift]))
            np.testing.assert_array_equal(obs[OBS_STATE][0], final_state)
            np.testing.assert_array_equal(obs[image_key("agentview")][0], final_frame)
        assert rendered == [[1]] * 3, "only the env still running is rendered"
    finally:
        env.close()


def test_simulator_steps_only_the_given_envs_and_them_as_a_full_step_would():
    env = ArmBatchedEnv(num_envs=3, tasks=["reach_target"], cameras=())
    try:
        env.reset(seed=0)
        start = env.sim.state.copy()
        controls = env._controls(np.tile(np.linspace(-0.5, 0.5, ACTION_DIM), (3, 1)))
        env.sim.step(controls)
        full = env.sim.state.copy()
        env.sim.state[:] = start
        env.sim.step(controls, np.array([2, 0]))
        np.testing.assert_array_equal(env.sim.state[[0, 2]], full[[0, 2]])
        np.testing.assert_array_equal(env.sim.state[1], start[1])
    finally:
        env.close()


def test_step_before_reset_is_refused():
    env = ArmBatchedEnv(num_envs=1, tasks=["reach_target"], cameras=())
    try:
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(np.zeros((1, ACTION_DIM)))
    finally:
        env.close()


@pytest.mark.parametrize(
    ("actions", "error"),
    [
        (np.zeros((4, 6)), ValueError),
        (np.zeros((3, 7)), ValueError),
        ([["x"] * 7] * 4, TypeError),
        (np.full((4, 7), np.nan), ValueError),
        (np.full((4, 7), -np.inf), ValueError),
    ],
)
def test_bad_actions_raise_and_leave_the_env_usable(env, actions, error):
    env.reset(seed=1)
    with pytest.raises(error):
        env.step(actions)
    obs, *_ = env.step(np.zeros((4, ACTION_DIM)))
    assert np.isfinite(obs[OBS_STATE]).all()


def test_out_of_range_actions_are_clipped_and_flagged(env):
    env.reset(seed=1)
    actions = np.zeros((4, ACTION_DIM))
    actions[1, 0] = 5.0
    _, _, _, _, info = env.step(actions)
    np.testing.assert_array_equal(info["action_clipped"], [False, True, False, False])


def test_bad_construction_and_reset_arguments_have_clear_errors(env):
    with pytest.raises(ValueError, match=r"unknown arm task.*known tasks: reach_target"):
        ArmBatchedEnv(num_envs=1, tasks=["fly"])
    with pytest.raises(ValueError, match="unknown camera"):
        ArmBatchedEnv(num_envs=1, cameras=("front",))
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        ArmBatchedEnv(num_envs=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        env.reset(seed=0.5)
    with pytest.raises(ValueError, match="unknown task"):
        env.reset(options={"tasks": ["fly"] * 4})
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"split": "eval", "init_state_ids": [0, 0, 0, 50]})


def test_gymnasium_single_env_passes_env_checker():
    assert sim.ENVS.get("arm") is ArmBatchedEnv
    single = gym.make(gym_id("place_in_bowl"), image_size=32)
    try:
        check_env(single.unwrapped, skip_render_check=True)
        obs, _ = single.reset(seed=0, options={"split": "eval", "init_state_id": 3})
        assert obs[TASK] == "put the red block in the bowl"
        obs, reward, _terminated, _truncated, _ = single.step(single.unwrapped.expert_action())
        assert obs[OBS_STATE].shape == (STATE_DIM,) and reward == 0.0
    finally:
        single.close()


def test_sensor_jacobian_matches_mujoco_jacobian():
    import mujoco

    from sim.mujoco.arm.env import load_model
    from sim.mujoco.arm.tasks import Readings

    model = load_model()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    data.qpos[:7] = home_qpos() + rng.uniform(-0.5, 0.5, 7)
    mujoco.mj_forward(model, data)
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    mujoco.mj_jacSite(model, data, jacp, jacr, model.site("tcp").id)
    expected = np.concatenate([jacp[:, :7], jacr[:, :7]])
    np.testing.assert_allclose(
        Readings.from_sensordata(data.sensordata[None]).tcp_jacobian()[0], expected, atol=1e-9
    )
    names = [model.sensor(i).name for i in range(model.nsensor)]
    assert model.nsensordata == 80 and names[-1] == "link7_axis"


def test_render_workers_produce_the_same_frames_as_in_process_rendering():
    import multiprocessing

    def frames(render_workers):
        env = ArmBatchedEnv(
            num_envs=4,
            tasks=["stack_blocks"],
            cameras=("agentview", "wrist"),
            image_size=48,
            render_workers=render_workers,
        )
        try:
            env.reset(seed=3)
            obs, *_ = env.step(np.full((4, ACTION_DIM), 0.3))
            return obs[image_key("agentview")], obs[image_key("wrist")]
        finally:
            env.close()

    children_before = set(multiprocessing.active_children())
    local, pooled = frames(0), frames(2)
    for expected, actual in zip(local, pooled, strict=True):
        assert actual.shape == (4, 48, 48, 3)
        np.testing.assert_array_equal(actual, expected)
    assert set(multiprocessing.active_children()) <= children_before, (
        "closing the env stops its render workers"
    )
