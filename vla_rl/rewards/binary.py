"""The sparse outcome reward: 1 for a success, 0 otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vla_rl.data.trajectory import Trajectory

if TYPE_CHECKING:
    from vla_rl.rewards.srpo import SRPORewardConfig
    from vla_rl.world_model.base import ClipEncoder


class BinaryReward:
    """1.0 for a successful trajectory, 0.0 for a failed one."""

    def __call__(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """N trajectories -> float32 ``[N]`` of 0.0 / 1.0."""
        return np.array([trajectory.success for trajectory in trajectories], dtype=np.float32)


def build_binary_reward(encoder: ClipEncoder | None, config: SRPORewardConfig) -> BinaryReward:
    """The ``binary`` registry entry (it uses neither an encoder nor ``config``)."""
    return BinaryReward()
