"""`vla-rl-eval`: evaluate a policy on the ``eval`` initial states; write a report, a plot and videos.

Examples: ``vla-rl-eval eval.policy=expert eval.episodes_per_task=20 run_dir=runs/expert_eval``;
``vla-rl-eval eval.policy=policy policy.path=runs/default/policy``; on LIBERO (no scripted experts, so
the policy is evaluated): ``vla-rl-eval env=libero_spatial policy.path=...`` (10 tasks x 50 trials).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vla_rl.cli import CONFIG_DIR, log, to_config
from vla_rl.config import EvalRunConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Evaluate and report."""
    import sim
    from vla_rl.data.episodes import ActFn
    from vla_rl.envs import make_env
    from vla_rl.evaluation import evaluate, plot_success, write_report
    from vla_rl.policy.actor import ChunkActor
    from vla_rl.policy.modeling_vla import VLAPolicy

    config = to_config(cfg, EvalRunConfig)
    run_dir = Path(config.run_dir)
    if config.eval.policy == "expert" and not sim.ENVS.get(config.env.name).HAS_SCRIPTED_EXPERT:
        # LIBERO has no scripted experts: `vla-rl-eval env=libero_spatial policy.path=...` runs the policy.
        if not config.policy.path:
            sys.exit(f"error: env {config.env.name} has no scripted experts; pass policy.path=<saved policy>")
        config.eval.policy = "policy"
    if config.eval.policy == "policy" and not config.policy.path:
        sys.exit("error: eval.policy=policy needs policy.path=<directory written by save_pretrained>")
    env = make_env(config.env)
    try:
        env.reset(seed=config.seed)
        act: ActFn
        on_reset: Callable[[], None] | None
        if config.eval.policy == "policy":
            assert config.policy.path is not None
            actor = ChunkActor(
                VLAPolicy.from_pretrained(config.policy.path).eval(),
                config.eval.temperature,
                config.policy.execute_steps,
                config.eval.seed,
            )
            act, on_reset = actor, actor.reset
        else:
            act, on_reset = (lambda obs: env.expert_action()), None
        result = evaluate(
            env,
            act,
            config.env.task_names(),
            config.eval.episodes_per_task,
            config.eval.videos,
            run_dir / "videos",
            on_reset,
        )
    finally:
        env.close()
    write_report(run_dir, f"Evaluation of `{config.eval.policy}`", {config.eval.policy: result})
    plot_success(run_dir / "success.png", {config.eval.policy: result})
    log.info("mean success %.1f%%; report in %s", 100 * result.mean_success, run_dir / "report.md")
