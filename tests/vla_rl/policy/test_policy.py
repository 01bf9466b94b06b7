import itertools
import json

import numpy as np
import pytest
import torch

from vla_rl.policy.actor import ChunkActor
from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.modeling_vla import VLAPolicy
from vla_rl.policy.tokenizer import ActionTokenizer


def observation(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "observation.images.agentview": rng.integers(0, 255, (batch, 32, 32, 3), dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 255, (batch, 32, 32, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=(batch, 8)).astype(np.float32),
        "task": ["pick up the red block", "open the drawer", "stack the red block on the blue block"][:batch],
    }


def small_policy(decoding="parallel", **overrides):
    torch.manual_seed(0)
    values = dict(image_size=32, hidden_dim=32, num_layers=2, num_heads=2, chunk_size=2, decoding=decoding)
    return VLAPolicy(VLAConfig(**(values | overrides))).eval()


def test_tokenizer_round_trip_is_within_half_a_bin():
    tokenizer = ActionTokenizer(256)
    actions = torch.linspace(-1, 1, 10_001)
    tokens = tokenizer.encode(actions)
    assert tokens.min() == 0 and tokens.max() == 255
    assert (tokenizer.decode(tokens) - actions).abs().max() <= tokenizer.bin_width / 2 + 1e-6
    # Out-of-range values clip to the end bins; bin centres are their own tokens.
    np.testing.assert_array_equal(tokenizer.encode(torch.tensor([-5.0, 5.0])), [0, 255])
    centres = tokenizer.decode(torch.arange(256))
    np.testing.assert_array_equal(tokenizer.encode(centres), torch.arange(256))
    with pytest.raises(ValueError, match=r"in \[0, 256\)"):
        tokenizer.decode(torch.tensor([256]))


@pytest.mark.parametrize("decoding", ["parallel", "autoregressive"])
def test_chunk_log_probs_form_an_exact_distribution(decoding):
    # 1 step x 2 dims x 4 bins = 16 possible chunks: their probabilities, summed from the per-token
    # log-probs, must add up to 1 (a causal-mask leak or a wrong normalization would break this).
    policy = small_policy(decoding, chunk_size=1, action_dim=2, num_bins=4, state_dim=8)
    inputs = policy.processor(observation(batch=1))
    chunks = torch.tensor(list(itertools.product(range(4), repeat=2)))
    batch_inputs = {key: value.expand(len(chunks), *value.shape[1:]) for key, value in inputs.items()}
    with torch.no_grad():
        total = policy.log_prob(batch_inputs, chunks).sum(-1).exp().sum()
    assert total == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("decoding", ["parallel", "autoregressive"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_equal_a_fresh_computation(decoding, temperature):
    policy = small_policy(decoding)
    torch.manual_seed(1)
    actions, tokens, log_probs = policy.act(observation(), temperature)
    assert actions.shape == (3, 2, 7) and tokens.shape == (3, 14) and log_probs.shape == (3, 14)
    with torch.no_grad():
        recomputed = policy.log_prob(policy.processor(observation()), tokens, temperature)
    torch.testing.assert_close(log_probs, recomputed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoding", ["parallel", "autoregressive"])
def test_a_seeded_chunk_actor_samples_the_same_actions_and_leaves_the_global_generator_alone(decoding):
    policy = small_policy(decoding)

    def episode(seed):
        actor = ChunkActor(policy, 1.0, execute_steps=1, seed=seed)
        return np.stack([actor(observation()) for _ in range(4)])  # 4 re-plans

    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    first, again, other = episode(0), episode(0), episode(1)
    assert torch.equal(torch.get_rng_state(), global_state)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[0], first[1])  # each re-plan draws new samples


@pytest.mark.parametrize("decoding", ["parallel", "autoregressive"])
def test_temperature_zero_is_argmax_and_tiny_temperature_matches_it(decoding):
    policy = small_policy(decoding)
    _, greedy, _ = policy.act(observation(), 0.0)
    with torch.no_grad():
        logits = policy.logits(policy.processor(observation()), greedy)  # teacher-forced on the greedy tokens
    np.testing.assert_array_equal(greedy, logits.argmax(-1))
    _, cold, _ = policy.act(observation(), 1e-4)
    np.testing.assert_array_equal(cold, greedy)
    # Actions are the bin centres of the tokens, in env units.
    actions, _, _ = policy.act(observation(), 0.0)
    expected = policy.tokenizer.decode(greedy).view(3, 2, 7)
    torch.testing.assert_close(actions, expected)


def test_entropy_matches_its_definition_and_value_head_shape():
    policy = small_policy(value_head=True)
    inputs = policy.processor(observation())
    with torch.no_grad():
        probs = torch.softmax(policy.logits(inputs), -1)
        expected = -(probs * probs.log()).sum(-1)
        torch.testing.assert_close(policy.entropy(inputs), expected, atol=1e-5, rtol=1e-5)
        assert policy.value(inputs).shape == (3,)
    with pytest.raises(RuntimeError, match="no value head"):
        small_policy().value(inputs)


def test_the_environment_state_head_rides_along_without_changing_the_actions(tmp_path):
    policy = small_policy(environment_state_dim=5)
    inputs = policy.processor(observation())
    with torch.no_grad():
        logits, predicted = policy.logits_and_environment_state(inputs)
        torch.testing.assert_close(logits, policy.logits(inputs))
    assert predicted.shape == (3, 5)
    # The head is built after every other layer: the rest starts exactly as a policy without it.
    plain = small_policy()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, policy.state_dict()[name]), name
    policy.save_pretrained(tmp_path / "policy")
    loaded = VLAPolicy.from_pretrained(tmp_path / "policy")
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits_and_environment_state(inputs)[1], predicted)
    with pytest.raises(RuntimeError, match="no environment-state head"):
        plain.logits_and_environment_state(inputs)


def test_a_policy_without_the_state_ignores_it_and_keeps_that_through_a_checkpoint(tmp_path):
    policy = small_policy(use_state=False)
    inputs = policy.processor(observation())
    with torch.no_grad():
        assert policy.encode(inputs).shape[1] == small_policy().encode(inputs).shape[1] - 1  # no state token
        changed = dict(inputs, state=inputs["state"] + 5.0)
        torch.testing.assert_close(policy.logits(changed), policy.logits(inputs), rtol=0, atol=0)
    assert not any("state_projection" in name for name in policy.state_dict())
    policy.save_pretrained(tmp_path / "policy")
    loaded = VLAPolicy.from_pretrained(tmp_path / "policy").eval()
    assert loaded.config.use_state is False
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(inputs), policy.logits(inputs), rtol=0, atol=0)
    # Still an input the processor validates: the observation contract does not change.
    with pytest.raises(ValueError, match=r"observation\.state"):
        policy.processor(dict(observation(), **{"observation.state": np.zeros((3, 2), np.float32)}))


def test_save_and_load_is_bit_exact(tmp_path):
    policy = small_policy("autoregressive")
    policy.save_pretrained(tmp_path / "policy")
    loaded = VLAPolicy.from_pretrained(tmp_path / "policy").eval()
    assert loaded.config == policy.config
    for (name, a), (_, b) in zip(policy.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    torch.manual_seed(5)
    first = policy.act(observation(), 1.0)
    torch.manual_seed(5)
    second = loaded.act(observation(), 1.0)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    # Saving again over an existing checkpoint replaces it whole.
    loaded.save_pretrained(tmp_path / "policy")
    assert sorted(p.name for p in (tmp_path / "policy").iterdir()) == [
        "config.json",
        "model.safetensors",
        "model.safetensors.sha256",
    ]


def test_damaged_checkpoints_get_clear_errors(tmp_path):
    small_policy().save_pretrained(tmp_path / "policy")
    weights = tmp_path / "policy" / "model.safetensors"
    data = bytearray(weights.read_bytes())

    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or altered"):
        VLAPolicy.from_pretrained(tmp_path / "policy")
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated or altered"):
        VLAPolicy.from_pretrained(tmp_path / "policy")

    small_policy().save_pretrained(tmp_path / "other")
    config_path = tmp_path / "other" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(config | {"_target_": "os.system"}))
    with pytest.raises(ValueError, match=r"unknown policy config key\(s\) \['_target_'\]"):
        VLAPolicy.from_pretrained(tmp_path / "other")
    config_path.write_text(json.dumps(config | {"chunk_size": "8"}))
    with pytest.raises(ValueError, match="'chunk_size' must be int"):
        VLAPolicy.from_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        VLAPolicy.from_pretrained(tmp_path / "other")


def test_bad_observations_are_rejected_with_clear_errors():
    policy = small_policy()
    bad = observation()
    del bad["observation.images.wrist"]
    with pytest.raises(KeyError, match="lacks"):
        policy.act(bad)
    bad = observation()
    bad["observation.state"] = bad["observation.state"][:, :5]
    with pytest.raises(ValueError, match=r"observation.state must be \[B, 8\]"):
        policy.act(bad)
    bad = observation()
    bad["observation.state"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        policy.act(bad)
