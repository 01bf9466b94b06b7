"""SRPO vs binary rewards: GRPO from the same SFT start and world model, several seeds, same RL steps.

Usage::

    .venv/bin/python benchmarks/srpo_vs_binary.py                      # the default pipeline's settings
    .venv/bin/python benchmarks/srpo_vs_binary.py --seeds 0 1 --rl-steps 10 --device cuda

One process, the library's own stages (the same ones `vla-rl-train` runs, without a dataset on disk):
scripted-expert demonstrations in memory -> SFT on ``--sft-demos`` per task -> the JEPA world model on
all demonstrations' ``agentview`` videos -> for every (reward, seed): GRPO from a copy of that SFT policy
with evaluations on the ``eval`` initial states every ``--eval-every`` steps. Reports per reward the
success-vs-step curves, the RL steps to 90% success, the final success, RL throughput (env steps/s,
trajectories/s) and where the time goes (rollout, reward, update). Writes
``benchmarks/results/srpo_vs_binary.json`` and ``.png`` and prints a table. The targets (issue 4): SRPO
reaches 90% in at most half the RL steps binary needs; final SRPO success >= 95%.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from common import report_header

from sim.mujoco.arm.env import ArmBatchedEnv
from vla_rl.algos.grpo import GRPOConfig, train_grpo
from vla_rl.algos.sft import SFTConfig, train_sft
from vla_rl.config import PolicyConfig
from vla_rl.data.demos import expert_episodes
from vla_rl.data.frames import frames_from_episodes
from vla_rl.evaluation import evaluate
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.actor import ChunkActor
from vla_rl.policy.factory import build_policy
from vla_rl.policy.modeling_vla import VLAPolicy
from vla_rl.rewards import build_reward
from vla_rl.rewards.srpo import SRPORewardConfig
from vla_rl.world_model.jepa import WorldModel, WorldModelConfig
from vla_rl.world_model.training import WorldModelTrainConfig, train_world_model

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CAMERAS = ["agentview", "wrist"]
TIME_METRICS = ("rl/time_rollout_s", "rl/time_reward_s", "rl/time_update_s")


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """``metrics.csv`` -> name -> step -> value."""
    values: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open() as file:
        for row in csv.DictReader(file):
            values[row["name"]][int(row["step"])] = float(row["value"])
    return values


def steps_to_reach(curve: dict[int, float], level: float) -> int | None:
    """First RL step whose eval success is >= ``level`` (None: never within the run)."""
    return next((step for step, value in sorted(curve.items()) if value >= level), None)


def plot(path: Path, arms: dict[str, dict[str, Any]]) -> None:
    """Eval success vs RL step, one line per arm (colour per reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"srpo": "tab:blue", "binary": "tab:orange", "pixel": "tab:green"}
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, arm in arms.items():
        steps = [int(step) for step in arm["curve"]]
        values = [100 * value for value in arm["curve"].values()]
        axis.plot(steps, values, color=colours[name.split("/")[0]], label=name, marker=".")
    axis.axhline(90, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("RL step")
    axis.set_ylabel("success on eval states (%)")
    axis.set_ylim(0, 102)
    axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    path.write_bytes(buffer.getvalue())


def main() -> None:
    """Shared start, then every (reward, seed) arm; JSON + PNG + table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", nargs="+", default=["close_drawer"])
    parser.add_argument(
        "--rewards", nargs="+", default=["srpo", "binary"], choices=["srpo", "binary", "pixel"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demos", type=int, default=10, help="demonstrations per task (world model data)")
    parser.add_argument("--sft-demos", type=int, default=1, help="of which SFT uses this many per task")
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--wm-steps", type=int, default=300)
    parser.add_argument("--rl-steps", type=int, default=20)
    parser.add_argument("--groups", type=int, default=4, help="initial states per RL step")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="GRPO AdamW learning rate")
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=20, help="eval initial states per task")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--render-workers", type=int, help="render processes (default: one per core)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/srpo_vs_binary"))
    args = parser.parse_args()
    started = time.perf_counter()
    env = ArmBatchedEnv(
        num_envs=args.num_envs,
        tasks=args.tasks,
        cameras=CAMERAS,
        image_size=args.image_size,
        autoreset_mode="Disabled",
        render_workers=args.render_workers,
    )
    try:
        report = run(args, env)
    finally:
        env.close()
    report["wall_s"] = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "srpo_vs_binary.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(RESULTS / "srpo_vs_binary.png", report["arms"])
    print_table(report)


def run(args: argparse.Namespace, env: ArmBatchedEnv) -> dict[str, Any]:
    """The shared start and the arms; returns the report."""
    execute_steps = 4
    policy_config = PolicyConfig(execute_steps=execute_steps, image_size=args.image_size)

    def evaluation(policy: VLAPolicy, _: int) -> float:
        actor = ChunkActor(policy, 0.0, execute_steps)
        result = evaluate(env, actor, args.tasks, args.eval_episodes, on_reset=actor.reset, progress=None)
        return result.mean_success

    # Shared start: demonstrations, SFT policy, world model.
    by_task = {task: expert_episodes(env, task, args.demos) for task in args.tasks}
    demos = [episode for task in args.tasks for episode in by_task[task]]
    first = [episode for task in args.tasks for episode in by_task[task][: args.sft_demos]]
    frames = frames_from_episodes(first, CAMERAS, args.image_size, policy_config.chunk_size)
    torch.manual_seed(0)
    policy = build_policy(policy_config, frames, CAMERAS, env.single_action_space)
    sft_config = SFTConfig(
        steps=args.sft_steps, batch_size=16, learning_rate=1e-3, episodes_per_task=1, device=args.device
    )
    sft_dir = args.work_dir / "sft"
    policy = train_sft(policy, frames, sft_config, sft_dir, MetricsLogger(sft_dir))
    policy.eval().save_pretrained(sft_dir / "policy")
    sft_success = evaluation(policy, 0)
    print(f"SFT start: {100 * sft_success:.1f}%", flush=True)
    videos = [np.stack([obs["observation.images.agentview"] for obs in d.observations]) for d in demos]
    world_model = WorldModel(WorldModelConfig())
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    train_world_model(world_model.to(device), videos, WorldModelTrainConfig(steps=args.wm_steps))
    world_model.eval()

    arms: dict[str, dict[str, Any]] = {}
    instructions = {task: env.task_specs[task].instruction for task in args.tasks}
    for reward_name in args.rewards:
        reward = build_reward(reward_name, world_model, SRPORewardConfig(num_frames=16))
        for seed in args.seeds:
            name = f"{reward_name}/seed{seed}"
            run_dir = args.work_dir / reward_name / f"seed{seed}"
            metrics = MetricsLogger(run_dir)
            metrics.log(0, {"eval/success_rate": sft_success})
            config = GRPOConfig(
                steps=args.rl_steps,
                groups_per_step=args.groups,
                group_size=args.group_size,
                filter="reward_std",
                learning_rate=args.learning_rate,
                ppo_epochs=args.ppo_epochs,
                eval_every=args.eval_every,
                device=args.device,
                seed=seed,
            )
            print(f"arm {name}", flush=True)
            arm_started = time.perf_counter()
            train_grpo(
                VLAPolicy.from_pretrained(sft_dir / "policy"),
                env,
                reward,
                args.tasks,
                instructions,
                env.task_specs[args.tasks[0]].num_train_states,
                execute_steps,
                "agentview",
                config,
                run_dir,
                metrics,
                evaluation,
            )
            metrics.close()
            values = read_metrics(run_dir / "metrics.csv")
            curve = values["eval/success_rate"]
            arms[name] = {
                "curve": {str(step): value for step, value in sorted(curve.items())},
                "steps_to_90": steps_to_reach(curve, 0.9),
                "final_success": curve[max(curve)],
                "env_steps_per_s": float(np.mean(list(values["rl/env_steps_per_s"].values()))),
                "trajectories_per_s": float(np.mean(list(values["rl/trajectories_per_s"].values()))),
                "time_s": {key[8:-2]: float(sum(values[key].values())) for key in TIME_METRICS},
                "wall_s": time.perf_counter() - arm_started,
            }
    by_reward = {}
    for reward_name in args.rewards:
        runs = [arm for name, arm in arms.items() if name.startswith(reward_name + "/")]
        reached = [arm["steps_to_90"] for arm in runs if arm["steps_to_90"] is not None]
        by_reward[reward_name] = {
            "final_success_mean": float(np.mean([arm["final_success"] for arm in runs])),
            "steps_to_90_median": float(np.median(reached)) if len(reached) == len(runs) else None,
            "seeds_reaching_90": len(reached),
            "env_steps_per_s": float(np.mean([arm["env_steps_per_s"] for arm in runs])),
            "trajectories_per_s": float(np.mean([arm["trajectories_per_s"] for arm in runs])),
            "time_s": {
                key: float(np.mean([arm["time_s"][key] for arm in runs])) for key in runs[0]["time_s"]
            },
        }
    return {
        **report_header("srpo_vs_binary", args),
        "sft_success": sft_success,
        "arms": arms,
        "by_reward": by_reward,
    }


def print_table(report: dict[str, Any]) -> None:
    """The summary table (Markdown)."""
    machine = report["machine"]
    print(
        f"\n{machine['cpu_cores']} cores, GPU {machine['gpu']}; SFT start {100 * report['sft_success']:.1f}%"
    )
    print(
        "| reward | final success (mean of seeds) | RL steps to 90% (median) | seeds reaching 90% | "
        "env steps/s | trajectories/s | rollout / reward / update s |"
    )
    print("|---|---|---|---|---|---|---|")
    for reward, row in report["by_reward"].items():
        split = " / ".join(f"{value:.0f}" for value in row["time_s"].values())
        to_90 = "never" if row["steps_to_90_median"] is None else f"{row['steps_to_90_median']:.0f}"
        print(
            f"| {reward} | {100 * row['final_success_mean']:.1f}% | {to_90} | {row['seeds_reaching_90']}/"
            f"{len(report['settings']['seeds'])} | {row['env_steps_per_s']:.0f} | "
            f"{row['trajectories_per_s']:.2f} | {split} |"
        )
    print(f"\nwrote {RESULTS / 'srpo_vs_binary.json'} and .png ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
