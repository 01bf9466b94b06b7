"""Hydra entry points. Configs live in the repository's top-level ``configs/`` folder."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vla_rl.config import register_configs

# OpenMP threads that spin while waiting steal the cores MuJoCo's threads and the render workers need
# (measured: an autoregressive act() ran ~9x slower on a loaded 2-core machine). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
log = logging.getLogger("vla_rl")

register_configs()


def to_config[T](cfg: DictConfig, schema: type[T]) -> T:
    """Convert Hydra's config to its dataclass, running the schema's checks; exit with a clear message."""
    try:
        config = OmegaConf.to_object(cfg)
    except Exception as error:  # OmegaConf wraps __post_init__ errors; show the message, not a traceback
        cause = error.__cause__ or error
        sys.exit(f"error: invalid configuration: {cause}")
    assert isinstance(config, schema)
    return config


def compose_config[T](name: str, schema: type[T], *overrides: str) -> T:
    """``configs/<name>.yaml`` with Hydra ``overrides``, outside a Hydra app, checked like `to_config`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return to_config(compose(config_name=name, overrides=list(overrides)), schema)


def summarize(config: Any) -> str:
    """The resolved config as YAML, for logs."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
