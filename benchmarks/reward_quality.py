"""Reward quality on held-out rollouts: is the world model's latent progress better than raw pixels?

Usage::

    .venv/bin/python benchmarks/reward_quality.py --run-dir runs/default [--episodes 96]

Takes a ``vla-rl-train`` run directory with its SFT policy (``sft_policy/``) and world model
(``world_model/``), rolls the policy out at temperature 1 from ``train`` initial states it never saw in
training (ids from 400 up; SFT used the first demonstrations, RL draws uniformly), and scores each reward
on those trajectories, each also with ``reward.srpo.relative_to_start`` (embeddings minus the first
frame's):

- monotonicity: Spearman correlation of progress with time along each successful trajectory (progress
  of a prefix = minus the latent distance to the nearest success-cluster centre of the *other*
  successes), averaged over successful trajectories;
- separation: ROC AUC of the same progress on whole trajectories (each against the other successes) as
  a classifier of success vs failure.

``binary`` carries no progress signal: it is constant along a trajectory and equals the label, so it has
no monotonicity, and its AUC is 1 by construction. A task needs at least two successful rollouts to be
scored. Writes
``benchmarks/results/reward_quality.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common import code_version

from sim.mujoco.arm.env import ArmBatchedEnv
from vla_rl.data.rollouts import collect_trajectories
from vla_rl.data.trajectory import Trajectory
from vla_rl.policy.modeling_vla import VLAPolicy
from vla_rl.rewards.embedding import TrajectoryEmbedder
from vla_rl.rewards.pixel import PixelClipEncoder
from vla_rl.rewards.quality import LatentProgress, progress_monotonicity, success_separation_auc
from vla_rl.rewards.srpo import SRPORewardConfig, srpo_rewards
from vla_rl.world_model.jepa import WorldModel

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FIRST_HELD_OUT_STATE = 400


def leave_one_out_progress(progress: LatentProgress, trajectories: list[Trajectory]) -> np.ndarray:
    """Progress of each whole trajectory against the successes other than itself, float ``[N]``."""
    successes = [t for t in trajectories if t.success]
    scores = []
    for trajectory in trajectories:
        references = [s for s in successes if s is not trajectory]
        scores.append(progress([trajectory.frames], references)[0])
    return np.array(scores)


def main() -> None:
    """Roll out, score every reward, write JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=96, help="held-out rollouts per task")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--num-frames", type=int, default=16, help="frames sampled per trajectory")
    args = parser.parse_args()

    policy = VLAPolicy.from_pretrained(args.run_dir / "sft_policy").eval()
    world_model = WorldModel.from_pretrained(args.run_dir / "world_model")
    tasks = list(json.loads((args.run_dir / "eval_sft.json").read_text())["success_by_task"])
    env = ArmBatchedEnv(
        num_envs=args.num_envs,
        tasks=tasks,
        cameras=policy.config.cameras,
        image_size=policy.config.image_size,
        autoreset_mode="Disabled",
    )
    try:
        jobs = [(task, FIRST_HELD_OUT_STATE + k % 100) for task in tasks for k in range(args.episodes)]
        trajectories = collect_trajectories(
            env,
            policy,
            jobs,
            "train",
            1.0,
            policy.config.chunk_size // 2,
            "agentview",
            {task: i for i, task in enumerate(tasks)},
            progress="rollouts",
        )
    finally:
        env.close()
    config = SRPORewardConfig(num_frames=args.num_frames)
    success = np.array([t.success for t in trajectories])
    task_ids = np.array([t.task_id for t in trajectories])
    rows: dict[str, dict[str, Any]] = {}
    scored = [[t for t in trajectories if t.task == task] for task in tasks]
    scored = [group for group in scored if sum(t.success for t in group) >= 2]
    if not scored:
        raise SystemExit("no task had two successful rollouts: nothing to score (train the policy longer)")
    for name, encoder, relative_to_start in (
        ("srpo (world model)", world_model, False),
        ("srpo (world model), relative to the first frame", world_model, True),
        ("pixel", PixelClipEncoder(config.pixel_size), False),
        ("pixel, relative to the first frame", PixelClipEncoder(config.pixel_size), True),
    ):
        embedder = TrajectoryEmbedder(encoder, args.num_frames, relative_to_start=relative_to_start)
        progress = LatentProgress(embedder, config)
        rewards = srpo_rewards(embedder.embed(trajectories), success, task_ids, config)
        aucs = [
            success_separation_auc(
                leave_one_out_progress(progress, group), np.array([t.success for t in group])
            )
            for group in scored
        ]
        rows[name] = {
            "monotonicity": float(np.mean([progress_monotonicity(progress, group) for group in scored])),
            "separation_auc": float(np.mean(aucs)),
            "failure_reward_std": float(np.std(rewards[~success])) if (~success).any() else 0.0,
        }
    report = {
        "benchmark": "reward_quality",
        "run_dir": str(args.run_dir),
        "tasks": tasks,
        "episodes": len(trajectories),
        "successes": int(success.sum()),
        "rewards": rows,
        "code": code_version("vla_rl"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reward_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(trajectories)} held-out rollouts, {success.sum()} successful, tasks {tasks}")
    print("| reward | monotonicity (Spearman with time) | success separation (ROC AUC) |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['monotonicity']:.2f} | {row['separation_auc']:.2f} |")
    print("| binary | n/a (constant in time) | 1 by construction (it is the label) |")


if __name__ == "__main__":
    main()
