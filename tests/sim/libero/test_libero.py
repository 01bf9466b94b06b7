"""LIBERO behind the batched env contract: every suite builds and steps, the protocol constants, observation
keys and shapes, a recorded successful trajectory replays to success (with both render settings), train
and eval initial states, the process-parallel env and its worker restart.

Building a LIBERO env takes 5-15 s here, so envs are shared across tests (module-scoped fixtures) and use
small renders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("libero", reason="LIBERO is an optional extra: pip install -e .[libero]")
from sim.core import OBS_STATE, TASK, AutoresetMode, InitStateSplit, image_key
from sim.libero.env import (
    CAMERAS,
    Libero10Env,
    Libero90Env,
    LiberoBatchedEnv,
    LiberoGoalEnv,
    LiberoObjectEnv,
    LiberoSpatialEnv,
    robosuite_axis_angle,
)
from sim.libero.suites import (
    MAX_STEPS,
    NOOP_ACTION,
    NUM_NOOP_STEPS,
    PROTOCOL_RENDER_SIZE,
    SUITES,
    instruction_of,
    load_eval_init_states,
    task_names,
)

pytestmark = pytest.mark.timeout(1800)  # LIBERO envs take 5-15 s to build, minutes on a starved machine
REPLAY = json.loads((Path(__file__).parent / "data" / "libero_spatial_task0_state0.json").read_text())
SPATIAL_TASK = REPLAY["task"]


@pytest.fixture(scope="module")
def spatial() -> Iterator[LiberoBatchedEnv]:
    """One libero_spatial env (task 0), both cameras at 32 px rendered at 64, autoreset disabled."""
    env = LiberoBatchedEnv(
        "libero_spatial",
        tasks=[SPATIAL_TASK],
        image_size=32,
        render_size=64,
        autoreset_mode=AutoresetMode.DISABLED,
    )
    yield env
    env.close()


def test_protocol_constants() -> None:
    # OpenVLA's run_libero_eval.py: max steps per suite, 10 wait steps of a no-op with the gripper open.
    assert MAX_STEPS == {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
        "libero_90": 400,
    }
    assert NUM_NOOP_STEPS == 10
    np.testing.assert_array_equal(NOOP_ACTION, [0, 0, 0, 0, 0, 0, -1])
    assert PROTOCOL_RENDER_SIZE == 256
    assert [len(task_names(suite)) for suite in SUITES] == [10, 10, 10, 10, 90]
    for suite in SUITES:
        for task in task_names(suite):
            states = load_eval_init_states(suite, task)
            assert states.shape[0] == 50 and np.isfinite(states).all()
    assert (
        instruction_of("KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet")
        == "close the top drawer of the cabinet"
    )
    assert instruction_of(
        "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket"
    ) == ("put both the alphabet soup and the tomato sauce in the basket")
    for env_class, suite in [
        (LiberoSpatialEnv, "libero_spatial"),
        (LiberoObjectEnv, "libero_object"),
        (LiberoGoalEnv, "libero_goal"),
        (Libero10Env, "libero_10"),
        (Libero90Env, "libero_90"),
    ]:
        assert suite == env_class.SUITE
        assert task_names(suite) == env_class.TASK_NAMES
        assert env_class.CAMERA_NAMES == ("agentview", "wrist")


def test_axis_angle_follows_robosuite() -> None:
    # 90 degrees about z: q = (0, 0, sin 45, cos 45) -> 2 acos(cos 45) = pi/2 about z.
    half = np.sqrt(0.5)
    np.testing.assert_allclose(robosuite_axis_angle(np.array([0, 0, half, half])), [0, 0, np.pi / 2])
    # No sign canonicalization: -q gives angle 2 acos(-cos 45) = 3 pi / 2 about -z.
    np.testing.assert_allclose(robosuite_axis_angle(np.array([0, 0, -half, -half])), [0, 0, -3 * np.pi / 2])
    np.testing.assert_array_equal(robosuite_axis_angle(np.array([0.0, 0.0, 0.0, 1.0])), np.zeros(3))


def test_task_names_need_no_libero_import() -> None:
    code = (
        "import sys, sim; cls = sim.ENVS.get('libero_90'); assert len(cls.TASK_NAMES) == 90; "
        "assert 'libero.libero' not in sys.modules and 'robosuite' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suite": "libero_100"}, "unknown LIBERO suite"),
        ({"suite": "libero_goal", "tasks": ["fly"]}, "unknown libero_goal task"),
        ({"suite": "libero_goal", "cameras": ["frontview"]}, "unknown camera"),
        ({"suite": "libero_goal", "image_size": 8}, "image_size"),
        ({"suite": "libero_goal", "num_envs": 0}, "num_envs"),
    ],
)
def test_bad_arguments_are_refused_before_building(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiberoBatchedEnv(**kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["libero_object", "libero_goal", "libero_10", "libero_90"])
def test_every_suite_builds_and_steps(suite: str) -> None:
    task = task_names(suite)[0]
    env = LiberoBatchedEnv(suite, tasks=[task], cameras=("agentview",), image_size=32, render_size=64)
    try:
        obs, info = env.reset(options={"split": "eval", "init_state_ids": [1]})
        assert obs[TASK] == (instruction_of(task),)
        for _ in range(2):
            obs, reward, terminated, truncated, info = env.step(np.zeros((1, 7), np.float32))
        assert obs[image_key("agentview")].shape == (1, 32, 32, 3)
        assert obs[OBS_STATE].shape == (1, 8) and np.isfinite(obs[OBS_STATE]).all()
        assert reward.shape == terminated.shape == truncated.shape == info["success"].shape == (1,)
        assert env.task_specs[task].max_steps == MAX_STEPS[suite]
    finally:
        env.close()


def test_observations_follow_the_contract(spatial: LiberoBatchedEnv) -> None:
    obs, info = spatial.reset(options={"split": "eval", "init_state_ids": [0]})
    assert set(obs) == {OBS_STATE, image_key("agentview"), image_key("wrist"), TASK}
    assert obs[OBS_STATE].dtype == np.float32 and obs[OBS_STATE].shape == (1, 8)
    for camera in CAMERAS:
        frames = obs[image_key(camera)]
        assert frames.dtype == np.uint8 and frames.shape == (1, 32, 32, 3) and frames.std() > 5
    assert obs[TASK] == (
        "pick up the black bowl between the plate and the ramekin and place it on the plate",
    )
    assert spatial.observation_space.contains(obs)
    assert info["task_id"].tolist() == [0] and info["init_state_id"].tolist() == [0]
    # The gripper starts open after the no-op steps, and the state is LIBERO's eef pose + finger joints.
    libero = spatial.libero_envs[0].env
    eef = libero.sim.data.site_xpos[libero.robots[0].eef_site_id]
    np.testing.assert_allclose(obs[OBS_STATE][0, :3], eef, atol=1e-6)
    assert obs[OBS_STATE][0, 6] > 0.03 and obs[OBS_STATE][0, 7] < -0.03
    # Rendering rotates LIBERO's raw (bottom-up) frame by 180 degrees, as OpenVLA does.
    raw = spatial.render_raw(0, "agentview")
    assert raw.shape == (64, 64, 3)
    rotated = raw[::-1, ::-1]
    resized = rotated.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(resized - obs[image_key("agentview")][0]).mean() < 1.0
    with pytest.raises(ValueError, match="out of range"):
        spatial.reset(options={"split": "eval", "init_state_ids": [50]})
    with pytest.raises(ValueError, match="shape"):
        spatial.step(np.zeros((2, 7)))


def _replay(env: LiberoBatchedEnv) -> tuple[list[bool], list[bool], list[dict[str, object]]]:
    env.reset(options={"split": REPLAY["split"], "init_state_ids": [REPLAY["init_state_id"]]})
    terminated_steps, success_steps, infos = [], [], []
    for action in REPLAY["actions"]:
        _, _reward, terminated, truncated, info = env.step(np.asarray(action)[None])
        terminated_steps.append(bool(terminated[0]))
        success_steps.append(bool(info["success"][0]))
        infos.append(info)
        assert not truncated[0]
    return terminated_steps, success_steps, infos


def test_recorded_trajectory_succeeds(spatial: LiberoBatchedEnv) -> None:
    terminated, success, _ = _replay(spatial)
    assert terminated[-1] and success[-1] and not any(terminated[:-1])
    # Disabled autoreset: the finished env stays terminated and successful, its actions ignored.
    obs_before = spatial.libero_envs[0].get_sim_state().copy()
    _, reward, done, _, info = spatial.step(np.ones((1, 7)))
    assert done[0] and info["success"][0] and reward[0] == 0.0
    np.testing.assert_array_equal(spatial.libero_envs[0].get_sim_state(), obs_before)


def test_standard_render_settings_give_the_same_success(spatial: LiberoBatchedEnv) -> None:
    """LIBERO's own render settings (multisampling, reflections) change the frames, not the outcome."""
    spatial.reset(options={"split": "eval", "init_state_ids": [0]})
    fast_frame = spatial.render_raw(0, "agentview")
    spatial.set_fast_render(False)
    try:
        standard_frame = spatial.render_raw(0, "agentview")
        assert 0 < np.abs(fast_frame.astype(int) - standard_frame.astype(int)).mean() < 10
        terminated, success, _ = _replay(spatial)
        assert terminated[-1] and success[-1] and not any(terminated[:-1])
    finally:
        spatial.set_fast_render(True)
    # Replayed again after other episodes, the trajectory still succeeds: episodes do not depend on history.
    terminated, _, _ = _replay(spatial)
    assert terminated[-1]


@pytest.mark.slow
def test_same_step_autoreset_reports_the_final_observation() -> None:
    env = LiberoBatchedEnv(
        "libero_spatial", tasks=[SPATIAL_TASK], cameras=(), autoreset_mode=AutoresetMode.SAME_STEP
    )
    try:
        terminated, _, infos = _replay(env)
        assert terminated[-1] and not any(terminated[:-1])
        last = infos[-1]
        assert last["_final_obs"][0] and last["final_success"][0]  # type: ignore[index]
        assert last["final_obs"][OBS_STATE].shape == (1, 8)  # type: ignore[index]
        assert "_final_obs" not in infos[-2]
    finally:
        env.close()


def test_train_states_are_deterministic_and_not_eval_states(spatial: LiberoBatchedEnv) -> None:
    states = []
    for _ in range(2):
        spatial.reset(options={"split": "train", "init_state_ids": [7]})
        states.append(spatial.libero_envs[0].get_sim_state().copy())
    np.testing.assert_array_equal(states[0], states[1])
    spatial.reset(options={"split": "train", "init_state_ids": [8]})
    assert np.abs(spatial.libero_envs[0].get_sim_state() - states[0]).max() > 1e-3
    # Compare the sampled (pre-settling) object poses with the 50 eval states.
    evals = load_eval_init_states("libero_spatial", SPATIAL_TASK)
    sampled = spatial.initial_state(spatial._slots[0], InitStateSplit.TRAIN, 7)
    assert np.abs(evals[:, 1:] - sampled[None, 1:]).max(axis=1).min() > 1e-3


@pytest.mark.slow
def test_process_parallel_env_and_worker_restart() -> None:
    with LiberoSpatialEnv(
        num_envs=2,
        num_workers=2,
        tasks=[SPATIAL_TASK],
        cameras=("agentview",),
        image_size=32,
        render_size=64,
        autoreset_mode=AutoresetMode.DISABLED,
    ) as env:
        obs, info = env.reset(seed=0, options={"split": "eval", "init_state_ids": [0, 1]})
        assert obs[image_key("agentview")].shape == (2, 32, 32, 3)
        assert env.tasks == (SPATIAL_TASK, SPATIAL_TASK)
        assert info["init_state_id"].tolist() == [0, 1]
        first = obs[OBS_STATE].copy()
        obs, *_ = env.step(np.zeros((2, 7)))
        assert np.abs(obs[OBS_STATE] - first).max() < 0.05
        # Kill worker 1: its env is truncated and rebuilt, worker 0's episode carries on.
        env._resources.processes[1].kill()
        obs, _, terminated, truncated, info = env.step(np.zeros((2, 7)))
        assert info["worker_restarted"].tolist() == [False, True]
        assert truncated.tolist() == [False, True] and not terminated.any()
        assert env.num_restarts == 1
        obs, *_ = env.step(np.zeros((2, 7)))
        assert np.isfinite(obs[OBS_STATE]).all()
