"""robosuite's standard tasks behind the batched env contract: every task builds and steps, observations,
deterministic and disjoint train / eval initial states, a scripted Lift succeeds, the process-parallel env.

One env (module-scoped) is reused across tests; building a task takes a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("robosuite", reason="robosuite is an optional extra: pip install -e .[libero]")
from sim.core import OBS_STATE, TASK, AutoresetMode, InitStateSplit, image_key
from sim.robosuite.env import ROBOSUITE_TASKS, RobosuiteBatchedEnv, RobosuiteEnv

pytestmark = pytest.mark.timeout(1800)  # building robosuite scenes is slow on a starved 2-core machine


@pytest.fixture(scope="module")
def env() -> Iterator[RobosuiteBatchedEnv]:
    """One robosuite env (built per task at reset), agentview and wrist at 32 px, autoreset disabled."""
    batched = RobosuiteBatchedEnv(num_envs=1, image_size=32, autoreset_mode=AutoresetMode.DISABLED)
    yield batched
    batched.close()


def test_task_names_need_no_robosuite_import() -> None:
    code = (
        "import sys, sim; cls = sim.ENVS.get('robosuite'); "
        "assert cls.TASK_NAMES == ('lift', 'stack', 'pick_place_can', 'door'), cls.TASK_NAMES; "
        "assert cls.CAMERA_NAMES == ('agentview', 'wrist'); assert 'robosuite' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown robosuite task"):
        RobosuiteBatchedEnv(tasks=["juggle"])
    with pytest.raises(ValueError, match="unknown camera"):
        RobosuiteBatchedEnv(cameras=["frontview"])
    with pytest.raises(ValueError, match="divide"):
        RobosuiteEnv(num_envs=3, num_workers=2)


@pytest.mark.parametrize("task", list(ROBOSUITE_TASKS))
def test_every_task_builds_and_steps(env: RobosuiteBatchedEnv, task: str) -> None:
    obs, info = env.reset(options={"split": "eval", "tasks": [task], "init_state_ids": [0]})
    assert obs[TASK] == (ROBOSUITE_TASKS[task][1].instruction,)
    assert info["task_id"].tolist() == [list(ROBOSUITE_TASKS).index(task)]
    for _ in range(2):
        obs, reward, terminated, truncated, info = env.step(np.zeros((1, 7), np.float32))
    assert set(obs) == {OBS_STATE, image_key("agentview"), image_key("wrist"), TASK}
    for camera in ("agentview", "wrist"):
        assert obs[image_key(camera)].shape == (1, 32, 32, 3) and obs[image_key(camera)].std() > 1
    assert obs[OBS_STATE].shape == (1, 8) and obs[OBS_STATE].dtype == np.float32
    assert env.observation_space.contains(obs)
    assert not terminated[0] and not truncated[0] and reward[0] == 0.0


def test_initial_states_are_deterministic_and_splits_disjoint(env: RobosuiteBatchedEnv) -> None:
    env.reset(options={"split": "eval", "tasks": ["lift"], "init_state_ids": [3]})
    slot = env._slots[0]
    first = env.sim_envs[0].sim.get_state().flatten()
    env.reset(options={"split": "eval", "tasks": ["lift"], "init_state_ids": [3]})
    np.testing.assert_array_equal(env.sim_envs[0].sim.get_state().flatten(), first)
    evals = np.stack([env.initial_state(slot, InitStateSplit.EVAL, i) for i in range(50)])
    trains = np.stack([env.initial_state(slot, InitStateSplit.TRAIN, i) for i in range(20)])
    distance = np.abs(evals[:, None, 1:] - trains[None, :, 1:]).max(axis=2)
    assert distance.min() > 1e-4
    assert len({state.tobytes() for state in evals}) == 50


def test_scripted_lift_succeeds(env: RobosuiteBatchedEnv) -> None:
    """Privileged top-down grasp of the cube: success, reward and termination are reported once."""
    obs, _ = env.reset(options={"split": "eval", "tasks": ["lift"], "init_state_ids": [0]})
    lift = env.sim_envs[0]
    cube = lift.sim.data.body_xpos[lift.cube_body_id].copy()
    plan = [
        (cube + np.array([0.0, 0.0, 0.08]), -1.0, 30),
        (cube + np.array([0.0, 0.0, 0.0]), -1.0, 30),
        (cube, 1.0, 12),
        (cube + np.array([0.0, 0.0, 0.2]), 1.0, 40),
    ]
    rewards, terminated_at = [], None
    step = 0
    for goal, gripper, steps in plan:
        for _ in range(steps):
            action = np.zeros(7)
            action[:3] = np.clip((goal - obs[OBS_STATE][0, :3]) / 0.05 * 2.0, -1, 1)
            action[6] = gripper
            obs, reward, terminated, _truncated, info = env.step(action[None])
            rewards.append(reward[0])
            if terminated[0] and terminated_at is None:
                terminated_at = step
                assert info["success"][0]
            step += 1
    assert terminated_at is not None
    assert sum(rewards) == 1.0 and rewards[terminated_at] == 1.0


@pytest.mark.slow
def test_process_parallel_env() -> None:
    with RobosuiteEnv(num_envs=2, num_workers=2, tasks=["lift", "door"], cameras=(), image_size=32) as vector:
        obs, info = vector.reset(seed=0, options={"split": "eval"})
        assert vector.tasks == ("lift", "door")
        assert obs[TASK] == ("lift the red cube", "open the door")
        obs, _reward, _terminated, _truncated, info = vector.step(np.zeros((2, 7)))
        assert obs[OBS_STATE].shape == (2, 8) and info["worker_restarted"].tolist() == [False, False]
