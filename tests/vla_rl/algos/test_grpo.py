import numpy as np
import pytest
import torch

from vla_rl.algos.grpo import (
    GRPOConfig,
    WarmupAdaptiveLR,
    build_decision_batch,
    clipped_policy_loss,
    draw_initial_states,
    group_advantages,
    keep_groups,
    kl_to_reference,
    update_policy,
)
from vla_rl.data.trajectory import Trajectory
from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.modeling_vla import VLAPolicy


def test_group_advantages_by_hand():
    # Group [1, 0, 0, 0]: mean 0.25; unbiased std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = sqrt(0.25) = 0.5.
    # Group [0.3, 0.3, 0.3, 0.3]: no spread -> zero advantages (not NaN).
    advantages = group_advantages(np.array([[1.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3]]))
    np.testing.assert_allclose(advantages[0], [1.5, -0.5, -0.5, -0.5], atol=1e-5)
    np.testing.assert_array_equal(advantages[1], np.zeros(4))
    with pytest.raises(ValueError, match="groups, n >= 2"):
        group_advantages(np.ones((3, 1)))


def test_batch_and_no_reward_scaling_by_hand():
    # Rewards [[1, 0], [0.2, 0.1]]: group means 0.5 and 0.15 -> centred [[0.5, -0.5], [0.05, -0.05]].
    # Group std: sqrt(2 * 0.5^2) and sqrt(2 * 0.05^2) -> both groups get +-0.7071, whatever their spread.
    # Batch std: mean 0.325; squared deviations 0.675^2 + 0.325^2 + 0.125^2 + 0.225^2 = 0.6275, over 3
    # -> 0.4573, for both groups: the progress-only group keeps a tenth of the other's advantages.
    rewards = np.array([[1.0, 0.0], [0.2, 0.1]])
    np.testing.assert_allclose(group_advantages(rewards, "group"), [[0.7071, -0.7071]] * 2, atol=1e-4)
    batch_std = np.sqrt(0.6275 / 3)
    np.testing.assert_allclose(
        group_advantages(rewards, "batch"),
        [[0.5 / batch_std, -0.5 / batch_std], [0.05 / batch_std, -0.05 / batch_std]],
        atol=1e-5,
    )
    np.testing.assert_allclose(group_advantages(rewards, "none"), [[0.5, -0.5], [0.05, -0.05]], atol=1e-6)
    with pytest.raises(ValueError, match="scale_rewards"):
        GRPOConfig(scale_rewards="token")


def test_dynamic_sampling_filters():
    success = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]], bool)
    rewards = np.array([[0.2, 0.1, 0.0, 0.0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]], float)
    band = keep_groups(success, rewards, GRPOConfig(filter="success_band", success_low=0.1, success_high=0.9))
    np.testing.assert_array_equal(band, [False, True, False, True])
    # SRPO grades the all-failure group, so the reward-spread filter keeps it; the all-success one has none.
    spread = keep_groups(success, rewards, GRPOConfig(filter="reward_std"))
    np.testing.assert_array_equal(spread, [True, True, False, True])
    assert keep_groups(success, rewards, GRPOConfig(filter="none")).all()


def test_clipped_loss_by_hand():
    # Old log-probs 0, so ratio = exp(new log-prob). One token per row, clip range [0.8, 1.28]:
    #   ratio 1.5, A = +1 -> min(1.5, 1.28) * 1 = 1.28  (clipped: no gradient)
    #   ratio 0.5, A = -1 -> min(-0.5, -0.8)    = -0.8  (clipped: no gradient)
    #   ratio 1.0, A = +2 -> 2.0                        (unclipped)
    #   ratio 3.0, A = +2 -> masked out, must not count
    # Token-mean loss = -(1.28 - 0.8 + 2.0) / 3.
    new = torch.log(torch.tensor([[1.5], [0.5], [1.0], [3.0]])).requires_grad_()
    old = torch.zeros(4, 1)
    advantages = torch.tensor([1.0, -1.0, 2.0, 2.0])
    mask = torch.tensor([[True], [True], [True], [False]])
    loss, stats = clipped_policy_loss(new, old, advantages, mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-(1.28 - 0.8 + 2.0) / 3)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    assert stats["ratio_max"] == pytest.approx(1.5)
    loss.backward()
    # Only the unclipped, unmasked token gets a gradient: d(-ratio * A / 3) / d(log ratio) = -A * ratio / 3.
    np.testing.assert_allclose(new.grad.numpy().ravel(), [0.0, 0.0, -2.0 / 3, 0.0], atol=1e-6)


def test_kl_to_reference_is_zero_for_equal_policies_and_positive_otherwise():
    log_probs = torch.log(torch.tensor([[0.5, 0.25]]))
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert kl_to_reference(log_probs, log_probs, mask).item() == 0.0
    # k3 with d = ref - new = log 2 on one token, 0 on the other: (2 - log 2 - 1) / 2.
    reference = torch.log(torch.tensor([[1.0, 0.25]]))
    assert kl_to_reference(log_probs, reference, mask).item() == pytest.approx((1 - np.log(2)) / 2)


def test_initial_state_draws_cycle_tasks_and_repeat_per_seed():
    tasks = ["a", "b", "c"]
    first = draw_initial_states(tasks, 6, 500, np.random.default_rng([0, 3]))
    again = draw_initial_states(tasks, 6, 500, np.random.default_rng([0, 3]))
    assert first == again
    names = [task for task, _ in first]
    assert sorted(names) == ["a", "a", "b", "b", "c", "c"]
    assert all(0 <= state < 500 for _, state in first)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"rl\.filter='band' is not valid; choose one of: success_band"):
        GRPOConfig(filter="band")
    with pytest.raises(ValueError, match=r"rl\.group_size must be >= 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match=r"rl\.temperature must be > 0"):
        GRPOConfig(temperature=0.0)


def tiny_policy():
    torch.manual_seed(0)
    config = VLAConfig(
        image_size=16,
        hidden_dim=32,
        num_layers=1,
        num_heads=2,
        chunk_size=2,
        num_bins=8,
        cameras=["agentview"],
    )
    return VLAPolicy(config).eval()


def fake_trajectories(policy, count=4, decisions=3):
    rng = np.random.default_rng(0)
    trajectories = []
    for index in range(count):
        observation = {
            "observation.images.agentview": rng.integers(0, 255, (decisions, 16, 16, 3), dtype=np.uint8),
            "observation.state": rng.normal(size=(decisions, 8)).astype(np.float32),
        }
        _, tokens, log_probs = policy.act({**observation, "task": ["reach"] * decisions}, 1.0)
        trajectories.append(
            Trajectory(
                task="reach",
                task_id=0,
                init_state_id=index,
                success=index % 2 == 0,
                frames=np.zeros((5, 16, 16, 3), np.uint8),
                actions=np.zeros((4, 7), np.float32),
                tokens=tokens.numpy(),
                log_probs=log_probs.numpy(),
                executed=np.array([2, 2, 1]),
                observations=observation,
            )
        )
    return trajectories


def test_decision_batch_masks_unexecuted_actions():
    policy = tiny_policy()
    trajectories = fake_trajectories(policy)
    batch = build_decision_batch(trajectories, np.arange(4, dtype=np.float32), {"reach": "reach it"}, 7)
    assert len(batch) == 12 and batch.tokens.shape == (12, 14)
    # The last decision of each trajectory executed 1 of its 2 actions: only the first 7 tokens count.
    assert batch.mask[2].tolist() == [True] * 7 + [False] * 7
    assert batch.mask[0].all()
    np.testing.assert_array_equal(batch.advantages.numpy(), np.repeat(np.arange(4), 3))
    assert batch.tasks[0] == "reach it"


def test_several_ppo_epochs_move_the_ratio_and_clipping_acts():
    policy = tiny_policy()
    trajectories = fake_trajectories(policy)
    batch = build_decision_batch(trajectories, np.array([1.0, -1.0, 1.0, -1.0]), {"reach": "reach"}, 7)
    config = GRPOConfig(ppo_epochs=4, minibatch_size=4, learning_rate=3e-2, grad_clip=10.0)
    parameters = list(policy.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    schedule = WarmupAdaptiveLR(optimizer, config.warmup_steps, config.target_kl)
    stats = update_policy(
        policy, None, batch, optimizer, schedule, parameters, config, torch.Generator().manual_seed(0)
    )
    # The first minibatch is exactly on-policy (ratio 1); later ones are not, and the clip removes some
    # tokens' gradients. Both are means over all minibatches.
    assert stats["ratio_max"] > 1.0 + config.clip_high
    assert stats["clip_fraction"] > 0.0
    # The policy moved toward the positive-advantage tokens.
    after = build_decision_batch(trajectories, np.zeros(4), {"reach": "reach"}, 7)
    with torch.no_grad():
        new = policy.log_prob(policy.processor(_observation(after), "cpu"), after.tokens, 1.0)
    gain = (new - after.old_log_probs).mean(1).view(4, 3).mean(1)
    assert gain[0] > gain[1] and gain[2] > gain[3]


def test_adaptive_learning_rate_by_hand():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1e-3)
    fixed = WarmupAdaptiveLR(optimizer, warmup_steps=2, target_kl=0.0)
    assert fixed.get_last_lr() == pytest.approx([5e-4])  # warm-up: update 1 of 2
    fixed.observe_kl(1.0)  # no target: no adaptation
    assert fixed.get_last_lr() == pytest.approx([5e-4])

    optimizer = torch.optim.SGD([parameter], lr=1e-3)
    schedule = WarmupAdaptiveLR(optimizer, warmup_steps=2, target_kl=0.01)
    start = 5e-4 * WarmupAdaptiveLR.START_SCALE
    assert schedule.get_last_lr() == pytest.approx([start])
    schedule.observe_kl(0.05)  # > 2 * target: divided by 1.5
    assert optimizer.param_groups[0]["lr"] == pytest.approx(start / 1.5)
    schedule.observe_kl(0.01)  # within [target / 2, 2 * target]: unchanged
    assert optimizer.param_groups[0]["lr"] == pytest.approx(start / 1.5)
    schedule.observe_kl(0.001)  # < target / 2: times 1.5
    assert optimizer.param_groups[0]["lr"] == pytest.approx(start)
    optimizer.step()
    schedule.step()  # warm-up over: the scale applies to the full rate
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * WarmupAdaptiveLR.START_SCALE)
    for _ in range(20):
        schedule.observe_kl(0.001)  # never above the configured rate
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    for _ in range(100):
        schedule.observe_kl(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * WarmupAdaptiveLR.MIN_SCALE)
    # The scale is saved with the schedule and restored by a resumed run.
    restored = WarmupAdaptiveLR(torch.optim.SGD([parameter], lr=1e-3), warmup_steps=2, target_kl=0.01)
    restored.load_state_dict(schedule.state_dict())
    assert restored.get_last_lr() == pytest.approx([1e-3 * WarmupAdaptiveLR.MIN_SCALE])


def test_target_kl_adapts_the_rate_to_how_far_an_update_moves_the_policy():
    trajectories = fake_trajectories(tiny_policy())
    batch = build_decision_batch(trajectories, np.array([1.0, -1.0, 1.0, -1.0]), {"reach": "reach"}, 7)
    rates = {}
    for target_kl in (0.0, 1e-6, 10.0):
        policy = tiny_policy()
        config = GRPOConfig(
            ppo_epochs=4, minibatch_size=4, learning_rate=3e-2, grad_clip=10.0, target_kl=target_kl
        )
        parameters = list(policy.parameters())
        optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
        schedule = WarmupAdaptiveLR(optimizer, 0, target_kl)
        generator = torch.Generator().manual_seed(0)
        stats = update_policy(policy, None, batch, optimizer, schedule, parameters, config, generator)
        rates[target_kl] = stats["learning_rate"]
    start = 3e-2 * WarmupAdaptiveLR.START_SCALE
    assert rates[0.0] == pytest.approx(3e-2)
    # 12 minibatches, 11 KL readings: a tiny target lowers the rate at readings past the first step, a
    # large one raises it at every reading up to the ceiling.
    assert rates[1e-6] < start / 1.5**5
    assert rates[10.0] == pytest.approx(min(3e-2, start * 1.5**11))


def _observation(batch):
    return {**batch.observations, "task": batch.tasks}
