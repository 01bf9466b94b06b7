"""Reward-quality metrics on held-out rollouts: progress monotonicity and success separation.

- `progress_monotonicity`: along a successful episode, progress measured on growing prefixes
  (``frames[: t + 1]``) should rise with t. We report Spearman's rank correlation of progress with t,
  averaged over successful episodes.
- `success_separation_auc`: the ROC AUC of a reward as a classifier of success vs failure.

For the latent rewards (``srpo``, ``pixel``), the progress of a prefix is `LatentProgress`: minus the
Euclidean distance of the prefix's embedding to the nearest cluster centre of the reference successes (the
same centres `srpo_rewards` uses). SRPO's failure reward is a decreasing function of that distance after a
min-max normalization over a batch; Spearman's correlation is rank-based, so the distance itself measures
the same ordering without needing a batch to normalize over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata, spearmanr

from vla_rl.data.trajectory import Trajectory
from vla_rl.rewards.embedding import TrajectoryEmbedder
from vla_rl.rewards.srpo import SRPORewardConfig, nearest_centre_distances, success_centres

ProgressFn = Callable[[Sequence[np.ndarray], Sequence[Trajectory]], np.ndarray]
"""(P prefix videos, each uint8 ``[L_p, H, W, 3]``; reference successes) -> progress float ``[P]``."""


def prefix_ends(length: int, num_prefixes: int) -> np.ndarray:
    """Last frame index t of each prefix ``frames[: t + 1]`` of an episode of ``length`` frames.

    Returns:
        int64 ``[P]``, P <= ``num_prefixes``: evenly spaced over ``[0, length - 1]`` (truncated to
        integers, first and last included), duplicates removed for short episodes.

    """
    if length < 1 or num_prefixes < 2:
        raise ValueError(f"need length >= 1 and num_prefixes >= 2, got {length} and {num_prefixes}")
    return np.unique(np.linspace(0, length - 1, num_prefixes).astype(np.int64))


def latent_distances(
    embedder: TrajectoryEmbedder,
    references: Sequence[Trajectory],
    videos: Sequence[np.ndarray],
    config: SRPORewardConfig,
) -> np.ndarray:
    """Distance of each video's embedding to the nearest cluster centre of the reference successes.

    Args:
        embedder: the reward's embedder (world model or pixels).
        references: successful trajectories of the task (at least one), clustered as `srpo_rewards` does.
        videos: P videos, each uint8 ``[L_p, H, W, 3]`` (for example prefixes of one episode).
        config: the DBSCAN constants.

    Returns:
        float64 ``[P]``, Euclidean distances in the raw embedding space.

    """
    if not references:
        raise ValueError("latent_distances needs at least one reference success")
    centres = success_centres(embedder.embed(references), config)
    return nearest_centre_distances(embedder.embed_videos(videos), centres)


class LatentProgress:
    """A `ProgressFn` for the latent rewards: progress = minus `latent_distances`."""

    def __init__(self, embedder: TrajectoryEmbedder, config: SRPORewardConfig) -> None:
        """Measure progress in ``embedder``'s latent space with ``config``'s DBSCAN constants."""
        self.embedder = embedder
        self.config = config

    def __call__(self, videos: Sequence[np.ndarray], references: Sequence[Trajectory]) -> np.ndarray:
        """P videos, reference successes -> float64 progress ``[P]`` (higher is closer to success)."""
        return -latent_distances(self.embedder, references, videos, self.config)


def progress_monotonicity(
    progress_fn: ProgressFn, trajectories: Sequence[Trajectory], num_prefixes: int = 8
) -> float:
    """Mean Spearman correlation between time and progress along successful episodes.

    Each successful trajectory with at least two frames and at least one other success of its task in
    ``trajectories`` is scored: its prefixes ``frames[: t + 1]`` at `prefix_ends` are passed to
    ``progress_fn`` with the task's other successes as references, and the Spearman correlation of
    progress with t is taken (0 when progress is constant, where Spearman's correlation is undefined).

    Args:
        progress_fn: prefix videos, reference successes -> progress ``[P]``.
        trajectories: held-out rollouts (any mix of tasks and outcomes; failures serve nothing here).
        num_prefixes: prefixes per episode (fewer for episodes shorter than that).

    Returns:
        The mean correlation over the scored trajectories, in [-1, 1].

    Raises:
        ValueError: if no trajectory can be scored (no task with two successes).

    """
    correlations = []
    for i, trajectory in enumerate(trajectories):
        references = [
            other
            for j, other in enumerate(trajectories)
            if j != i and other.success and other.task_id == trajectory.task_id
        ]
        if not trajectory.success or not references or len(trajectory.frames) < 2:
            continue
        ends = prefix_ends(len(trajectory.frames), num_prefixes)
        progress = np.asarray(progress_fn([trajectory.frames[: end + 1] for end in ends], references))
        if progress.shape != ends.shape:
            raise ValueError(f"progress_fn returned shape {progress.shape} for {len(ends)} prefixes")
        if np.ptp(progress) == 0:
            correlations.append(0.0)
        else:
            correlations.append(float(spearmanr(ends, progress).statistic))
    if not correlations:
        raise ValueError("progress_monotonicity needs a task with at least two successful trajectories")
    return float(np.mean(correlations))


def success_separation_auc(rewards: np.ndarray, success: np.ndarray) -> float:
    """ROC AUC of ``rewards`` ``[N]`` separating successes from failures (``success`` bool ``[N]``).

    The Mann-Whitney form: the probability that a random success out-scores a random failure, a tie
    counting one half. With average ranks r over all N rewards, ``n1`` successes and ``n0`` failures,
    ``AUC = (sum of the successes' ranks - n1 (n1 + 1) / 2) / (n1 n0)``.
    """
    if rewards.ndim != 1 or success.shape != rewards.shape or success.dtype != np.bool_:
        raise ValueError(
            f"rewards must be [N] and success bool [N], got {list(rewards.shape)} and "
            f"{success.dtype} {list(success.shape)}"
        )
    num_success = int(success.sum())
    num_failure = len(success) - num_success
    if num_success == 0 or num_failure == 0:
        raise ValueError(f"AUC needs successes and failures, got {num_success} and {num_failure}")
    ranks = rankdata(rewards, method="average")
    return float((ranks[success].sum() - num_success * (num_success + 1) / 2) / (num_success * num_failure))
