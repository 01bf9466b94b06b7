"""Building batched envs from configs, through the env registry."""

from __future__ import annotations

import sim
from sim.core import AutoresetMode, BatchedEnv
from vla_rl.config import EnvConfig


def make_env(config: EnvConfig, autoreset_mode: AutoresetMode = AutoresetMode.DISABLED) -> BatchedEnv:
    """The batched env ``config`` describes (looked up by ``config.name`` in `sim.ENVS`)."""
    env: BatchedEnv = sim.ENVS.get(config.name)(**config.env_kwargs(), autoreset_mode=autoreset_mode)
    return env
