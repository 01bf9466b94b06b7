import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.vla_rl.algos.test_sft import synthetic_frames
from vla_rl.config import PolicyConfig
from vla_rl.policy.factory import action_range, build_policy


def one_sided_frames():
    # Like one demonstration that only ever moved in +y: its actions span [0.2, 0.9] in dimension 1.
    frames = synthetic_frames()
    low, high = frames.action_low.clone(), frames.action_high.clone()
    low[1], high[1] = 0.2, 0.9
    return dataclasses.replace(frames, action_low=low, action_high=high)


def test_the_policy_can_output_every_action_of_the_env_not_only_those_demonstrated():
    frames = one_sided_frames()
    torch.manual_seed(0)
    config = PolicyConfig(image_size=32, hidden_dim=32, num_layers=2, num_heads=2, chunk_size=2)
    policy = build_policy(config, frames, ["agentview", "wrist"], gym.spaces.Box(-1.0, 1.0, (7,)))
    assert policy.config.action_low == [-1.0] * 7 and policy.config.action_high == [1.0] * 7
    # The lowest and highest tokens decode to the env's bounds (bin centres: within one bin of them), far
    # below and above anything demonstrated.
    tokens = torch.tensor([[0] * 7, [policy.config.num_bins - 1] * 7])
    actions = policy.processor.unnormalize_actions(policy.tokenizer.decode(tokens))
    bin_width = 2.0 / policy.config.num_bins
    assert actions[0, 1] == pytest.approx(-1.0, abs=bin_width)
    assert actions[1, 1] == pytest.approx(1.0, abs=bin_width)


def test_unbounded_env_dimensions_keep_the_demonstrated_range():
    frames = one_sided_frames()
    low = np.array([-1.0, -np.inf, -2.0] + [-1.0] * 4, np.float32)
    space = gym.spaces.Box(low, -low, dtype=np.float32)
    low, high = action_range(frames, space)
    assert low[:3].tolist() == [-1.0, pytest.approx(0.2), -2.0]
    assert high[:3].tolist() == [1.0, pytest.approx(0.9), 2.0]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (gym.spaces.Box(-1.0, 1.0, (6,)), "7-D actions but the env's action space is \\(6,\\)"),
        (gym.spaces.Discrete(4), "continuous actions"),
    ],
)
def test_an_action_space_that_does_not_fit_the_demonstrations_is_refused(space, message):
    with pytest.raises(ValueError, match=message):
        action_range(synthetic_frames(), space)
