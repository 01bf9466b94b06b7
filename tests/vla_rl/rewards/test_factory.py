import numpy as np
import pytest

from tests.vla_rl.rewards.fakes import CountingEncoder, constant_frames, make_trajectory
from vla_rl.rewards import REWARDS, build_reward
from vla_rl.rewards.srpo import SRPORewardConfig


@pytest.mark.parametrize("name", REWARDS.names())
def test_every_registered_reward_scores_a_batch(name: str) -> None:
    reward = build_reward(name, CountingEncoder(), SRPORewardConfig(num_frames=4))
    trajectories = [
        make_trajectory(constant_frames(0), success=True, task_id=0),
        make_trajectory(constant_frames(10), success=True, task_id=0),
        make_trajectory(constant_frames(40), success=False, task_id=0),
        make_trajectory(constant_frames(90), success=False, task_id=0),
        make_trajectory(constant_frames(40), success=False, task_id=1),
    ]
    rewards = reward(trajectories)
    assert rewards.shape == (5,)
    assert rewards.dtype == np.float32
    assert rewards[:2].tolist() == [1.0, 1.0]
    assert np.all((rewards[2:4] >= 0) & (rewards[2:4] < 0.6))
    assert rewards[4] == 0.0


def test_registry_names() -> None:
    assert REWARDS.names() == ["binary", "pixel", "srpo"]


def test_unknown_reward_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of: binary, pixel, srpo"):
        build_reward("dense", None, SRPORewardConfig())


def test_srpo_needs_an_encoder() -> None:
    with pytest.raises(ValueError, match="encoder"):
        build_reward("srpo", None, SRPORewardConfig())


def test_pixel_needs_no_encoder() -> None:
    reward = build_reward("pixel", None, SRPORewardConfig(num_frames=2, pixel_size=4))
    trajectories = [make_trajectory(constant_frames(v), success=v == 0) for v in (0, 0, 50)]
    np.testing.assert_allclose(reward(trajectories), [1, 1, 0.3])
