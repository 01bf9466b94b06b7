"""`vla-rl-train`: the training pipeline, stage by stage, in one run directory.

Stages: (1) scripted-expert demonstrations as a LeRobotDataset (collected once, reused);
(2) supervised fine-tuning of the VLA policy on ``algo.episodes_per_task`` demonstrations per task
(``experiment=sft_one_demo`` / ``sft_full``); (3) evaluation of the policy and of the scripted experts
on the ``eval`` initial states. GRPO with SRPO rewards comes next (a later stage).
Outputs under ``run_dir``: ``policy/`` (safetensors + JSON), ``checkpoints/``, ``metrics.csv`` +
TensorBoard, ``success.png``, ``success_vs_step.png``, ``videos/*.mp4``, ``report.md`` / ``report.json``.
A finished stage is skipped and an interrupted one resumes from its last checkpoint.
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
    from vla_rl.algos.sft import train_sft
    from vla_rl.data.demos import collect_demonstrations
    from vla_rl.data.frames import load_frames
    from vla_rl.envs import make_env
    from vla_rl.evaluation import evaluate, plot_metric, plot_success, write_report
    from vla_rl.metrics import MetricsLogger
    from vla_rl.policy.actor import ChunkActor
    from vla_rl.policy.factory import build_policy
    from vla_rl.policy.modeling_vla import VLAPolicy

    config = to_config(cfg, TrainConfig)
    run_dir = Path(config.run_dir)
    log.info("run directory %s\n%s", run_dir, summarize(config))
    tasks = config.env.task_names()
    env = make_env(config.env)
    metrics = MetricsLogger(run_dir)
    try:
        env.reset(seed=config.seed)
        demos = collect_demonstrations(env, config.demos, tasks, int(env.metadata["render_fps"]))
        log.info("stage 1/3: demonstrations in %s", demos)

        policy_dir = run_dir / "policy"
        if policy_dir.exists():
            policy = VLAPolicy.from_pretrained(policy_dir)
            log.info("stage 2/3: SFT already done, loaded %s", policy_dir)
        else:
            frames = load_frames(
                demos,
                config.demos.repo_id,
                list(config.env.cameras),
                config.policy.image_size,
                config.policy.chunk_size,
                config.algo.episodes_per_task,
            )
            policy = build_policy(config.policy, frames, list(config.env.cameras))
            log.info(
                "stage 2/3: SFT of a %.1fM-parameter policy on %d frames",
                policy.num_parameters() / 1e6,
                len(frames),
            )

            def periodic_eval(current: VLAPolicy, step: int) -> float:
                actor = ChunkActor(current, 0.0, config.policy.execute_steps)
                result = evaluate(
                    env, actor, tasks, config.algo.eval_episodes_per_task, on_reset=actor.reset, progress=None
                )
                log.info("step %d: eval success %.1f%%", step, 100 * result.mean_success)
                return result.mean_success

            policy = train_sft(policy, frames, config.algo, run_dir, metrics, periodic_eval)
            policy.save_pretrained(policy_dir)

        policy.eval()
        actor = ChunkActor(policy, 0.0, config.policy.execute_steps)
        learned = evaluate(
            env,
            actor,
            tasks,
            config.eval.episodes_per_task,
            config.eval.videos,
            run_dir / "videos",
            actor.reset,
        )
        expert = evaluate(
            env, lambda obs: env.expert_action(), tasks, config.eval.episodes_per_task, progress="expert"
        )
        metrics.log(config.algo.steps, {"eval/final_success_rate": learned.mean_success})
        log.info(
            "stage 3/3: policy %.1f%%, scripted experts %.1f%%",
            100 * learned.mean_success,
            100 * expert.mean_success,
        )
    finally:
        metrics.close()
        env.close()
    results = {"SFT policy": learned, "scripted expert": expert}
    notes = [
        f"Demonstrations: `{demos}`; SFT on {config.algo.episodes_per_task or 'all'} per task, "
        f"{config.algo.steps} steps; policy `{policy_dir}`.",
        f"Evaluation: {config.eval.episodes_per_task} eval initial states per task, greedy decoding.",
    ]
    write_report(run_dir, "vla-rl-train report", results, notes)
    plot_success(run_dir / "success.png", results)
    plot_metric(run_dir / "success_vs_step.png", metrics.csv_path, "eval/success_rate", "SFT step")
    log.info("report: %s", run_dir / "report.md")
