import numpy as np

from tests.vla_rl.rewards.fakes import constant_frames, make_trajectory
from vla_rl.rewards.binary import BinaryReward


def test_binary_reward_is_the_success_flag() -> None:
    trajectories = [make_trajectory(constant_frames(0), success=ok) for ok in (True, False, True)]
    rewards = BinaryReward()(trajectories)
    assert rewards.dtype == np.float32
    assert rewards.tolist() == [1.0, 0.0, 1.0]
