"""`vla-rl-train`: the training pipeline, stage by stage, in one run directory.

Stages so far: (1) scripted-expert demonstrations as a LeRobotDataset (collected once, reused);
(2) evaluation of the scripted experts on the ``eval`` initial states, the reference the learned
policy is measured against. Policy learning (SFT, then GRPO with SRPO rewards) comes next.
Outputs under ``run_dir``: ``metrics.csv`` + TensorBoard, ``success.png``, ``videos/*.mp4``,
``report.md`` / ``report.json``. A stage whose output exists is skipped, so a killed run resumes.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from vla_rl.cli import CONFIG_DIR, log, summarize, to_config
from vla_rl.config import TrainConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    """Run the pipeline."""
    from vla_rl.data.demos import collect_demonstrations
    from vla_rl.envs import make_env
    from vla_rl.evaluation import evaluate, plot_success, write_report
    from vla_rl.metrics import MetricsLogger

    config = to_config(cfg, TrainConfig)
    run_dir = Path(config.run_dir)
    log.info("run directory %s\n%s", run_dir, summarize(config))
    tasks = config.env.task_names()
    env = make_env(config.env)
    metrics = MetricsLogger(run_dir)
    try:
        env.reset(seed=config.seed)
        demos = collect_demonstrations(env, config.demos, tasks, int(env.metadata["render_fps"]))
        log.info("stage 1/2: demonstrations in %s", demos)
        expert = evaluate(
            env,
            lambda obs: env.expert_action(),
            tasks,
            config.eval.episodes_per_task,
            config.eval.videos,
            run_dir / "videos",
        )
        metrics.log(
            0,
            {"eval/success_rate": expert.mean_success}
            | {f"eval/success/{task}": rate for task, rate in expert.success_by_task.items()},
        )
        log.info("stage 2/2: scripted experts solve %.1f%% of eval states", 100 * expert.mean_success)
    finally:
        metrics.close()
        env.close()
    notes = [
        f"Demonstrations: `{demos}`, {config.demos.episodes_per_task} per task ({config.demos.split}).",
        "Policy learning (SFT, GRPO + SRPO) is not in the pipeline yet; scripted experts are the reference.",
    ]
    write_report(run_dir, "vla-rl-train report", {"scripted expert": expert}, notes)
    plot_success(run_dir / "success.png", {"scripted expert": expert})
    log.info("report: %s", run_dir / "report.md")
