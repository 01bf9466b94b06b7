"""`vla-rl-collect`: record scripted-expert demonstrations as a LeRobotDataset.

Example: ``vla-rl-collect demos.episodes_per_task=10 env.tasks=[lift_block] demos.root=data/lift``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vla_rl.cli import CONFIG_DIR, log, to_config
from vla_rl.config import CollectConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="collect")
def main(cfg: DictConfig) -> None:
    """Collect demonstrations for every configured task."""
    from vla_rl.data.demos import collect_demonstrations
    from vla_rl.envs import make_env

    config = to_config(cfg, CollectConfig)
    env = make_env(config.env)
    try:
        env.reset(seed=config.seed)
        root = collect_demonstrations(
            env, config.demos, config.env.task_names(), int(env.metadata["render_fps"]), config.overwrite
        )
    finally:
        env.close()
    log.info("demonstrations: %s", root)
