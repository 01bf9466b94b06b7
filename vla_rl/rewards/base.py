"""What every reward model is: a batch of finished trajectories -> one reward per trajectory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from vla_rl.data.trajectory import Trajectory


class RewardModel(Protocol):
    """Scores one batch of finished trajectories (rewards may depend on the whole batch)."""

    def __call__(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """N trajectories -> float32 rewards ``[N]``."""
        ...
