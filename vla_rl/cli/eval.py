"""`vla-rl-eval`: evaluate a policy on the ``eval`` initial states; write a report, a plot and videos.

Example: ``vla-rl-eval eval.policy=expert eval.episodes_per_task=20 run_dir=runs/expert_eval``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from vla_rl.cli import CONFIG_DIR, log, to_config
from vla_rl.config import EvalRunConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Evaluate and report."""
    from vla_rl.envs import make_env
    from vla_rl.evaluation import evaluate, plot_success, write_report

    config = to_config(cfg, EvalRunConfig)
    run_dir = Path(config.run_dir)
    env = make_env(config.env)
    try:
        env.reset(seed=config.seed)
        result = evaluate(
            env,
            lambda obs: env.expert_action(),
            config.env.task_names(),
            config.eval.episodes_per_task,
            config.eval.videos,
            run_dir / "videos",
        )
    finally:
        env.close()
    write_report(run_dir, f"Evaluation of `{config.eval.policy}`", {config.eval.policy: result})
    plot_success(run_dir / "success.png", {config.eval.policy: result})
    log.info("mean success %.1f%%; report in %s", 100 * result.mean_success, run_dir / "report.md")
