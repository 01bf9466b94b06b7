from collections.abc import Sequence

import numpy as np
import pytest

from tests.vla_rl.rewards.fakes import CountingEncoder, constant_frames, make_trajectory
from vla_rl.rewards.embedding import TrajectoryEmbedder
from vla_rl.rewards.srpo import SRPOReward, SRPORewardConfig, srpo_rewards, success_centres

CONFIG = SRPORewardConfig()


def sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def rewards(embeddings: Sequence[Sequence[float]], success: Sequence[bool]) -> np.ndarray:
    ids = np.zeros(len(success), dtype=np.int64)
    return srpo_rewards(np.array(embeddings, dtype=np.float32), np.array(success), ids, CONFIG)


# Two tight clusters of two successes each, plus three failures (hand derivation):
#   successes A1 (-49, -1), A2 (-31, -1), B1 (31, 1), B2 (49, 1).
#   Standardization (fit on the successes, population std):
#     x: mean 0, variance (49² + 31² + 31² + 49²) / 4 = (2401 + 961) / 2 = 1681, std 41
#        -> -49/41, -31/41, 31/41, 49/41
#     y: mean 0, variance 1, std 1 -> -1, -1, 1, 1
#   DBSCAN (eps 0.5, min_samples 2) on the standardized points: |A1 - A2| = 18/41 ≈ 0.439 <= 0.5, likewise
#   |B1 - B2|; A to B >= 62/41 > 0.5. Clusters {A1, A2}, {B1, B2}. (Unstandardized, |A1 - A2| = 18 > 0.5:
#   every success would be noise and the single centre the mean (0, 0).)
#   Centres (raw means): cA = (-40, -1), cB = (40, 1).
#   Failures (raw distances to the nearest centre):
#     F1 (-37, -5): F1 - cA = (3, -4)  -> d = 5
#     F2 (52, 6):   F2 - cB = (12, 5)  -> d = 13
#     F3 (16, 8):   F3 - cB = (-24, 7) -> d = 25
#   Min-max over the failures: n = (d - 5) / 20 = 0, 0.4, 1.
#   Reward 0.6 * sigmoid(10 (0.5 - n)) = 0.6 sigmoid(5), 0.6 sigmoid(1), 0.6 sigmoid(-5)
#                                      ≈ 0.595984, 0.438635, 0.004016.
#   (Distances in the standardized space would give n ≈ 0, 0.333, 1 instead.)
SUCCESSES = [[-49, -1], [-31, -1], [31, 1], [49, 1]]
FAILURES = [[-37, -5], [52, 6], [16, 8]]


def test_hand_derived_two_clusters() -> None:
    centres = success_centres(np.array(SUCCESSES, dtype=np.float64), CONFIG)
    np.testing.assert_allclose(centres, [[-40, -1], [40, 1]])
    result = rewards(SUCCESSES + FAILURES, [True] * 4 + [False] * 3)
    assert result.dtype == np.float32
    expected = [1, 1, 1, 1, 0.6 * sigmoid(5), 0.6 * sigmoid(1), 0.6 * sigmoid(-5)]
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    np.testing.assert_allclose(result[4:], [0.595984, 0.438635, 0.004016], atol=1e-6)


def test_all_noise_uses_the_mean_of_the_successes() -> None:
    # Successes 0, 10, 20: mean 10, std sqrt(200 / 3) ≈ 8.165, standardized ≈ -1.22, 0, 1.22: neighbours
    # are 1.22 apart > eps 0.5, so all noise -> one centre, the raw mean 10.
    # Failures 13, 20, 3.5: d = 3, 10, 6.5 -> n = 0, 1, 0.5
    # -> 0.6 sigmoid(5) ≈ 0.595984, 0.6 sigmoid(-5) ≈ 0.004016, 0.6 sigmoid(0) = 0.3.
    # (The nearest *success* instead would give d = 3, 0, 3.5.)
    result = rewards([[0], [10], [20], [13], [20], [3.5]], [True] * 3 + [False] * 3)
    np.testing.assert_allclose(result, [1, 1, 1, 0.6 * sigmoid(5), 0.6 * sigmoid(-5), 0.3], rtol=1e-6)


def test_single_failure_gets_the_tied_value() -> None:
    # One failure: max - min = 0 < 1e-6, so n = 0.5 and the reward is 0.6 * sigmoid(0) = 0.3.
    np.testing.assert_allclose(rewards([[0.0], [1.0], [7.0]], [True, True, False]), [1, 1, 0.3])


def test_failures_at_equal_distances_get_the_tied_value() -> None:
    # Successes 0 and 0 (identical: one cluster, centre 0); failures at -2 and 2: d = 2, 2 -> n = 0.5 each.
    np.testing.assert_allclose(
        rewards([[0.0], [0.0], [-2.0], [2.0]], [True, True, False, False]), [1, 1, 0.3, 0.3]
    )


def test_task_without_success_gives_zeros() -> None:
    assert rewards([[0.0], [1.0], [2.0]], [False, False, False]).tolist() == [0, 0, 0]


def test_all_successes_give_ones() -> None:
    assert rewards([[0.0], [5.0]], [True, True]).tolist() == [1, 1]


def test_tasks_do_not_mix() -> None:
    # Task 0 is the hand-derived case; task 1 has its own successes, and task 2 none. Shuffled into one
    # batch, each task's rewards equal those computed for the task alone.
    tasks = [
        (SUCCESSES + FAILURES, [True] * 4 + [False] * 3),
        ([[100, 100], [101, 100], [90, 90], [95, 95]], [True, True, False, False]),
        ([[-40, -1], [40, 1]], [False, False]),
    ]
    alone = np.concatenate([rewards(embeddings, success) for embeddings, success in tasks])
    embeddings = np.concatenate([np.array(task_embeddings) for task_embeddings, _ in tasks])
    success = np.concatenate([np.array(task_success) for _, task_success in tasks])
    task_ids = np.concatenate(
        [np.full(len(task_success), task) for task, (_, task_success) in enumerate(tasks)]
    )
    shuffle = np.random.default_rng(0).permutation(len(success))
    mixed = srpo_rewards(embeddings[shuffle].astype(np.float32), success[shuffle], task_ids[shuffle], CONFIG)
    np.testing.assert_allclose(mixed, alone[shuffle], rtol=1e-6)
    assert alone[-2:].tolist() == [0, 0]


def test_srpo_rewards_validates_inputs() -> None:
    embeddings = np.zeros((3, 2), dtype=np.float32)
    ids = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match="embeddings"):
        srpo_rewards(np.zeros(3, dtype=np.float32), np.zeros(3, dtype=bool), ids, CONFIG)
    with pytest.raises(ValueError, match="success"):
        srpo_rewards(embeddings, np.zeros(2, dtype=bool), ids, CONFIG)
    with pytest.raises(ValueError, match="success"):
        srpo_rewards(embeddings, np.zeros(3, dtype=np.int64), ids, CONFIG)
    with pytest.raises(ValueError, match="task_ids"):
        srpo_rewards(embeddings, np.zeros(3, dtype=bool), np.zeros(4, dtype=np.int64), CONFIG)
    with pytest.raises(ValueError, match="NaN"):
        srpo_rewards(np.full((3, 2), np.nan, dtype=np.float32), np.zeros(3, dtype=bool), ids, CONFIG)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="dbscan_eps"):
        SRPORewardConfig(dbscan_eps=0.0)
    with pytest.raises(ValueError, match="num_frames"):
        SRPORewardConfig(num_frames=0)


def test_srpo_reward_model_scores_trajectories() -> None:
    # CountingEncoder embeds a constant grey level g as (g, g, g) / 255. Successes at 0 and 0 (centre 0);
    # failures at 51 (d = sqrt(3) * 0.2) and 102 (d = sqrt(3) * 0.4): n = 0, 1.
    model = SRPOReward(TrajectoryEmbedder(CountingEncoder(), num_frames=4), CONFIG)
    trajectories = [
        make_trajectory(constant_frames(0), success=True),
        make_trajectory(constant_frames(0, length=7), success=True),
        make_trajectory(constant_frames(51), success=False),
        make_trajectory(constant_frames(102), success=False),
    ]
    np.testing.assert_allclose(model(trajectories), [1, 1, 0.6 * sigmoid(5), 0.6 * sigmoid(-5)], rtol=1e-5)
