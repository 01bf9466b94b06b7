"""SRPO vs binary rewards: the main job's GRPO stage from one shared start, several seeds, same RL steps.

Usage::

    .venv/bin/python benchmarks/srpo_vs_binary.py                      # the default pipeline, seeds 0 1 2
    .venv/bin/python benchmarks/srpo_vs_binary.py rl.steps=40 rl.device=cuda --seeds 0 1
    # a many-core machine: every arm its own process, one thread each
    .venv/bin/python benchmarks/srpo_vs_binary.py --seeds 0 1 2 3 4 5 6 --parallel 14 \
        env.num_threads=1 env.render_workers=0 eval.episodes_per_task=50

The arms are `vla-rl-train` itself: the script composes its config (``configs/train.yaml`` and the Hydra
overrides given), runs stages 1-3 once in ``<work-dir>/start`` (demonstrations, SFT and its evaluation,
the world model), then for every (reward, seed) the whole pipeline in ``<work-dir>/<reward>/seed<k>``
with ``reward.name`` and ``rl.seed`` set and the start's SFT policy, SFT evaluation and world model
copied in: the arms differ only in the reward and the RL seed. With ``--parallel N`` the arms run as N
concurrent ``vla-rl-train`` processes (each with ``cores / N`` torch threads, its console output in
``<arm>/console.log``) instead of one after another in this process. Like `vla-rl-train`, a killed run
resumes (finished arms are read back, an interrupted one continues from its last checkpoint). Reports per
reward the success-vs-step curves, the RL steps to 90% success, the final success, RL throughput (env
steps/s, trajectories/s) and where the time goes (rollout, reward, update). Writes
``srpo_vs_binary.json`` and ``.png`` to ``--results`` (``benchmarks/results``) and prints a table. The
targets (issue 4): SRPO reaches 90% in at most half the RL steps binary needs; final SRPO success >= 95%.
"""

from __future__ import annotations

import argparse
import dataclasses
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from common import report_header

from sim.core import BatchedEnv
from vla_rl.cli import compose_config
from vla_rl.cli.train import SFT_POLICY, WORLD_MODEL, Pipeline
from vla_rl.config import TrainConfig
from vla_rl.envs import make_env
from vla_rl.metrics import MetricsLogger, read_metrics

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
TIME_METRICS = ("rl/time_rollout_s", "rl/time_reward_s", "rl/time_update_s")
SHARED_START = (SFT_POLICY, WORLD_MODEL, "eval_sft.json")


def steps_to_reach(curve: dict[int, float], level: float) -> int | None:
    """First RL step whose eval success is >= ``level`` (None: never within the run)."""
    return next((step for step, value in sorted(curve.items()) if value >= level), None)


def plot(path: Path, arms: dict[str, dict[str, Any]]) -> None:
    """Eval success vs RL step: a thin line per arm and the mean of each reward's arms (colour per reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"srpo": "tab:blue", "binary": "tab:orange", "pixel": "tab:green"}
    figure, axis = plt.subplots(figsize=(6.5, 4))
    by_reward: dict[str, list[dict[str, float]]] = defaultdict(list)
    for name, arm in arms.items():
        by_reward[name.split("/")[0]].append(arm["curve"])
    for reward, curves in by_reward.items():
        for curve in curves:
            steps = [int(step) for step in curve]
            axis.plot(
                steps, [100 * value for value in curve.values()], color=colours[reward], alpha=0.35, lw=1
            )
        shared = [step for step in curves[0] if all(step in curve for curve in curves)]
        mean = [100 * float(np.mean([curve[step] for curve in curves])) for step in shared]
        label = f"{reward}: mean of {len(curves)}" if len(curves) > 1 else reward
        axis.plot(
            [int(step) for step in shared], mean, color=colours[reward], lw=2.5, marker="o", label=label
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
    """Shared start, then every (reward, seed) arm; JSON + PNG + table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--rewards", nargs="+", default=["srpo", "binary"], choices=["srpo", "binary", "pixel"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RL seeds (rl.seed)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/srpo_vs_binary"))
    parser.add_argument(
        "--parallel", type=int, default=1, help="arms run at once, each in its own process (1: in-process)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and PNG go")
    parser.add_argument("overrides", nargs="*", help="vla-rl-train overrides, e.g. rl.steps=40")
    args = parser.parse_args()
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")
    started = time.perf_counter()
    config = compose_config("train", TrainConfig, *args.overrides, f"run_dir={args.work_dir / 'start'}")
    env = make_env(config.env)
    try:
        report = run(args, config, env)
    finally:
        env.close()
    report["wall_s"] = time.perf_counter() - started
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "srpo_vs_binary.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(args.results / "srpo_vs_binary.png", report["arms"])
    print_table(report, args.results)


def run(args: argparse.Namespace, start_config: TrainConfig, env: BatchedEnv) -> dict[str, Any]:
    """The shared start and the arms; returns the report."""
    start_dir, start_started = Path(start_config.run_dir), time.perf_counter()
    metrics = MetricsLogger(start_dir)
    try:
        start = Pipeline(start_config, env, metrics)
        demos = start.demonstrations()
        sft_policy = start.supervised(demos)
        sft = start.evaluation(sft_policy, "eval_sft.json", False, start_config.eval.temperature)
        if "srpo" in args.rewards:
            start.world_model(demos, sft_policy)
    finally:
        metrics.close()
    start_wall_s = time.perf_counter() - start_started  # of this process (little when read back)
    print(f"SFT start: {100 * sft.mean_success:.1f}%", flush=True)

    jobs = {
        f"{reward_name}/seed{seed}": (
            args.work_dir / reward_name / f"seed{seed}",
            [*args.overrides, f"reward.name={reward_name}", f"rl.seed={seed}"],
        )
        for reward_name in args.rewards
        for seed in args.seeds
    }
    for run_dir, _ in jobs.values():
        copy_start(start_dir, run_dir)
    if args.parallel == 1:
        walls = {
            name: run_in_process(name, run_dir, overrides, env) for name, (run_dir, overrides) in jobs.items()
        }
    else:
        walls = run_in_processes(jobs, args.parallel)
    arms = {name: summarize_arm(run_dir / "metrics.csv", walls[name]) for name, (run_dir, _) in jobs.items()}
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
        "rl": dataclasses.asdict(start_config.rl),
        "sft_success": sft.mean_success,
        "start_wall_s": start_wall_s,
        "arms": arms,
        "by_reward": by_reward,
    }


def run_in_process(name: str, run_dir: Path, overrides: list[str], env: BatchedEnv) -> float:
    """One arm's pipeline in this process, on the shared env; returns its wall time."""
    config = compose_config("train", TrainConfig, *overrides, f"run_dir={run_dir}")
    print(f"arm {name}", flush=True)
    started = time.perf_counter()
    metrics = MetricsLogger(run_dir)
    try:
        Pipeline(config, env, metrics).run()
    finally:
        metrics.close()
    return time.perf_counter() - started


def run_in_processes(jobs: dict[str, tuple[Path, list[str]]], parallel: int) -> dict[str, float]:
    """Every arm as a ``vla-rl-train`` process, ``parallel`` at a time; returns their wall times.

    Raises:
        RuntimeError: an arm's process failed (the message names its console log).
    """
    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    child_env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    pending = list(jobs.items())
    running: dict[str, tuple[subprocess.Popen[bytes], float, Path]] = {}
    walls: dict[str, float] = {}
    try:
        while pending or running:
            while pending and len(running) < parallel:
                name, (run_dir, overrides) = pending.pop(0)
                console = (run_dir / "console.log").open("w")
                command = [sys.executable, "-m", "vla_rl.cli.train", *overrides, f"run_dir={run_dir}"]
                process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT, env=child_env)
                console.close()  # the child holds its own descriptor
                running[name] = (process, time.perf_counter(), run_dir)
                print(f"arm {name} started", flush=True)
            time.sleep(1.0)
            for name, (process, started, run_dir) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                if process.returncode != 0:
                    raise RuntimeError(
                        f"arm {name} failed (exit {process.returncode}); see {run_dir / 'console.log'}"
                    )
                walls[name] = time.perf_counter() - started
                print(f"arm {name} done in {walls[name]:.0f} s ({len(walls)}/{len(jobs)})", flush=True)
    finally:  # a failed arm or an interrupt: no arm outlives the benchmark (each resumes when rerun)
        for process, _, _ in running.values():
            process.terminate()
    return walls


def summarize_arm(metrics_path: Path, wall_s: float) -> dict[str, Any]:
    """An arm's curve, steps to 90%, final success, throughput and time split from its metrics."""
    values = read_metrics(metrics_path)
    curve = values["eval/success_rate"]
    return {
        "curve": {str(step): value for step, value in sorted(curve.items())},
        "steps_to_90": steps_to_reach(curve, 0.9),
        "final_success": curve[max(curve)],
        "env_steps_per_s": float(np.mean(list(values["rl/env_steps_per_s"].values()))),
        "trajectories_per_s": float(np.mean(list(values["rl/trajectories_per_s"].values()))),
        "time_s": {key[8:-2]: float(sum(values[key].values())) for key in TIME_METRICS},
        "wall_s": wall_s,  # of the arm's run here (less when resumed)
    }


def copy_start(start_dir: Path, run_dir: Path) -> None:
    """The shared SFT policy, its evaluation and the world model into an arm's run directory, once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED_START:
        source, target = start_dir / name, run_dir / name
        if not source.exists() or target.exists():  # a loaded world model (world_model.path) has no copy
            continue
        partial = run_dir / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, partial)
        else:
            shutil.copy2(source, partial)
        partial.replace(target)  # whole or absent: a killed copy is redone


def print_table(report: dict[str, Any], results: Path) -> None:
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
    print(f"\nwrote {results / 'srpo_vs_binary.json'} and .png ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
