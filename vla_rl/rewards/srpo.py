"""SRPO rewards: a failed trajectory earns credit for how close it ends up to the batch's successes.

Self-Referential Policy Optimization (Fei et al. 2025, arXiv:2511.15605). Every detail below was checked
against the authors' reference implementation in siiRL (github.com/sii-research/siiRL),
``siirl/utils/reward_score/embodied.py`` (``compute_embodied_reward``); the code here is our own.

Per task, within one batch (siiRL groups by the task name in the trial's file name; we group by
``task_id``):

- a success gets 1; a task without a success gives all its trajectories 0; a task without a failure has
  nothing to shape.
- The successes' embeddings are standardized per feature (scikit-learn's ``StandardScaler`` fitted on
  the successes only: population standard deviation, a feature with zero variance keeps scale 1) and
  clustered with ``DBSCAN(eps=0.5, min_samples=2)``; noise points (label -1) belong to no cluster.
- A cluster's centre is the mean of its members. siiRL averages the standardized members and maps the
  mean back with ``inverse_transform``, which is the mean of the raw embeddings. With no cluster (every
  success is noise) the single centre is the mean of all the successes' raw embeddings.
- Each failure's distance d is the Euclidean distance from its *raw* (unstandardized) embedding to the
  nearest centre: the standardization only decides cluster membership.
- d is min-max normalized over the task's failures to n in [0, 1]. When max - min < 1e-6 (a single
  failure, or all at equal distance) every failure gets n = 0.5, i.e. the reward 0.6 / 2 = 0.3.
- A failure's reward is 0.6 * sigmoid(10 * (0.5 - n)).

One difference: siiRL first sets aside trajectories whose embedding is all zeros (its marker for a video
without frames) and gives them 0. Our trajectories always carry frames, so there is no such case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from vla_rl.data.trajectory import Trajectory
from vla_rl.rewards.embedding import DEFAULT_NUM_FRAMES, TrajectoryEmbedder
from vla_rl.world_model.base import ClipEncoder


@dataclass
class SRPORewardConfig:
    """Constants of the SRPO reward (defaults: siiRL's reference implementation).

    Attributes:
        dbscan_eps: DBSCAN neighbourhood radius, in standardized embedding units.
        dbscan_min_samples: DBSCAN points (the point itself included) within ``dbscan_eps`` that make a
            core point.
        alpha: a failure's reward ceiling: failures get ``alpha * sigmoid(beta * (midpoint - n))``.
        beta: steepness of that sigmoid in the normalized distance n.
        midpoint: the normalized distance at which a failure gets ``alpha / 2``.
        min_distance_range: when a task's failure distances span less than this, they are not
            min-max normalized but all set to ``tied_normalized_distance``.
        tied_normalized_distance: n given to every failure in that case (one failure, or equal distances).
        num_frames: frames sampled per trajectory for the world-model encoder (F).
        embed_batch_size: clips per call to the encoder.
        cache_size: trajectory embeddings kept in the embedder's LRU cache.
        pixel_size: side of the downsampled frames of the ``pixel`` baseline's encoder.
        relative_to_start: embed each trajectory as its latent minus its first frame's
            (`TrajectoryEmbedder`), so distances compare what changed rather than where things stand; our
            variant, off in SRPO's published rule.

    """

    dbscan_eps: float = 0.5
    dbscan_min_samples: int = 2
    alpha: float = 0.6
    beta: float = 10.0
    midpoint: float = 0.5
    min_distance_range: float = 1e-6
    tied_normalized_distance: float = 0.5
    num_frames: int = DEFAULT_NUM_FRAMES
    embed_batch_size: int = 8
    cache_size: int = 1024
    pixel_size: int = 16
    relative_to_start: bool = False

    def __post_init__(self) -> None:
        for key in ("dbscan_eps", "alpha", "beta"):
            if getattr(self, key) <= 0:
                raise ValueError(f"reward.{key} must be > 0, got {getattr(self, key)}")
        for key in ("dbscan_min_samples", "num_frames", "embed_batch_size", "pixel_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"reward.{key} must be >= 1, got {getattr(self, key)}")
        if self.min_distance_range < 0:
            raise ValueError(f"reward.min_distance_range must be >= 0, got {self.min_distance_range}")
        if self.cache_size < 0:
            raise ValueError(f"reward.cache_size must be >= 0, got {self.cache_size}")


def success_centres(success_embeddings: np.ndarray, config: SRPORewardConfig) -> np.ndarray:
    """Reference points of one task's successes: the means of their DBSCAN clusters.

    Args:
        success_embeddings: float ``[S, D]`` (S >= 1), the successful trajectories' embeddings.
        config: DBSCAN's ``dbscan_eps`` and ``dbscan_min_samples`` (on standardized embeddings).

    Returns:
        float64 ``[C, D]``: the raw-space mean of each cluster, or ``[1, D]``, the mean of all successes,
        when DBSCAN finds no cluster.

    """
    from sklearn.cluster import DBSCAN
    from sklearn.preprocessing import StandardScaler

    if success_embeddings.ndim != 2 or len(success_embeddings) == 0:
        raise ValueError(f"success_embeddings must be [S >= 1, D], got {list(success_embeddings.shape)}")
    raw = success_embeddings.astype(np.float64)
    standardized = StandardScaler().fit_transform(raw)
    labels = DBSCAN(eps=config.dbscan_eps, min_samples=config.dbscan_min_samples).fit(standardized).labels_
    clusters = sorted(set(labels.tolist()) - {-1})
    if not clusters:
        return raw.mean(axis=0, keepdims=True)
    return np.stack([raw[labels == label].mean(axis=0) for label in clusters])


def nearest_centre_distances(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distance of each embedding ``[M, D]`` to its nearest centre ``[C, D]`` -> float64 ``[M]``."""
    if embeddings.ndim != 2 or centres.ndim != 2 or embeddings.shape[1] != centres.shape[1]:
        raise ValueError(
            f"embeddings [M, D] and centres [C, D] must share D, got {list(embeddings.shape)} "
            f"and {list(centres.shape)}"
        )
    differences = embeddings.astype(np.float64)[:, None, :] - centres[None, :, :]
    return np.sqrt((differences**2).sum(axis=-1)).min(axis=1)


def srpo_rewards(
    embeddings: np.ndarray, success: np.ndarray, task_ids: np.ndarray, config: SRPORewardConfig
) -> np.ndarray:
    """SRPO rewards of one batch (see the module docstring for the rule and its source).

    Args:
        embeddings: float ``[N, D]``, one world-model embedding per trajectory.
        success: bool ``[N]``.
        task_ids: int ``[N]``: trajectories are compared only with others of the same task.
        config: the reward's constants.

    Returns:
        float32 ``[N]``: 1 for a success; for a failure ``alpha * sigmoid(beta * (midpoint - n))`` if its
        task has a success in the batch, else 0.

    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got {list(embeddings.shape)}")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values")
    count = len(embeddings)
    if success.shape != (count,) or success.dtype != np.bool_:
        raise ValueError(f"success must be bool [{count}], got {success.dtype} {list(success.shape)}")
    if task_ids.shape != (count,) or not np.issubdtype(task_ids.dtype, np.integer):
        raise ValueError(f"task_ids must be int [{count}], got {task_ids.dtype} {list(task_ids.shape)}")

    rewards = success.astype(np.float32)
    for task in np.unique(task_ids):
        in_task = task_ids == task
        successes = np.flatnonzero(in_task & success)
        failures = np.flatnonzero(in_task & ~success)
        if len(successes) == 0 or len(failures) == 0:
            continue
        centres = success_centres(embeddings[successes], config)
        distances = nearest_centre_distances(embeddings[failures], centres)
        spread = distances.max() - distances.min()
        if spread < config.min_distance_range:
            normalized = np.full_like(distances, config.tied_normalized_distance)
        else:
            normalized = (distances - distances.min()) / spread
        rewards[failures] = config.alpha * expit(config.beta * (config.midpoint - normalized))
    return rewards


class SRPOReward:
    """The SRPO reward model: trajectories -> world-model embeddings -> `srpo_rewards`."""

    def __init__(self, embedder: TrajectoryEmbedder, config: SRPORewardConfig) -> None:
        """Score trajectories in ``embedder``'s latent space with ``config``'s constants."""
        self.embedder = embedder
        self.config = config

    def __call__(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """Trajectories (one batch, any mix of tasks) -> float32 rewards ``[N]``."""
        embeddings = self.embedder.embed(trajectories)
        success = np.array([trajectory.success for trajectory in trajectories], dtype=bool)
        task_ids = np.array([trajectory.task_id for trajectory in trajectories], dtype=np.int64)
        return srpo_rewards(embeddings, success, task_ids, self.config)


def reward_embedder(encoder: ClipEncoder, config: SRPORewardConfig) -> TrajectoryEmbedder:
    """The `TrajectoryEmbedder` over ``encoder`` with ``config``'s embedding settings."""
    return TrajectoryEmbedder(
        encoder,
        num_frames=config.num_frames,
        batch_size=config.embed_batch_size,
        cache_size=config.cache_size,
        relative_to_start=config.relative_to_start,
    )


def build_srpo_reward(encoder: ClipEncoder | None, config: SRPORewardConfig) -> SRPOReward:
    """The ``srpo`` registry entry: `SRPOReward` over the world model's ``encoder`` (required)."""
    if encoder is None:
        raise ValueError("the srpo reward needs a world-model encoder (a ClipEncoder), got encoder=None")
    return SRPOReward(reward_embedder(encoder, config), config)
