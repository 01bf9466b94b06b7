"""SRPO vs binary rewards: GRPO from the same SFT start and world model, several seeds, same RL steps.

Usage::

    .venv/bin/python benchmarks/srpo_vs_binary.py                       # the default pipeline's settings
    .venv/bin/python benchmarks/srpo_vs_binary.py --seeds 0 1 --overrides rl.steps=20

Each (reward, seed) arm is one ``vla-rl-train`` run. The first (srpo) trains the demonstrations' SFT
policy and the world model; every later arm's run directory starts with copies of both, so they all start
from the same policy and only GRPO and the evaluations run again. Per arm it reads ``eval/success_rate``
vs RL step from ``metrics.csv``, the RL throughput and where the time goes. Writes
``benchmarks/results/srpo_vs_binary.json`` and ``.png``; prints a table. The targets (issue 4): SRPO
reaches 90% in at most half the RL steps binary needs; final SRPO success >= 95%.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version

ROOT = Path(__file__).resolve().parents[1]
TRAIN = Path(sys.executable).parent / "vla-rl-train"
RESULTS = ROOT / "benchmarks" / "results"
TIME_METRICS = ("rl/time_rollout_s", "rl/time_reward_s", "rl/time_update_s")


def train(run_dir: Path, overrides: list[str], log_path: Path) -> None:
    """One ``vla-rl-train`` run; its output goes to ``log_path``; a failure stops the benchmark."""
    with log_path.open("w") as log:
        result = subprocess.run(
            [str(TRAIN), *overrides, f"run_dir={run_dir}"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    if result.returncode != 0:
        sys.exit(f"vla-rl-train failed for {run_dir}; see {log_path}")


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """``metrics.csv`` -> name -> step -> value (the last row wins, as after a resume)."""
    values: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open() as file:
        for row in csv.DictReader(file):
            values[row["name"]][int(row["step"])] = float(row["value"])
    return values


def steps_to_reach(curve: dict[int, float], level: float) -> int | None:
    """First RL step whose eval success is >= ``level`` (None: never within the run)."""
    return next((step for step, value in sorted(curve.items()) if value >= level), None)


def summarize_arm(metrics: dict[str, dict[int, float]], wall_s: float) -> dict[str, Any]:
    """Success curve, steps to 90%, final success, throughput and time split of one arm."""
    curve = metrics["eval/success_rate"]
    time_split = {name.split("time_")[1][:-2]: float(sum(metrics[name].values())) for name in TIME_METRICS}
    return {
        "curve": {str(step): value for step, value in sorted(curve.items())},
        "steps_to_90": steps_to_reach(curve, 0.9),
        "final_success": curve[max(curve)],
        "env_steps_per_s": float(np.mean(list(metrics["rl/env_steps_per_s"].values()))),
        "trajectories_per_s": float(np.mean(list(metrics["rl/trajectories_per_s"].values()))),
        "time_s": time_split,
        "wall_s": wall_s,
    }


def plot(path: Path, arms: dict[str, dict[str, Any]]) -> None:
    """Eval success vs RL step, one line per arm (colour per reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"srpo": "tab:blue", "binary": "tab:orange"}
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, arm in arms.items():
        steps = [int(s) for s in arm["curve"]]
        axis.plot(
            steps, [100 * v for v in arm["curve"].values()], color=colours[name.split("/")[0]], label=name
        )
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
    """Run the base run and every arm; write JSON + PNG; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--rewards", nargs="+", default=["srpo", "binary"], choices=["srpo", "binary", "pixel"]
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "srpo_vs_binary")
    parser.add_argument("--overrides", nargs="*", default=[], help="vla-rl-train overrides for every run")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    # The first arm trains the shared start (demonstrations, SFT policy, its evaluation, world model);
    # every later arm starts from copies of them, so only GRPO and the evaluations run again.
    shared = ("sft_policy", "eval_sft.json", "world_model")
    order = sorted(args.rewards, key=lambda reward: reward != "srpo")  # srpo first: it trains the world model
    first: Path | None = None
    arms: dict[str, dict[str, Any]] = {}
    for reward in order:
        for seed in args.seeds:
            name = f"{reward}/seed{seed}"
            run_dir = args.work_dir / reward / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            if first is not None:
                for stage in shared:
                    source, target = first / stage, run_dir / stage
                    if source.exists() and not target.exists():
                        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
            print(f"arm {name}: {run_dir}", flush=True)
            started = time.perf_counter()
            overrides = [*args.overrides, f"reward.name={reward}", f"rl.seed={seed}"]
            train(run_dir, overrides, run_dir.with_suffix(".log"))
            arms[name] = summarize_arm(read_metrics(run_dir / "metrics.csv"), time.perf_counter() - started)
            first = first or run_dir

    by_reward: dict[str, dict[str, Any]] = {}
    for reward in args.rewards:
        runs = [arm for name, arm in arms.items() if name.startswith(reward + "/")]
        reached = [arm["steps_to_90"] for arm in runs if arm["steps_to_90"] is not None]
        by_reward[reward] = {
            "final_success_mean": float(np.mean([arm["final_success"] for arm in runs])),
            "steps_to_90_median": float(np.median(reached)) if len(reached) == len(runs) else None,
            "seeds_reaching_90": len(reached),
            "env_steps_per_s": float(np.mean([arm["env_steps_per_s"] for arm in runs])),
            "trajectories_per_s": float(np.mean([arm["trajectories_per_s"] for arm in runs])),
            "time_s": {k: float(np.mean([arm["time_s"][k] for arm in runs])) for k in runs[0]["time_s"]},
        }
    report = {
        "benchmark": "srpo_vs_binary",
        "overrides": args.overrides,
        "seeds": args.seeds,
        "sft_start": json.loads((first / "eval_sft.json").read_text()) if first else None,
        "arms": arms,
        "by_reward": by_reward,
        "code": code_version("vla_rl"),
    }
    (RESULTS / "srpo_vs_binary.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(RESULTS / "srpo_vs_binary.png", arms)

    if first is not None:
        print(f"\nSFT start: {100 * report['sft_start']['mean_success']:.1f}% mean eval success")
    print(
        "| reward | final success (mean of seeds) | RL steps to 90% (median) | seeds reaching 90% | "
        "env steps/s | trajectories/s | rollout / reward / update s |"
    )
    print("|---|---|---|---|---|---|---|")
    for reward, row in by_reward.items():
        split = " / ".join(f"{value:.0f}" for value in row["time_s"].values())
        to_90 = "never" if row["steps_to_90_median"] is None else f"{row['steps_to_90_median']:.0f}"
        print(
            f"| {reward} | {100 * row['final_success_mean']:.1f}% | {to_90} | {row['seeds_reaching_90']}/"
            f"{len(args.seeds)} | {row['env_steps_per_s']:.0f} | {row['trajectories_per_s']:.2f} | {split} |"
        )
    print(f"\nwrote {RESULTS / 'srpo_vs_binary.json'} and .png")


if __name__ == "__main__":
    main()
