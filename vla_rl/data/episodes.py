"""Running whole episodes in a batched env from chosen initial states, and what they produce."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from sim.core import TASK, AutoresetMode, BatchedEnv

ActFn = Callable[[dict[str, Any]], np.ndarray]
"""Maps a batched observation to actions ``[N, A]``."""


@dataclass
class Episode:
    """One finished episode.

    Attributes:
        task: task name.
        init_state_id: index into the split's initial states.
        success: whether the task was solved.
        length: steps taken (T).
        observations: per step, the observation dict of this env (only when recorded); T entries.
        actions: float32 ``[T, A]`` (only when recorded).
        rewards: float32 ``[T]`` (only when recorded).

    """

    task: str
    init_state_id: int
    success: bool
    length: int
    observations: list[dict[str, Any]] = field(default_factory=list)
    actions: np.ndarray | None = None
    rewards: np.ndarray | None = None


def run_episodes(
    env: BatchedEnv,
    jobs: Iterable[tuple[str, int]],
    split: str,
    act: ActFn,
    record: Callable[[str, int], bool] = lambda task, state_id: False,
    progress: str | None = None,
    on_reset: Callable[[], None] | None = None,
    perturb: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Episode]:
    """Run one episode per ``(task, init_state_id)`` job, ``env.num_envs`` at a time.

    Args:
        env: a batched env built with autoreset disabled.
        jobs: the episodes to run.
        split: ``train`` or ``eval``: the initial-state set the ids index.
        act: the policy.
        record: whether to keep an episode's observations, actions and rewards.
        progress: progress-bar label (None: no bar).
        on_reset: called after each env reset (e.g. to clear a policy's queued action chunks).
        perturb: maps ``act``'s actions ``[N, A]`` to the actions sent to the env; the recorded
            actions stay ``act``'s own (DART-style demonstrations: `vla_rl.data.demos`).

    Returns:
        The episodes, in job order.

    """
    if env.metadata.get("autoreset_mode") is not AutoresetMode.DISABLED:
        raise ValueError("run_episodes needs an env with autoreset_mode='Disabled'")
    jobs = list(jobs)
    episodes: list[Episode] = []
    bar = tqdm(total=len(jobs), desc=progress, unit="episode", disable=progress is None)
    for start in range(0, len(jobs), env.num_envs):
        batch = jobs[start : start + env.num_envs]
        # Pad the last batch by repeating its first job; the padded envs' episodes are dropped.
        padded = batch + [batch[0]] * (env.num_envs - len(batch))
        episodes += _run_batch(env, padded, split, act, record, on_reset, perturb)[: len(batch)]
        bar.update(len(batch))
    bar.close()
    return episodes


def _run_batch(
    env: BatchedEnv,
    jobs: list[tuple[str, int]],
    split: str,
    act: ActFn,
    record: Callable[[str, int], bool],
    on_reset: Callable[[], None] | None,
    perturb: Callable[[np.ndarray], np.ndarray] | None,
) -> list[Episode]:
    tasks = [task for task, _ in jobs]
    obs, _ = env.reset(options={"split": split, "tasks": tasks, "init_state_ids": [s for _, s in jobs]})
    if on_reset is not None:
        on_reset()
    keep = [record(task, state_id) for task, state_id in jobs]
    frames: list[list[dict[str, Any]]] = [[] for _ in jobs]
    actions: list[list[np.ndarray]] = [[] for _ in jobs]
    rewards: list[list[float]] = [[] for _ in jobs]
    lengths = np.zeros(len(jobs), np.int64)
    success = np.zeros(len(jobs), bool)
    done = np.zeros(len(jobs), bool)
    while not done.all():
        action = act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action if perturb is None else perturb(action))
        for i in np.flatnonzero(~done):
            if keep[i]:
                frames[i].append({key: value[i] for key, value in obs.items()})
                actions[i].append(np.asarray(action[i], np.float32))
                rewards[i].append(float(reward[i]))
        lengths[~done] += 1
        success |= terminated & ~done
        done |= terminated | truncated
        obs = next_obs
    return [
        Episode(
            task=task,
            init_state_id=state_id,
            success=bool(success[i]),
            length=int(lengths[i]),
            observations=frames[i],
            actions=np.stack(actions[i]) if keep[i] else None,
            rewards=np.asarray(rewards[i], np.float32) if keep[i] else None,
        )
        for i, (task, state_id) in enumerate(jobs)
    ]


def instruction_of(episode: Episode) -> str:
    """The language instruction of a recorded episode."""
    return str(episode.observations[0][TASK])
