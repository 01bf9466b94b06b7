"""Building batched envs from configs, through the env registry."""

from __future__ import annotations

import sim
from sim.core import AutoresetMode, BatchedEnv
from vla_rl.config import ArmEnvConfig


def make_env(config: ArmEnvConfig, autoreset_mode: AutoresetMode = AutoresetMode.DISABLED) -> BatchedEnv:
    """The batched env ``config`` describes (looked up by ``config.name`` in `sim.ENVS`)."""
    env_class = sim.ENVS.get(config.name)
    env: BatchedEnv = env_class(
        num_envs=config.num_envs,
        tasks=config.task_names(),
        cameras=tuple(config.cameras),
        image_size=config.image_size,
        autoreset_mode=autoreset_mode,
        num_threads=config.num_threads,
    )
    return env
