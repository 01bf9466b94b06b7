"""Reward models: finished trajectories -> one reward each (``binary``, ``srpo``, ``pixel``)."""

from vla_rl.rewards.factory import REWARDS, build_reward

__all__ = ["REWARDS", "build_reward"]
