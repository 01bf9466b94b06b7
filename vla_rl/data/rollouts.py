"""Rolling out a chunked policy in a batched env and keeping what RL needs (`Trajectory`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from sim.core import OBS_STATE, AutoresetMode, BatchedEnv, image_key
from vla_rl.data.trajectory import Trajectory
from vla_rl.policy.modeling_vla import VLAPolicy


def collect_trajectories(
    env: BatchedEnv,
    policy: VLAPolicy,
    jobs: Sequence[tuple[str, int]],
    split: str,
    temperature: float,
    execute_steps: int,
    frame_camera: str,
    task_ids: dict[str, int],
    progress: str | None = None,
) -> list[Trajectory]:
    """Run one episode per ``(task, init_state_id)`` job, ``env.num_envs`` at a time.

    Every env re-plans together every ``execute_steps`` steps: the policy samples a K-action chunk at
    ``temperature`` for each env still running, and its first ``execute_steps`` actions are executed.

    Args:
        env: a batched env with autoreset disabled, rendering ``frame_camera`` and the policy's cameras.
        policy: the behaviour policy.
        jobs: the episodes to run.
        split: ``train`` or ``eval``: the initial-state set the ids index.
        temperature: sampling temperature (0: greedy).
        execute_steps: actions executed per chunk, within [1, K].
        frame_camera: the camera recorded as `Trajectory.frames` (for world models and progress rewards).
        task_ids: task name -> `Trajectory.task_id`.
        progress: progress-bar label (None: no bar).

    Returns:
        The trajectories, in job order.

    """
    if env.metadata.get("autoreset_mode") is not AutoresetMode.DISABLED:
        raise ValueError("collect_trajectories needs an env with autoreset_mode='Disabled'")
    if not 1 <= execute_steps <= policy.config.chunk_size:
        raise ValueError(f"execute_steps must be within [1, {policy.config.chunk_size}], got {execute_steps}")
    trajectories: list[Trajectory] = []
    bar = tqdm(total=len(jobs), desc=progress, unit="episode", disable=progress is None, leave=False)
    for start in range(0, len(jobs), env.num_envs):
        batch = list(jobs[start : start + env.num_envs])
        # Pad the last batch by repeating its first job; the padded envs' episodes are dropped.
        padded = batch + [batch[0]] * (env.num_envs - len(batch))
        trajectories += _run_batch(
            env, policy, padded, split, temperature, execute_steps, frame_camera, task_ids
        )[: len(batch)]
        bar.update(len(batch))
    bar.close()
    return trajectories


def _run_batch(
    env: BatchedEnv,
    policy: VLAPolicy,
    jobs: list[tuple[str, int]],
    split: str,
    temperature: float,
    execute_steps: int,
    frame_camera: str,
    task_ids: dict[str, int],
) -> list[Trajectory]:
    num_envs = len(jobs)
    policy_keys = [image_key(camera) for camera in policy.config.cameras] + [OBS_STATE]
    obs, _ = env.reset(
        options={"split": split, "tasks": [t for t, _ in jobs], "init_state_ids": [s for _, s in jobs]}
    )
    frames: list[list[np.ndarray]] = [[obs[image_key(frame_camera)][i]] for i in range(num_envs)]
    actions: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
    decisions: list[list[tuple[int, int]]] = [[] for _ in range(num_envs)]  # (row in chunk arrays, steps)
    seen: dict[str, list[np.ndarray]] = {key: [] for key in policy_keys}
    chunk_tokens: list[np.ndarray] = []
    chunk_log_probs: list[np.ndarray] = []
    success = np.zeros(num_envs, bool)
    done = np.zeros(num_envs, bool)
    chunk = np.zeros((num_envs, policy.config.chunk_size, policy.config.action_dim), np.float32)
    step = 0
    while not done.all():
        offset = step % execute_steps
        if offset == 0:
            active = np.flatnonzero(~done)
            observation = {key: value[active] for key, value in obs.items() if key != "task"}
            observation["task"] = [obs["task"][i] for i in active]
            sampled, tokens, log_probs = policy.act(observation, temperature)
            chunk[active] = sampled.numpy()
            first_row = sum(len(t) for t in chunk_tokens)
            chunk_tokens.append(tokens.cpu().numpy())
            chunk_log_probs.append(log_probs.float().cpu().numpy())
            for key in policy_keys:
                seen[key].append(np.asarray(observation[key]))
            for row, i in enumerate(active):
                decisions[i].append((first_row + row, 0))
        action = chunk[:, offset]
        obs, _, terminated, truncated, _ = env.step(action)
        for i in np.flatnonzero(~done):
            frames[i].append(obs[image_key(frame_camera)][i])
            actions[i].append(action[i].copy())
            row, executed = decisions[i][-1]
            decisions[i][-1] = (row, executed + 1)
        success |= terminated & ~done
        done |= terminated | truncated
        step += 1
    tokens_all = np.concatenate(chunk_tokens)
    log_probs_all = np.concatenate(chunk_log_probs)
    seen_all = {key: np.concatenate(value) for key, value in seen.items()}
    trajectories = []
    for i, (task, state_id) in enumerate(jobs):
        rows = np.array([row for row, _ in decisions[i]])
        trajectories.append(
            Trajectory(
                task=task,
                task_id=task_ids[task],
                init_state_id=state_id,
                success=bool(success[i]),
                frames=np.stack(frames[i]),
                actions=np.stack(actions[i]).astype(np.float32),
                tokens=tokens_all[rows],
                log_probs=log_probs_all[rows],
                executed=np.array([steps for _, steps in decisions[i]], np.int64),
                observations={key: value[rows] for key, value in seen_all.items()},
            )
        )
    return trajectories
