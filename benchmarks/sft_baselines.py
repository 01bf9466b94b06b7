"""The two SFT baselines the RL runs start from, per task: one demonstration vs 50 per task.

Usage::

    .venv/bin/python benchmarks/sft_baselines.py [--device cuda] [--tasks reach_target close_drawer ...]

One process, the library's own stages (as `vla-rl-train experiment=sft_one_demo` / `sft_full` run
them, without a dataset on disk): scripted-expert demonstrations in memory from ``train`` initial
states, then for each baseline a fresh tiny policy trained with SFT on the first k demonstrations of
every task (all tasks in one multi-task policy) and evaluated greedily on the first
``--eval-episodes`` ``eval`` initial states of each task. Writes ``benchmarks/results/sft_baselines.json``
and prints the per-task table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from common import report_header

from sim.mujoco.arm.env import ArmBatchedEnv
from sim.mujoco.arm.tasks import ARM_TASKS
from vla_rl.algos.sft import SFTConfig, train_sft
from vla_rl.config import PolicyConfig
from vla_rl.data.demos import expert_episodes
from vla_rl.data.frames import frames_from_episodes
from vla_rl.evaluation import evaluate
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.actor import ChunkActor
from vla_rl.policy.factory import build_policy

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CAMERAS = ["agentview", "wrist"]
EXECUTE_STEPS = 4


def main() -> None:
    """Demonstrations, both baselines, JSON + table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", nargs="+", default=list(ARM_TASKS))
    parser.add_argument("--demos", type=int, default=50, help="demonstrations per task for sft_full")
    parser.add_argument("--one-demo-steps", type=int, default=300)
    parser.add_argument("--full-steps", type=int, default=3000)
    parser.add_argument("--eval-episodes", type=int, default=20, help="eval initial states per task")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/sft_baselines"))
    args = parser.parse_args()
    started = time.perf_counter()
    env = ArmBatchedEnv(
        num_envs=args.num_envs,
        tasks=args.tasks,
        cameras=CAMERAS,
        image_size=args.image_size,
        autoreset_mode="Disabled",
    )
    try:
        demos = {task: expert_episodes(env, task, args.demos) for task in args.tasks}
        baselines: dict[str, dict[str, Any]] = {}
        for label, per_task, steps, batch in (
            ("sft_one_demo", 1, args.one_demo_steps, 16),
            ("sft_full", args.demos, args.full_steps, 64),
        ):
            chosen = [episode for task in args.tasks for episode in demos[task][:per_task]]
            policy_config = PolicyConfig(execute_steps=EXECUTE_STEPS, image_size=args.image_size)
            frames = frames_from_episodes(chosen, CAMERAS, args.image_size, policy_config.chunk_size)
            torch.manual_seed(0)
            policy = build_policy(policy_config, frames, CAMERAS, env.single_action_space)
            config = SFTConfig(steps=steps, batch_size=batch, learning_rate=1e-3, device=args.device)
            run_dir = args.work_dir / label
            train_started = time.perf_counter()
            policy = train_sft(policy, frames, config, run_dir, MetricsLogger(run_dir)).eval()
            train_s = time.perf_counter() - train_started
            actor = ChunkActor(policy, 0.0, EXECUTE_STEPS)
            result = evaluate(
                env, actor, args.tasks, args.eval_episodes, on_reset=actor.reset, progress=label
            )
            baselines[label] = {
                "demonstrations": len(chosen),
                "frames": len(frames),
                "steps": steps,
                "batch_size": batch,
                "train_s": train_s,
                **result.as_dict(),
            }
            print(
                f"{label}: {100 * result.mean_success:.1f}% ({len(chosen)} demos, {steps} steps)", flush=True
            )
    finally:
        env.close()
    report = {
        **report_header("sft_baselines", args),
        "baselines": baselines,
        "wall_s": time.perf_counter() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sft_baselines.json").write_text(json.dumps(report, indent=2) + "\n")
    machine = report["machine"]
    print(f"\n{machine['cpu_cores']} cores, GPU {machine['gpu']}; {args.eval_episodes} eval states per task")
    print("| task | sft_one_demo | sft_full |")
    print("|---|---|---|")
    for task in args.tasks:
        cells = [f"{100 * baselines[label]['success_by_task'][task]:.0f}%" for label in baselines]
        print(f"| {task} | " + " | ".join(cells) + " |")
    means = " | ".join(f"**{100 * row['mean_success']:.1f}%**" for row in baselines.values())
    print(f"| **mean** | {means} |")
    print(f"\nwrote {RESULTS / 'sft_baselines.json'} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
