import dataclasses

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from sim.core import AutoresetMode
from tests.sim.point_env import PointEnv
from tests.vla_rl.algos.test_grpo import fake_trajectories, tiny_policy
from vla_rl.algos.grpo import GRPOConfig, WarmupAdaptiveLR, build_decision_batch, train_grpo, update_policy
from vla_rl.algos.self_imitation import FILE_NAME, SelfImitationBuffer
from vla_rl.algos.training_state import load_training_state, save_training_state
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.modeling_vla import VLAPolicy

INSTRUCTIONS = {"reach": "reach it"}


def test_only_successes_of_groups_that_also_failed_are_kept_weighted_by_the_failure_rate():
    trajectories = fake_trajectories(tiny_policy(), count=8)
    buffer = SelfImitationBuffer(capacity=10)
    # Group 0: 1 success of 4 (weight 3/4); group 1: all succeed (nothing to learn).
    success = np.array([[False, True, False, False], [True, True, True, True]])
    assert buffer.add_groups(trajectories, success, INSTRUCTIONS, action_dim=7) == 1
    entry = buffer.entries[0]
    assert entry.weight == pytest.approx(0.75) and entry.instruction == "reach it"
    np.testing.assert_array_equal(entry.tokens, trajectories[1].tokens)
    # Its last decision executed 1 of its 2 actions: only that action's 7 tokens are imitated.
    assert entry.mask[-1].tolist() == [True] * 7 + [False] * 7 and entry.mask[0].all()
    assert buffer.decisions == 3


def test_a_minimum_weight_also_keeps_the_successes_of_groups_that_always_succeed():
    trajectories = fake_trajectories(tiny_policy(), count=8)
    buffer = SelfImitationBuffer(capacity=10, min_weight=0.25)
    success = np.array([[False, True, False, False], [True, True, True, True]])
    assert buffer.add_groups(trajectories, success, INSTRUCTIONS, action_dim=7) == 5
    assert [entry.weight for entry in buffer.entries] == pytest.approx([0.75] + [0.25] * 4)
    with pytest.raises(ValueError, match="minimum weight must be within"):
        SelfImitationBuffer(4, min_weight=1.5)


def test_the_oldest_entries_go_first_when_full():
    trajectories = fake_trajectories(tiny_policy(), count=4)
    buffer = SelfImitationBuffer(capacity=2)
    first = np.array([[True, False, True, False]])  # trajectories 0 and 2, weight 1/2
    second = np.array([[False, False, False, True]])  # trajectory 3, weight 3/4
    buffer.add_groups(trajectories, first, INSTRUCTIONS, 7)
    buffer.add_groups(trajectories, second, INSTRUCTIONS, 7)
    assert len(buffer) == 2
    np.testing.assert_array_equal(buffer.entries[0].tokens, trajectories[2].tokens)
    np.testing.assert_array_equal(buffer.entries[1].tokens, trajectories[3].tokens)
    assert [entry.weight for entry in buffer.entries] == pytest.approx([0.5, 0.75])
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        SelfImitationBuffer(0)


def test_samples_are_decisions_of_the_held_entries_with_their_weights():
    trajectories = fake_trajectories(tiny_policy(), count=4)
    buffer = SelfImitationBuffer(capacity=4)
    buffer.add_groups(trajectories, np.array([[True, False], [False, True]]), INSTRUCTIONS, 7)
    drawn = buffer.sample(200, torch.Generator().manual_seed(0))
    assert drawn.tokens.shape == (200, 14) and drawn.weights.tolist() == [0.5] * 200
    held = {tuple(row) for entry in buffer.entries for row in entry.tokens.tolist()}
    drawn_rows = {tuple(row) for row in drawn.tokens.tolist()}
    assert drawn_rows == held  # 200 draws over 6 decisions reach them all, and nothing else
    key = "observation.images.agentview"
    for row in range(5):
        entry = next(
            e for e in buffer.entries if any((drawn.tokens[row].numpy() == t).all() for t in e.tokens)
        )
        index = next(i for i, t in enumerate(entry.tokens) if (drawn.tokens[row].numpy() == t).all())
        np.testing.assert_array_equal(drawn.observations[key][row], entry.observations[key][index])
    with pytest.raises(ValueError, match="empty"):
        SelfImitationBuffer(2).sample(1, torch.Generator())


def test_replayed_successes_become_more_likely():
    policy = tiny_policy()
    trajectories = fake_trajectories(policy, count=4)
    buffer = SelfImitationBuffer(capacity=4)
    buffer.add_groups(trajectories, np.array([[True, False, False, False]]), INSTRUCTIONS, 7)
    # Zero advantages: without the replay the PPO loss has no gradient, so any change is imitation.
    batch = build_decision_batch(trajectories, np.zeros(4, np.float32), INSTRUCTIONS, 7)
    config = GRPOConfig(ppo_epochs=4, minibatch_size=4, learning_rate=1e-2, self_imitation_coef=1.0)
    parameters = list(policy.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    schedule = WarmupAdaptiveLR(optimizer, 0, 0.0)
    entry = buffer.entries[0]

    def replayed_log_prob():
        observation = {**entry.observations, "task": [entry.instruction] * len(entry)}
        with torch.no_grad():
            log_probs = policy.log_prob(policy.processor(observation, "cpu"), torch.from_numpy(entry.tokens))
        return float(log_probs[torch.from_numpy(entry.mask)].mean())

    before = replayed_log_prob()
    stats = update_policy(
        policy, None, batch, optimizer, schedule, parameters, config, torch.Generator().manual_seed(0), buffer
    )
    assert stats["self_imitation_loss"] > 0
    assert replayed_log_prob() > before + 0.1


def test_the_buffer_is_saved_with_the_checkpoint_and_restored(tmp_path):
    policy = tiny_policy()
    trajectories = fake_trajectories(policy, count=4)
    buffer = SelfImitationBuffer(capacity=4)
    buffer.add_groups(trajectories, np.array([[True, False], [True, True]]), INSTRUCTIONS, 7)
    buffer.add_groups(trajectories, np.array([[False, False], [False, True]]), INSTRUCTIONS, 7)
    optimizer = torch.optim.Adam(policy.parameters())
    schedule = WarmupAdaptiveLR(optimizer, 0, 0.0)
    directory = tmp_path / "rl_last"
    save_training_state(directory, policy, optimizer, schedule, torch.Generator(), 7, extra=buffer)
    assert (directory / FILE_NAME).exists()

    restored = SelfImitationBuffer(capacity=4)
    step = load_training_state(directory, policy, optimizer, schedule, torch.Generator(), extra=restored)
    assert step == 7 and len(restored) == 2
    for saved, loaded in zip(buffer.entries, restored.entries, strict=True):
        assert loaded.instruction == saved.instruction and loaded.weight == saved.weight
        np.testing.assert_array_equal(loaded.tokens, saved.tokens)
        np.testing.assert_array_equal(loaded.mask, saved.mask)
        for key, value in saved.observations.items():
            np.testing.assert_array_equal(loaded.observations[key], value)

    # A buffer whose boundaries disagree with its arrays is refused, not misread.
    tensors = load_file(str(directory / FILE_NAME))
    with safe_open(str(directory / FILE_NAME), "np") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(directory / FILE_NAME), metadata={**metadata, "lengths": "[2, 999]"})
    with pytest.raises(ValueError, match="inconsistent"):
        SelfImitationBuffer(4).load(directory)

    empty = SelfImitationBuffer(capacity=4)
    empty.save(tmp_path)
    SelfImitationBuffer(4).load(tmp_path)
    (tmp_path / FILE_NAME).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError, match="not a self-imitation buffer"):
        SelfImitationBuffer(4).load(tmp_path)
    with pytest.raises(ValueError, match="holds no self-imitation buffer"):
        SelfImitationBuffer(4).load(tmp_path / "nowhere")


def point_policy():
    torch.manual_seed(0)
    config = VLAConfig(
        action_dim=2,
        state_dim=4,
        chunk_size=2,
        num_bins=8,
        cameras=["top"],
        image_size=16,
        hidden_dim=32,
        num_layers=1,
        num_heads=2,
        keypoints_per_camera=2,
        action_low=[-1.0, -1.0],
        action_high=[1.0, 1.0],
    )
    return VLAPolicy(config).eval()


def run_grpo(run_dir, config, evaluate=None):
    """GRPO on the numpy point env (noise-free starts: deterministic), binary rewards."""
    env = PointEnv(num_envs=8, autoreset_mode=AutoresetMode.DISABLED, start_noise=0.0)
    return train_grpo(
        point_policy(),
        env,
        lambda trajectories: np.array([float(t.success) for t in trajectories]),
        ["reach"],
        {"reach": "move the point to the goal"},
        num_train_states=12,
        execute_steps=2,
        frame_camera="top",
        config=config,
        run_dir=run_dir,
        metrics=MetricsLogger(run_dir),
        evaluate=evaluate,
    )


def test_a_killed_grpo_run_with_averaging_and_self_imitation_resumes_to_the_same_weights(tmp_path):
    config = GRPOConfig(
        steps=4,
        groups_per_step=2,
        group_size=4,
        minibatch_size=8,
        learning_rate=1e-2,
        filter="none",
        checkpoint_every=2,
        eval_every=0,
        ema_decay=0.5,
        self_imitation_coef=1.0,
        self_imitation_batch=8,
        device="cpu",
    )
    uninterrupted = run_grpo(tmp_path / "a", config)
    held = SelfImitationBuffer(512)
    held.load(tmp_path / "a" / "checkpoints" / "rl_last")
    assert len(held) > 0  # the random policy succeeded somewhere in groups that also failed

    class KilledError(Exception):
        pass

    def killed_at_step_3(policy, step):
        if step == 3:
            raise KilledError  # after the checkpoint of step 2: the run resumes there
        return 0.0

    with pytest.raises(KilledError):
        run_grpo(tmp_path / "b", dataclasses.replace(config, eval_every=3), killed_at_step_3)
    resumed = run_grpo(tmp_path / "b", config)
    for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # The returned weights are the average, not the last iterate.
    last = VLAPolicy.from_pretrained(tmp_path / "a" / "checkpoints" / "rl_last" / "policy")
    assert not all(
        torch.equal(a, b)
        for a, b in zip(last.state_dict().values(), resumed.state_dict().values(), strict=True)
    )


def test_config_rejects_bad_averaging_and_self_imitation_values():
    with pytest.raises(ValueError, match=r"rl\.ema_decay must be within \[0, 1\)"):
        GRPOConfig(ema_decay=1.0)
    with pytest.raises(
        ValueError, match=r"rl\.kl_coef, rl\.target_kl and rl\.self_imitation_coef must be >= 0"
    ):
        GRPOConfig(self_imitation_coef=-1.0)
    with pytest.raises(ValueError, match=r"rl\.self_imitation_capacity must be >= 1"):
        GRPOConfig(self_imitation_capacity=0)
    with pytest.raises(ValueError, match=r"rl\.self_imitation_min_weight must be within \[0, 1\]"):
        GRPOConfig(self_imitation_min_weight=2.0)
