"""Scripted-expert demonstrations, written as a LeRobotDataset (format v3) with LeRobot's own writer.

The dataset is written to ``<root>.partial`` and renamed to ``<root>`` only once finalized, so a
crashed or killed collection never leaves a half-written dataset where a valid one is expected.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sim.core import ACTION, OBS_ENV_STATE, OBS_IMAGE_PREFIX, OBS_STATE, TASK, BatchedEnv, InitStateSplit
from vla_rl.config import DemosConfig
from vla_rl.data.episodes import Episode, run_episodes

log = logging.getLogger(__name__)
REWARD = "reward"
SUCCESS = "success"


def dataset_features(env: BatchedEnv, use_videos: bool) -> dict[str, dict[str, Any]]:
    """LeRobot feature specs for the env's observations, its action, the reward and success flag.

    The observations: cameras, state and, from simulators that have it, the environment state.
    """
    space = env.single_observation_space
    features: dict[str, dict[str, Any]] = {}
    for key, sub_space in space.spaces.items():  # type: ignore[attr-defined]
        if key.startswith(OBS_IMAGE_PREFIX):
            features[key] = {
                "dtype": "video" if use_videos else "image",
                "shape": sub_space.shape,
                "names": ["height", "width", "channels"],
            }
        elif key in (OBS_STATE, OBS_ENV_STATE):
            features[key] = {"dtype": "float32", "shape": sub_space.shape, "names": None}
    features[ACTION] = {"dtype": "float32", "shape": env.single_action_space.shape, "names": None}
    features[REWARD] = {"dtype": "float32", "shape": (1,), "names": None}
    features[SUCCESS] = {"dtype": "bool", "shape": (1,), "names": None}
    return features


def _write_episode(dataset: Any, episode: Episode, features: dict[str, dict[str, Any]]) -> None:
    assert episode.actions is not None and episode.rewards is not None
    last = episode.length - 1
    for t, obs in enumerate(episode.observations):
        frame = {key: obs[key] for key in features if key in obs}
        frame[ACTION] = episode.actions[t]
        frame[REWARD] = episode.rewards[t : t + 1]
        frame[SUCCESS] = np.array([episode.success and t == last])
        frame[TASK] = obs[TASK]
        dataset.add_frame(frame)
    dataset.save_episode()


def collect_demonstrations(
    env: BatchedEnv, config: DemosConfig, tasks: list[str], fps: int, overwrite: bool = False
) -> Path:
    """Record ``config.episodes_per_task`` successful expert episodes per task; return the dataset root.

    Failed expert episodes are not recorded; the next initial states of the split replace them. A
    dataset already at ``config.root`` is kept unless ``overwrite``; it must hold every task asked for.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    root = Path(config.root)
    if (root / "meta" / "info.json").exists() and not overwrite:
        metadata = LeRobotDatasetMetadata(config.repo_id, root=root)
        recorded_shape = tuple(metadata.features[ACTION]["shape"])
        if recorded_shape != env.single_action_space.shape:
            raise ValueError(
                f"the demonstrations at {root} have actions of shape {recorded_shape}, the env's are "
                f"{env.single_action_space.shape} (another env or action mode); point demos.root at "
                "another directory"
            )
        recorded_tasks = set(metadata.tasks.index)
        missing = [task for task in tasks if env.task_specs[task].instruction not in recorded_tasks]
        if missing:
            raise ValueError(
                f"the demonstrations at {root} have no episodes of {missing}; point demos.root at another "
                "directory, or delete this one to record them again"
            )
        log.info("demonstrations already at %s; pass overwrite=true to record them again", root)
        return root
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    features = dataset_features(env, config.use_videos)
    dataset = LeRobotDataset.create(
        config.repo_id,
        fps=fps,
        features=features,
        root=partial,
        robot_type=env.__class__.__name__,
        use_videos=config.use_videos,
        image_writer_threads=4,
    )
    for task in tasks:
        for episode in expert_episodes(
            env, task, config.episodes_per_task, config.split, config.max_attempts_factor, config.action_noise
        ):
            _write_episode(dataset, episode, features)
    dataset.finalize()
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    log.info("wrote %d episodes to %s", len(tasks) * config.episodes_per_task, root)
    return root


def expert_episodes(
    env: BatchedEnv,
    task: str,
    count: int,
    split: str = "train",
    max_attempts_factor: int = 2,
    action_noise: float = 0.0,
) -> list[Episode]:
    """``count`` successful, recorded expert episodes of ``task``, from the first states of ``split``.

    A failed expert episode is dropped and the next initial state of the split replaces it; after
    ``count * max_attempts_factor`` attempts (or the end of the split) this raises `RuntimeError`.
    ``env`` must have autoreset disabled.

    With ``action_noise`` > 0 the env executes the expert's actions plus Gaussian noise of that standard
    deviation (action units, clipped to the action space; seeded, so collection is deterministic) while
    the episodes record the expert's own actions: DART (Laskey et al., 2017). The demonstrations then
    visit states a little off the expert's path, labelled with how the expert gets back, which is what
    a policy needs once its own small errors take it there.
    """
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    space = env.action_space
    rng = np.random.default_rng(0)

    def perturb(actions: np.ndarray) -> np.ndarray:
        noisy = actions + rng.normal(0.0, action_noise, actions.shape).astype(actions.dtype)
        return np.clip(noisy, space.low, space.high)  # type: ignore[attr-defined]

    limit = min(count * max_attempts_factor, env.task_specs[task].num_states(InitStateSplit(split)))
    successes: list[Episode] = []
    next_state_id = 0
    while len(successes) < count:
        wanted = count - len(successes)
        if next_state_id + wanted > limit:
            raise RuntimeError(
                f"the {task} expert failed too often: {len(successes)} successes in {next_state_id} attempts"
            )
        jobs = [(task, state_id) for state_id in range(next_state_id, next_state_id + wanted)]
        next_state_id += wanted
        episodes = run_episodes(
            env,
            jobs,
            split,
            lambda obs: env.expert_action(),
            record=lambda *_: True,
            progress=f"demos {task}",
            perturb=perturb if action_noise > 0 else None,
        )
        successes += [episode for episode in episodes if episode.success]
    return successes
