"""ProcessVectorEnv: parity with an in-process env, input validation, worker restarts, cleanup.

The worker env is the numpy `PointEnv` of tests/sim/point_env.py (cheap, deterministic, fault injection),
so these tests do not depend on any simulator suite.
"""

from __future__ import annotations

import functools
import gc
import logging
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from sim.core import OBS_STATE, AutoresetMode, image_key
from sim.vector import ProcessVectorEnv
from tests.sim.point_env import CAMERA, PointEnv, make_broken_env

IMAGE = image_key(CAMERA)


def make_env(
    num_workers: int = 2,
    envs_per_worker: int = 2,
    fault_file: Path | None = None,
    autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP,
    step_timeout_s: float = 20.0,
) -> ProcessVectorEnv:
    factory = functools.partial(
        PointEnv,
        num_envs=envs_per_worker,
        autoreset_mode=autoreset_mode,
        fault_file=None if fault_file is None else str(fault_file),
    )
    return ProcessVectorEnv(factory, num_workers, step_timeout_s=step_timeout_s)


def shm_paths(env: ProcessVectorEnv) -> list[Path]:
    return [Path("/dev/shm") / buffer.shm_name for buffer in env._buffers.values()]


def assert_same_value(actual: Any, expected: Any, where: str, mask: np.ndarray | None = None) -> None:
    """Compare two observation / info values; ``mask`` restricts the comparison to some envs."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same_value(actual[key], expected[key], f"{where}[{key!r}]", mask)
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    if mask is not None:
        actual, expected = actual[mask], expected[mask]
    np.testing.assert_array_equal(actual, expected, err_msg=where)


def assert_same_info(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """The process env's info is the in-process info plus ``worker_restarted`` (all False here)."""
    assert set(actual) == set(expected) | {"worker_restarted"}, where
    assert not actual["worker_restarted"].any(), where
    for key, value in expected.items():
        # final_obs is only meaningful where _final_obs is set
        mask = expected["_final_obs"] if key == "final_obs" else None
        assert_same_value(actual[key], value, f"{where} info[{key!r}]", mask)


def noisy_expert(env: PointEnv | ProcessVectorEnv, rng: np.random.Generator) -> np.ndarray:
    return env.expert_action() + rng.normal(0.0, 0.7, size=(env.num_envs, 2))


@pytest.mark.parametrize(
    ("num_workers", "envs_per_worker", "autoreset_mode"),
    [(2, 2, AutoresetMode.SAME_STEP), (3, 1, AutoresetMode.DISABLED)],
)
def test_matches_in_process_env(
    num_workers: int, envs_per_worker: int, autoreset_mode: AutoresetMode
) -> None:
    num_envs = num_workers * envs_per_worker
    reference = PointEnv(num_envs=num_envs, autoreset_mode=autoreset_mode)
    with make_env(num_workers, envs_per_worker, autoreset_mode=autoreset_mode) as env:
        assert env.num_envs == num_envs
        assert env.single_observation_space == reference.single_observation_space
        assert isinstance(env.observation_space, spaces.Dict)
        assert env.observation_space[OBS_STATE].shape == (num_envs, 4)
        assert env.action_space.shape == (num_envs, 2)
        assert env.metadata["autoreset_mode"] is autoreset_mode
        assert env.cameras == (CAMERA,)
        assert env.task_specs == reference.task_specs
        finished = {"terminated": 0, "truncated": 0}
        eval_options = {
            "split": "eval",
            "tasks": (["reach_far", "reach"] * num_envs)[:num_envs],
            "init_state_ids": np.arange(num_envs) % 4,
        }
        episodes: list[tuple[int, dict[str, Any] | None]] = [(7, None), (11, eval_options)]
        for seed, options in episodes:
            obs, info = env.reset(seed=seed, options=options)
            ref_obs, ref_info = reference.reset(seed=seed, options=options)
            assert_same_value(obs, ref_obs, "reset obs")
            assert_same_info(info, ref_info, "reset")
            assert env.tasks == reference.tasks
            rng = np.random.default_rng(seed)
            for step in range(16):
                expert = env.expert_action()
                assert expert.dtype == np.float32
                np.testing.assert_array_equal(expert, reference.expert_action())
                if autoreset_mode is AutoresetMode.DISABLED and step % 8 == 7:
                    env.reset(seed=seed + step)
                    reference.reset(seed=seed + step)
                actions = noisy_expert(reference, rng)
                obs, reward, terminated, truncated, info = env.step(actions)
                ref_obs, *ref_arrays, ref_info = reference.step(actions)
                assert_same_value(obs, ref_obs, f"step {step} obs")
                arrays = {"reward": reward, "terminated": terminated, "truncated": truncated}
                for (name, array), ref_array in zip(arrays.items(), ref_arrays, strict=True):
                    assert array.shape == (num_envs,)
                    assert_same_value(array, ref_array, f"step {step} {name}")
                assert_same_info(info, ref_info, f"step {step}")
                finished["terminated"] += int(terminated.sum())
                finished["truncated"] += int(truncated.sum())
        # the run exercised both kinds of episode end (and final_obs in SAME_STEP mode)
        assert finished["terminated"] > 0
        assert finished["truncated"] > 0


def test_bad_input_raises_before_reaching_workers_and_env_keeps_working() -> None:
    reference = PointEnv(num_envs=4)
    with make_env() as env:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros((4, 2)))
        with pytest.raises(ValueError, match="non-negative"):
            env.reset(seed=-1)
        with pytest.raises(TypeError, match="seed"):
            env.reset(seed="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown reset option"):
            env.reset(options={"bogus": 1})
        with pytest.raises(ValueError, match="unknown task"):
            env.reset(options={"tasks": ["nope"] * 4})
        with pytest.raises(ValueError, match="4 tasks"):
            env.reset(options={"tasks": ["reach"] * 3})
        env.reset(seed=3)
        reference.reset(seed=3)
        nan = np.zeros((4, 2))
        nan[1, 0] = np.nan
        inf = np.zeros((4, 2))
        inf[2, 1] = -np.inf
        bad_batches: list[tuple[object, type[Exception], str]] = [
            (np.zeros((4, 3)), ValueError, "shape"),
            (np.zeros(4), ValueError, "shape"),
            (np.zeros((3, 2)), ValueError, "shape"),
            (np.full((4, 2), "a"), TypeError, "dtype"),
            (np.full((4, 2), None, dtype=object), TypeError, "dtype"),
            ("left", TypeError, "dtype"),
            (nan, ValueError, r"NaN or infinite values for envs \[1\]"),
            (inf, ValueError, r"NaN or infinite values for envs \[2\]"),
        ]
        for actions, error, message in bad_batches:
            with pytest.raises(error, match=message):
                env.step(actions)
        # nothing reached the workers: the run continues exactly like a reference that never saw them
        out_of_range = np.array([[5.0, 0.0], [0.0, -3.0], [0.5, 0.5], [1.0, -1.0]])
        obs, *_, info = env.step(out_of_range)
        ref_obs, *_ = reference.step(np.clip(out_of_range, -1.0, 1.0))
        assert info["action_clipped"].tolist() == [True, True, False, False]
        assert_same_value(obs, ref_obs, "obs after clipped step")
        obs, *_ = env.step(np.zeros((4, 2), dtype=np.int64))
        ref_obs, *_ = reference.step(np.zeros((4, 2)))
        assert_same_value(obs, ref_obs, "obs after integer actions")
        assert env.num_restarts == 0


def test_constructor_rejects_bad_arguments() -> None:
    factory = functools.partial(PointEnv, num_envs=1)
    with pytest.raises(ValueError, match="num_workers"):
        ProcessVectorEnv(factory, 0)
    with pytest.raises(ValueError, match="start_method"):
        ProcessVectorEnv(factory, 1, start_method="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeouts"):
        ProcessVectorEnv(factory, 1, step_timeout_s=0)


def test_env_that_fails_to_build_raises_and_leaves_no_workers() -> None:
    with pytest.raises(RuntimeError, match="simulated build failure"):
        ProcessVectorEnv(make_broken_env, 2)
    assert mp.active_children() == []


def start_faulty_episode(env: ProcessVectorEnv, reference: PointEnv, tasks: list[str]) -> None:
    """Reset both (the reference mirrors worker 0) and take one normal step."""
    env.reset(seed=5, options={"tasks": tasks})
    reference.reset(seed=5, options={"tasks": tasks[:2]})
    env.step(np.full((4, 2), 0.1))
    reference.step(np.full((2, 2), 0.1))


@pytest.mark.parametrize("fault", ["fault_kill", "fault_raise"])
def test_failed_worker_is_restarted_and_its_envs_truncated(
    fault: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fault_file = tmp_path / "fault"
    reference = PointEnv(num_envs=2)
    tasks = ["reach", "reach", fault, "reach"]
    with make_env(fault_file=fault_file) as env:
        start_faulty_episode(env, reference, tasks)
        old_pid = env._resources.processes[1].pid
        fault_file.write_text("step")
        actions = np.full((4, 2), -0.2)
        with caplog.at_level(logging.ERROR, logger="sim.vector"):
            obs, reward, terminated, truncated, info = env.step(actions)
        ref_obs, ref_reward, _, _, _ = reference.step(actions[:2])
        assert not fault_file.exists()
        assert info["worker_restarted"].tolist() == [False, False, True, True]
        assert truncated.tolist() == [False, False, True, True]
        assert not terminated[2:].any() and not info["success"][2:].any()
        np.testing.assert_array_equal(reward[2:], 0.0)
        assert "_final_obs" not in info  # the last observation died with the worker
        # worker 0 was not disturbed
        np.testing.assert_array_equal(obs[OBS_STATE][:2], ref_obs[OBS_STATE])
        np.testing.assert_array_equal(reward[:2], ref_reward)
        assert env.num_restarts == 1
        assert env._resources.processes[1].pid != old_pid
        assert "worker 1 failed" in caplog.text
        if fault == "fault_raise":
            assert "Traceback" in caplog.text and "simulated simulator error" in caplog.text
        else:
            assert "exited with code" in caplog.text
        # the restarted worker kept its tasks and the batch keeps stepping normally
        assert env.tasks == tuple(tasks)
        for _ in range(3):
            actions = env.expert_action()
            obs, reward, terminated, truncated, info = env.step(actions)
            ref_obs, *_ = reference.step(actions[:2])
            np.testing.assert_array_equal(obs[OBS_STATE][:2], ref_obs[OBS_STATE])
            assert not info["worker_restarted"].any()
            assert obs[IMAGE].shape == (4, 6, 6, 3)
        assert env.num_restarts == 1


def test_hung_worker_is_restarted_without_hanging(tmp_path: Path) -> None:
    fault_file = tmp_path / "fault"
    reference = PointEnv(num_envs=2)
    with make_env(fault_file=fault_file, step_timeout_s=1.0) as env:
        start_faulty_episode(env, reference, ["reach", "reach", "reach", "fault_hang"])
        fault_file.write_text("step")
        started = time.monotonic()
        _, _, _, truncated, info = env.step(np.zeros((4, 2)))
        assert time.monotonic() - started < 10.0  # the worker sleeps 60 s
        assert info["worker_restarted"].tolist() == [False, False, True, True]
        assert truncated.tolist() == [False, False, True, True]
        assert env.num_restarts == 1
        _, _, _, truncated, info = env.step(np.zeros((4, 2)))
        assert not info["worker_restarted"].any() and not truncated.any()


def test_restart_in_disabled_mode_keeps_envs_finished_until_reset(tmp_path: Path) -> None:
    fault_file = tmp_path / "fault"
    reference = PointEnv(num_envs=2, autoreset_mode=AutoresetMode.DISABLED)
    with make_env(fault_file=fault_file, autoreset_mode=AutoresetMode.DISABLED) as env:
        start_faulty_episode(env, reference, ["reach", "reach", "fault_raise", "reach"])
        fault_file.write_text("step")
        first, *_, info = env.step(np.zeros((4, 2)))
        assert info["worker_restarted"].tolist() == [False, False, True, True]
        for _ in range(2):
            obs, reward, terminated, truncated, info = env.step(np.ones((4, 2)))
            assert not info["worker_restarted"].any()
            assert truncated[2:].all() and not terminated[2:].any()
            np.testing.assert_array_equal(reward[2:], 0.0)
            np.testing.assert_array_equal(obs[OBS_STATE][2:], first[OBS_STATE][2:])  # frozen
            assert not np.array_equal(obs[OBS_STATE][:2], first[OBS_STATE][:2])  # the others move
        env.reset(seed=1)
        _, _, _, truncated, info = env.step(np.zeros((4, 2)))
        assert not truncated.any() and not info["worker_restarted"].any()


def test_failure_during_expert_action_is_reported_at_next_step(tmp_path: Path) -> None:
    fault_file = tmp_path / "fault"
    with make_env(fault_file=fault_file) as env:
        env.reset(seed=2, options={"tasks": ["fault_raise", "reach", "reach", "reach"]})
        fault_file.write_text("expert_action")
        actions = env.expert_action()  # worker 0 raises, is restarted and asked again
        assert actions.shape == (4, 2) and env.num_restarts == 1
        obs, reward, _, truncated, info = env.step(actions)
        assert info["worker_restarted"].tolist() == [True, True, False, False]
        assert truncated.tolist() == [True, True, False, False]
        np.testing.assert_array_equal(reward[:2], 0.0)
        # worker 0 was not stepped: the expert action still points from its (reset) observation
        state = obs[OBS_STATE][:2]
        expected = np.clip((state[:, 2:] - state[:, :2]) / 0.25, -1.0, 1.0)
        np.testing.assert_allclose(actions[:2], expected, atol=1e-5)
        _, _, _, truncated, info = env.step(env.expert_action())
        assert not info["worker_restarted"].any() and not truncated.any()


def test_close_releases_workers_and_shared_memory() -> None:
    env = make_env()
    env.reset(seed=0)
    paths = shm_paths(env)
    processes = list(env._resources.processes.values())
    assert paths and all(path.exists() for path in paths)
    env.close()
    env.close()  # idempotent
    assert not any(path.exists() for path in paths)
    assert not any(process.is_alive() for process in processes)
    with pytest.raises(RuntimeError, match="closed"):
        env.step(np.zeros((4, 2)))

    env = make_env()  # released on garbage collection too
    paths = shm_paths(env)
    processes = list(env._resources.processes.values())
    del env
    gc.collect()
    assert not any(path.exists() for path in paths)
    assert not any(process.is_alive() for process in processes)
