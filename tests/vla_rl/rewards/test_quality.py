from collections.abc import Sequence

import numpy as np
import pytest

from tests.vla_rl.rewards.fakes import constant_frames, make_trajectory
from vla_rl.data.trajectory import Trajectory
from vla_rl.rewards.embedding import TrajectoryEmbedder
from vla_rl.rewards.pixel import PixelClipEncoder
from vla_rl.rewards.quality import (
    LatentProgress,
    prefix_ends,
    progress_monotonicity,
    success_separation_auc,
)
from vla_rl.rewards.srpo import SRPORewardConfig


def auc(rewards: list[float], success: list[bool]) -> float:
    return success_separation_auc(np.array(rewards), np.array(success))


def test_auc_hand_computed() -> None:
    # Successes 0.35, 0.8; failures 0.1, 0.4. Pairs (success > failure): 0.35>0.1 yes, 0.35>0.4 no,
    # 0.8>0.1 yes, 0.8>0.4 yes -> 3 / 4.
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)


def test_auc_counts_ties_half() -> None:
    # Successes 0.5, 0.9; failures 0.5, 0.2. Pairs: 0.5 vs 0.5 tie (1/2), 0.5>0.2 (1), 0.9 beats both (2)
    # -> 3.5 / 4 = 0.875.
    assert auc([0.5, 0.5, 0.2, 0.9], [True, False, False, True]) == pytest.approx(0.875)
    # Binary rewards equal to the outcome separate perfectly; a constant reward is a coin flip.
    assert auc([1, 0, 0, 1, 0], [True, False, False, True, False]) == pytest.approx(1.0)
    assert auc([0.3, 0.3, 0.3], [True, False, True]) == pytest.approx(0.5)
    assert auc([0.0, 1.0], [True, False]) == pytest.approx(0.0)


def test_auc_needs_both_outcomes_and_matching_shapes() -> None:
    with pytest.raises(ValueError, match="successes and failures"):
        auc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="bool"):
        success_separation_auc(np.zeros(3), np.zeros(2, dtype=bool))


def test_prefix_ends() -> None:
    # linspace(0, 14, 8) = 0, 2, 4, 6, 8, 10, 12, 14
    assert prefix_ends(15, 8).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    # linspace(0, 2, 8) truncated = 0,0,0,0,1,1,1,2 -> unique 0, 1, 2
    assert prefix_ends(3, 8).tolist() == [0, 1, 2]


def ramp(start: np.ndarray, goal: np.ndarray, length: int, seed: int) -> np.ndarray:
    """Frames moving linearly from ``start`` to ``goal``, plus +-2 grey levels of noise."""
    weights = np.linspace(0.0, 1.0, length)[:, None, None, None]
    frames = (1 - weights) * start + weights * goal
    noise = np.random.default_rng(seed).integers(-2, 3, size=frames.shape)
    return np.clip(frames + noise, 0, 255).astype(np.uint8)


def test_monotone_approach_to_success_frames_has_monotonicity_one() -> None:
    # Every success moves from the same start image to the same goal image (different noise). Under the
    # pixel encoder a prefix's embedding is start + m * (goal - start) with m the mean interpolation
    # weight of its sampled frames, which grows with the prefix; the reference centre has m of a whole
    # episode. So the distance falls with every prefix and Spearman's rho is 1 for each success.
    rng = np.random.default_rng(0)
    start, goal = (rng.integers(0, 256, size=(32, 32, 3)).astype(np.float64) for _ in range(2))
    trajectories = [make_trajectory(ramp(start, goal, 40, seed), success=True) for seed in range(3)]
    trajectories.append(make_trajectory(ramp(start, start, 40, 3), success=False))
    config = SRPORewardConfig(num_frames=16)
    progress = LatentProgress(TrajectoryEmbedder(PixelClipEncoder(), num_frames=16), config)
    assert progress_monotonicity(progress, trajectories) == pytest.approx(1.0)


def test_monotonicity_of_fixed_progress_functions() -> None:
    trajectories = [make_trajectory(constant_frames(0, length=10), success=True) for _ in range(2)]

    def backwards(videos: Sequence[np.ndarray], references: Sequence[Trajectory]) -> np.ndarray:
        return -np.array([len(video) for video in videos], dtype=np.float64)

    def flat(videos: Sequence[np.ndarray], references: Sequence[Trajectory]) -> np.ndarray:
        return np.zeros(len(videos))

    assert progress_monotonicity(backwards, trajectories) == pytest.approx(-1.0)
    assert progress_monotonicity(flat, trajectories) == 0.0


def test_monotonicity_needs_two_successes_of_one_task() -> None:
    trajectories = [
        make_trajectory(constant_frames(0), success=True, task_id=0),
        make_trajectory(constant_frames(0), success=True, task_id=1),
        make_trajectory(constant_frames(0), success=False, task_id=0),
    ]
    with pytest.raises(ValueError, match="two successful"):
        progress_monotonicity(lambda videos, references: np.zeros(len(videos)), trajectories)
