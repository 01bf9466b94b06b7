"""The reward registry: names -> builders ``(encoder, config) -> RewardModel``, imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.registry import Registry

if TYPE_CHECKING:
    from vla_rl.rewards.base import RewardModel
    from vla_rl.rewards.srpo import SRPORewardConfig
    from vla_rl.world_model.base import ClipEncoder

REWARDS = Registry("reward")
REWARDS.register("binary", "vla_rl.rewards.binary:build_binary_reward")
REWARDS.register("srpo", "vla_rl.rewards.srpo:build_srpo_reward")
REWARDS.register("pixel", "vla_rl.rewards.pixel:build_pixel_reward")


def build_reward(name: str, encoder: ClipEncoder | None, config: SRPORewardConfig) -> RewardModel:
    """The reward model registered as ``name``.

    Args:
        name: ``binary`` (1 on success, else 0), ``srpo`` (world-model latent progress; needs
            ``encoder``) or ``pixel`` (the same rule on downsampled pixels).
        encoder: the world model's clip encoder; only ``srpo`` uses it.
        config: the SRPO constants and embedding settings (``srpo`` and ``pixel``).

    Returns:
        A callable: N trajectories -> float32 rewards ``[N]``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), or ``srpo`` without encoder.

    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of: {', '.join(REWARDS.names())}")
    builder = REWARDS.get(name)
    reward: RewardModel = builder(encoder, config)
    return reward
