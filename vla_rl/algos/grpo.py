"""GRPO for the chunked VLA policy (with the ``srpo`` reward this is SRPO).

One page, top to bottom: config -> rollout -> reward -> advantage -> loss -> update -> log.

- Rollout: ``groups_per_step`` initial states of the ``train`` set (tasks taken in turn), each run
  ``group_size`` times at ``temperature`` with batched policy inference over the batched env.
- Reward: a reward model maps the finished trajectories to one scalar each (`vla_rl.rewards`).
- Advantage: per group, ``(r - mean) / (std + eps)`` with the unbiased std of the group (verl's GRPO
  estimator, which SimpleVLA-RL and siiRL build on; ``scale_rewards=group``), of the whole step's rewards
  (``batch``, group mean and batch std as in Liu et al. 2025, "Tricks or Traps") or none at all
  (``none``, Dr. GRPO), shared by every action token of the trajectory. A group's std divides away its
  scale: an all-failure group whose progress rewards barely differ gets the same +-1 advantages as a
  group of successes and failures; with a batch std its advantages stay as small as its spread.
- Dynamic sampling: groups without a learning signal are dropped before the update: ``success_band``
  keeps groups whose success rate lies within [low, high] (SimpleVLA-RL's filter); ``reward_std`` keeps
  groups whose rewards are not all equal (DAPO's filter, which keeps the all-failure groups a progress
  reward such as SRPO's grades); ``none`` keeps every group.
- Loss: PPO-clip with asymmetric ratios (``1 - clip_low``, ``1 + clip_high``; DAPO's clip-higher),
  averaged over every valid token of the minibatch (token-mean), plus an optional k3 KL estimate to the
  frozen starting policy. Tokens of chunk actions that were never executed are masked out.
- Update: ``ppo_epochs`` passes over the kept decisions in shuffled minibatches, so after the first
  minibatch the importance ratio really differs from 1 and clipping acts.
- Self-imitation (``self_imitation_coef > 0``): successes of groups that also failed are kept in a
  replay buffer and every minibatch adds their weighted negative log-likelihood to the loss
  (`vla_rl.algos.self_imitation`): the rare successes where the policy is weakest are learned from
  again and again, not once.
- Weight averaging (``ema_decay > 0``): an exponential moving average of the weights, updated once
  per RL step, is what gets evaluated and returned; the rollouts still come from the current weights.
- Learning rate: linear warm-up over ``warmup_steps`` updates, then ``learning_rate``. With ``target_kl``
  it is also scaled by how far the updates move the policy (the adaptive schedule of rsl_rl's PPO, with
  ``learning_rate`` as its ceiling; the 1% start makes the warm-up unnecessary, ``warmup_steps=0``):
  the scale starts at 1%, and before each minibatch's
  step that minibatch's approximate KL to the rollout policy is read and the rate divided by 1.5 above
  ``2 * target_kl`` and multiplied by 1.5 (up to the ceiling) below ``target_kl / 2``. Adam moves every
  weight by about the learning rate in its first steps whatever the gradient's size: a first update at
  2.5e-4 moved this policy's tokens by a mean approximate KL of 0.08-0.26 over its minibatches.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sim.core import TASK, BatchedEnv
from vla_rl.algos.self_imitation import SelfImitationBuffer
from vla_rl.algos.sft import resolve_device, update_moving_average
from vla_rl.algos.training_state import LoopBookkeeping
from vla_rl.data.rollouts import collect_trajectories
from vla_rl.data.trajectory import Trajectory
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.modeling_vla import VLAPolicy

FILTERS = ("success_band", "reward_std", "none")
REWARD_SCALES = ("group", "batch", "none")
EVAL_METRIC = "eval/success_rate"
"""Metric name of the periodic evaluations (x axis: RL step)."""
RewardFn = Callable[[Sequence[Trajectory]], np.ndarray]
"""Finished trajectories -> float rewards ``[N]``."""


@dataclass
class GRPOConfig:
    """GRPO / SRPO fine-tuning.

    Attributes:
        steps: RL steps (rollout + update); 0 skips the RL stage.
        groups_per_step: initial states rolled out per step (tasks taken in turn).
        group_size: n, rollouts per initial state.
        temperature: sampling temperature of the rollouts (log-probs are taken at the same one).
        ppo_epochs: passes over each step's kept decisions.
        minibatch_size: decisions (chunks) per gradient step.
        learning_rate: AdamW learning rate (constant after ``warmup_steps``).
        warmup_steps: linear warm-up, in RL steps.
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm.
        clip_low: the ratio is clipped below at ``1 - clip_low``.
        clip_high: the ratio is clipped above at ``1 + clip_high``.
        kl_coef: weight of the k3 KL estimate to the frozen starting policy (0: none, no reference kept).
        target_kl: approximate KL(rollout policy || policy) per token that the learning rate adapts
            to, ``learning_rate`` being its ceiling (module docstring; 0: fixed rate after warm-up).
        scale_rewards: what the centred rewards are divided by: the std of their ``group``, of the
            ``batch``, or ``none`` (module docstring).
        filter: dynamic sampling: ``success_band``, ``reward_std`` or ``none`` (module docstring).
        success_low: ``success_band`` keeps groups with success rate >= this.
        success_high: ``success_band`` keeps groups with success rate <= this.
        ema_decay: decay per RL step of the moving average of the weights that is evaluated and
            returned (0: none, the current weights are).
        self_imitation_coef: weight of the self-imitation loss (0: off, no buffer kept).
        self_imitation_capacity: trajectories the self-imitation buffer keeps (the oldest go first).
        self_imitation_min_weight: the least weight of a replayed success (0: only successes of groups
            that also failed; above 0 those of groups that always succeed too).
        self_imitation_batch: replayed decisions per minibatch.
        eval_every: RL steps between evaluations on the ``eval`` initial states (0: only at the end).
        checkpoint_every: RL steps between resumable checkpoints (the last step is always saved).
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        seed: seed of the initial-state draws and of sampling (step ``t`` uses ``[seed, t]``, so a
            resumed run draws what an uninterrupted one would).

    """

    steps: int = 40
    groups_per_step: int = 8
    group_size: int = 8
    temperature: float = 1.0
    ppo_epochs: int = 2
    minibatch_size: int = 256
    learning_rate: float = 1e-4
    warmup_steps: int = 2
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    target_kl: float = 0.0
    scale_rewards: str = "group"
    filter: str = "success_band"
    success_low: float = 0.1
    success_high: float = 0.9
    ema_decay: float = 0.0
    self_imitation_coef: float = 0.0
    self_imitation_capacity: int = 512
    self_imitation_min_weight: float = 0.0
    self_imitation_batch: int = 64
    eval_every: int = 10
    checkpoint_every: int = 5
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "groups_per_step",
            "ppo_epochs",
            "minibatch_size",
            "checkpoint_every",
            "self_imitation_capacity",
            "self_imitation_batch",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"rl.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or self.eval_every < 0 or self.warmup_steps < 0:
            raise ValueError("rl.steps, rl.eval_every and rl.warmup_steps must be >= 0")
        if self.group_size < 2:
            raise ValueError(
                f"rl.group_size must be >= 2 (advantages are relative to the group), got {self.group_size}"
            )
        if self.temperature <= 0:
            raise ValueError(f"rl.temperature must be > 0 for on-policy sampling, got {self.temperature}")
        if self.learning_rate <= 0 or self.clip_low <= 0 or self.clip_high <= 0:
            raise ValueError("rl.learning_rate, rl.clip_low and rl.clip_high must be > 0")
        if self.kl_coef < 0 or self.target_kl < 0 or self.self_imitation_coef < 0:
            raise ValueError(
                "rl.kl_coef, rl.target_kl and rl.self_imitation_coef must be >= 0 (0 turns them off)"
            )
        if not 0.0 <= self.self_imitation_min_weight <= 1.0:
            raise ValueError(
                f"rl.self_imitation_min_weight must be within [0, 1], got {self.self_imitation_min_weight}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"rl.ema_decay must be within [0, 1), got {self.ema_decay}")
        if self.scale_rewards not in REWARD_SCALES:
            raise ValueError(
                f"rl.scale_rewards={self.scale_rewards!r} is not valid; "
                f"choose one of: {', '.join(REWARD_SCALES)}"
            )
        if self.filter not in FILTERS:
            raise ValueError(f"rl.filter={self.filter!r} is not valid; choose one of: {', '.join(FILTERS)}")
        if not 0.0 <= self.success_low <= self.success_high <= 1.0:
            raise ValueError("rl.success_low <= rl.success_high must both lie within [0, 1]")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"rl.device={self.device!r} is not valid; choose one of: auto, cpu, cuda")


# ----------------------------------------------------------------------------------------------------
# Rollout


def draw_initial_states(
    tasks: Sequence[str], groups: int, num_train_states: int, rng: np.random.Generator
) -> list[tuple[str, int]]:
    """``groups`` (task, train init-state id) pairs: tasks in turn from a random offset, ids uniform."""
    offset = int(rng.integers(len(tasks)))
    return [(tasks[(offset + g) % len(tasks)], int(rng.integers(num_train_states))) for g in range(groups)]


# ----------------------------------------------------------------------------------------------------
# Advantage and dynamic sampling


def group_advantages(rewards: np.ndarray, scale: str = "group", eps: float = 1e-6) -> np.ndarray:
    """Advantages ``[G, n]``: each reward of ``rewards`` ``[G, n]`` minus its group's (row's) mean.

    Divided by ``std + eps``, the unbiased std of the group (``scale="group"``) or of all the rewards
    (``"batch"``); ``"none"``: not divided.
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [groups, n >= 2], got {rewards.shape}")
    if scale not in REWARD_SCALES:
        raise ValueError(f"scale={scale!r} is not valid; choose one of: {', '.join(REWARD_SCALES)}")
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    if scale == "group":
        centred /= rewards.std(axis=1, ddof=1, keepdims=True) + eps
    elif scale == "batch":
        centred /= rewards.std(ddof=1) + eps
    return centred.astype(np.float32)


def keep_groups(success: np.ndarray, rewards: np.ndarray, config: GRPOConfig) -> np.ndarray:
    """Dynamic sampling: bool ``[G]``, which groups of ``success`` / ``rewards`` ``[G, n]`` to train on."""
    if config.filter == "success_band":
        rate = np.asarray(success, np.float64).mean(axis=1)
        return (rate >= config.success_low) & (rate <= config.success_high)
    if config.filter == "reward_std":
        return np.ptp(np.asarray(rewards, np.float64), axis=1) > 1e-8
    return np.ones(len(rewards), bool)


# ----------------------------------------------------------------------------------------------------
# Loss


def clipped_policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip with asymmetric ratios, token-mean over the valid tokens.

    Args:
        log_probs: current per-token log-probs ``[M, L]``.
        old_log_probs: behaviour-policy log-probs ``[M, L]``.
        advantages: per-decision advantages ``[M]`` (shared by its L tokens).
        mask: bool ``[M, L]``, True for tokens that count.
        clip_low: lower clip distance (ratio >= 1 - clip_low).
        clip_high: upper clip distance (ratio <= 1 + clip_high).

    Returns:
        The loss and statistics: ``clip_fraction`` (share of valid tokens whose gradient the clip
        removed), ``ratio_mean``, ``ratio_max``, ``approx_kl`` (k3 estimate of KL(old || new)).

    """
    weights = mask.float()
    count = weights.sum().clamp(min=1.0)
    log_ratio = log_probs - old_log_probs
    ratio = log_ratio.exp()
    advantage = advantages[:, None].expand_as(ratio)
    unclipped = ratio * advantage
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantage
    loss = (-torch.minimum(unclipped, clipped) * weights).sum() / count
    with torch.no_grad():
        was_clipped = ((ratio < 1.0 - clip_low) & (advantage < 0)) | (
            (ratio > 1.0 + clip_high) & (advantage > 0)
        )
        stats = {
            "clip_fraction": float((was_clipped.float() * weights).sum() / count),
            "ratio_mean": float((ratio * weights).sum() / count),
            "ratio_max": float(ratio.masked_fill(~mask, 0.0).max()) if mask.any() else 1.0,
            "approx_kl": float((((ratio - 1) - log_ratio) * weights).sum() / count),
        }
    return loss, stats


def kl_to_reference(
    log_probs: torch.Tensor, reference_log_probs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Token-mean k3 estimate of KL(policy || reference): ``exp(ref - new) - (ref - new) - 1``."""
    difference = reference_log_probs - log_probs
    per_token = difference.exp() - difference - 1.0
    weights = mask.float()
    return (per_token * weights).sum() / weights.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------------------------------
# Learning rate


class WarmupAdaptiveLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up over ``warmup_steps`` updates, times a scale in [``MIN_SCALE``, 1] set by the KL.

    ``step()`` once per update (the warm-up counts updates); `observe_kl` after each minibatch's KL is
    known. With ``target_kl`` the scale starts at ``START_SCALE``, else it stays 1. It is part of
    ``state_dict``, so a resumed run continues at the adapted rate.
    """

    MIN_SCALE = 1e-3
    START_SCALE = 1e-2
    FACTOR = 1.5

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, target_kl: float) -> None:
        self.warmup_steps = warmup_steps
        self.target_kl = target_kl
        self.scale = self.START_SCALE if target_kl > 0 else 1.0
        super().__init__(optimizer)

    def _rates(self) -> list[float]:
        warm = min(1.0, (self.last_epoch + 1) / max(1, self.warmup_steps))
        return [float(base) * warm * self.scale for base in self.base_lrs]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Each parameter group's rate: base rate x warm-up fraction x adapted scale."""
        return self._rates()

    def observe_kl(self, approx_kl: float) -> None:
        """Adapt the scale to one minibatch's approximate KL (no-op when ``target_kl`` is 0)."""
        if self.target_kl <= 0:
            return
        if approx_kl > 2 * self.target_kl:
            self.scale = max(self.MIN_SCALE, self.scale / self.FACTOR)
        elif approx_kl < self.target_kl / 2:
            self.scale = min(1.0, self.scale * self.FACTOR)
        rates = self._rates()
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


# ----------------------------------------------------------------------------------------------------
# Update batch: the kept trajectories' decisions, flattened


@dataclass
class DecisionBatch:
    """Every policy decision of the kept trajectories (M of them), ready for minibatching.

    Attributes:
        observations: LeRobot keys -> ``[M, ...]`` (images uint8 ``[M, H, W, 3]``, state ``[M, S]``).
        tasks: M instructions.
        tokens: int64 ``[M, K*D]``.
        old_log_probs: float32 ``[M, K*D]``.
        advantages: float32 ``[M]``.
        mask: bool ``[M, K*D]``: tokens of executed actions.

    """

    observations: dict[str, np.ndarray]
    tasks: list[str]
    tokens: torch.Tensor
    old_log_probs: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.tasks)


def build_decision_batch(
    trajectories: Sequence[Trajectory], advantages: np.ndarray, instructions: dict[str, str], action_dim: int
) -> DecisionBatch:
    """Flatten trajectories ``[N]`` with advantages ``[N]`` into one `DecisionBatch`."""
    keys = list(trajectories[0].observations)
    return DecisionBatch(
        observations={key: np.concatenate([t.observations[key] for t in trajectories]) for key in keys},
        tasks=[instructions[t.task] for t in trajectories for _ in range(len(t.tokens))],
        tokens=torch.from_numpy(np.concatenate([t.tokens for t in trajectories])),
        old_log_probs=torch.from_numpy(np.concatenate([t.log_probs for t in trajectories])),
        advantages=torch.from_numpy(
            np.concatenate(
                [np.full(len(t.tokens), a, np.float32) for t, a in zip(trajectories, advantages, strict=True)]
            )
        ),
        mask=torch.from_numpy(np.concatenate([t.executed_mask(action_dim) for t in trajectories])),
    )


def _inputs(policy: VLAPolicy, batch: DecisionBatch, rows: np.ndarray) -> dict[str, torch.Tensor]:
    observation = {key: value[rows] for key, value in batch.observations.items()}
    observation[TASK] = [batch.tasks[i] for i in rows]
    return policy.processor(observation, policy.device)


def _log_probs(policy: VLAPolicy, batch: DecisionBatch, rows: np.ndarray, temperature: float) -> torch.Tensor:
    tokens = batch.tokens[rows].to(policy.device)
    return policy.log_prob(_inputs(policy, batch, rows), tokens, temperature)


# ----------------------------------------------------------------------------------------------------
# The loop


def train_grpo(
    policy: VLAPolicy,
    env: BatchedEnv,
    reward_fn: RewardFn,
    tasks: Sequence[str],
    instructions: dict[str, str],
    num_train_states: int,
    execute_steps: int,
    frame_camera: str,
    config: GRPOConfig,
    run_dir: Path,
    metrics: MetricsLogger,
    evaluate: Callable[[VLAPolicy, int], float] | None = None,
) -> VLAPolicy:
    """Fine-tune ``policy`` with GRPO; resumable from ``run_dir/checkpoints/rl_last``.

    Args:
        policy: the starting policy (trained in place).
        env: a batched env with autoreset disabled; ideally ``groups_per_step * group_size`` envs.
        reward_fn: trajectories -> rewards ``[N]``.
        tasks: task names to train on.
        instructions: task name -> language instruction.
        num_train_states: size of the ``train`` initial-state set of each task.
        execute_steps: actions executed per chunk.
        frame_camera: the camera kept as trajectory frames (what the reward model sees).
        config: the GRPO settings.
        run_dir: where checkpoints go.
        metrics: metric sink (x axis: RL step).
        evaluate: ``(policy, step) -> eval success rate``; called every ``eval_every`` steps and at the end.

    """
    device = resolve_device(config.device)
    policy.to(device)
    parameters = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = WarmupAdaptiveLR(optimizer, config.warmup_steps, config.target_kl)
    generator = torch.Generator().manual_seed(config.seed)
    reference = copy.deepcopy(policy).eval().requires_grad_(False) if config.kl_coef > 0 else None
    averaged = copy.deepcopy(policy).eval().requires_grad_(False) if config.ema_decay > 0 else None
    replay = (
        SelfImitationBuffer(config.self_imitation_capacity, config.self_imitation_min_weight)
        if config.self_imitation_coef > 0
        else None
    )
    bookkeeping = LoopBookkeeping(
        name="GRPO",
        policy=policy,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        directory=run_dir / "checkpoints" / "rl_last",
        metrics=metrics,
        total_steps=config.steps,
        checkpoint_every=config.checkpoint_every,
        evaluate=evaluate,
        eval_every=config.eval_every,
        eval_metric=EVAL_METRIC,
        averaged=averaged,
        extra=replay,
    )
    start = bookkeeping.resume()
    task_ids = {task: index for index, task in enumerate(tasks)}
    bar = tqdm(range(start, config.steps), desc="grpo", unit="step", initial=start, total=config.steps)
    for step in bar:
        rng = np.random.default_rng([config.seed, step])
        torch.manual_seed(int(rng.integers(2**31)))

        # Rollout.
        started = time.perf_counter()
        policy.eval()
        initial = draw_initial_states(tasks, config.groups_per_step, num_train_states, rng)
        jobs = [job for job in initial for _ in range(config.group_size)]
        trajectories = collect_trajectories(
            env, policy, jobs, "train", config.temperature, execute_steps, frame_camera, task_ids
        )
        rollout_time = time.perf_counter() - started

        # Reward and advantage.
        started = time.perf_counter()
        rewards = np.asarray(reward_fn(trajectories), np.float32)
        if rewards.shape != (len(trajectories),) or not np.isfinite(rewards).all():
            raise ValueError(
                f"the reward model must return {len(trajectories)} finite rewards, got shape "
                f"{rewards.shape} with {int((~np.isfinite(rewards)).sum())} non-finite"
            )
        reward_time = time.perf_counter() - started
        success = np.array([t.success for t in trajectories])
        shape = (config.groups_per_step, config.group_size)
        kept = keep_groups(success.reshape(shape), rewards.reshape(shape), config)
        advantages = group_advantages(rewards.reshape(shape), config.scale_rewards)
        if replay is not None:
            replay.add_groups(trajectories, success.reshape(shape), instructions, policy.config.action_dim)

        # Update.
        started = time.perf_counter()
        update_stats: dict[str, float] = {}
        if kept.any():
            kept_rows = np.flatnonzero(np.repeat(kept, config.group_size))
            batch = build_decision_batch(
                [trajectories[i] for i in kept_rows],
                advantages.reshape(-1)[kept_rows],
                instructions,
                policy.config.action_dim,
            )
            update_stats = update_policy(
                policy, reference, batch, optimizer, scheduler, parameters, config, generator, replay
            )
            scheduler.step()  # the warm-up counts updates
        if averaged is not None:
            update_moving_average(averaged, policy, config.ema_decay)
        update_time = time.perf_counter() - started

        env_steps = sum(t.length for t in trajectories)
        row = {
            "rl/rollout_success_rate": float(success.mean()),
            "rl/reward_mean": float(rewards.mean()),
            "rl/episode_length": env_steps / len(trajectories),
            "rl/groups_kept": float(kept.mean()),
            **{f"rl/{name}": value for name, value in update_stats.items()},
            **({"rl/self_imitation_trajectories": float(len(replay))} if replay is not None else {}),
            "rl/env_steps_per_s": env_steps / rollout_time,
            "rl/trajectories_per_s": len(trajectories) / rollout_time,
            "rl/time_rollout_s": rollout_time,
            "rl/time_reward_s": reward_time,
            "rl/time_update_s": update_time,
        }
        metrics.log(step + 1, row)
        bar.set_postfix(success=f"{success.mean():.2f}", kept=f"{kept.mean():.2f}")
        bookkeeping.after_step(step + 1)
    bar.close()
    bookkeeping.finish()
    if averaged is not None:
        policy.load_state_dict(averaged.state_dict())
    policy.eval()
    return policy


def update_policy(
    policy: VLAPolicy,
    reference: VLAPolicy | None,
    batch: DecisionBatch,
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupAdaptiveLR,
    parameters: list[torch.nn.Parameter],
    config: GRPOConfig,
    generator: torch.Generator,
    replay: SelfImitationBuffer | None = None,
) -> dict[str, float]:
    """``ppo_epochs`` passes of shuffled minibatches; returns the mean of each statistic.

    With a non-empty ``replay`` buffer each minibatch also draws ``self_imitation_batch`` replayed
    decisions and adds ``self_imitation_coef`` times their weighted token-mean negative log-likelihood.

    ``learning_rate`` is the rate of the update's last step (adapted when ``target_kl`` is set).
    """
    device = policy.device
    minibatch_count = -(-len(batch) // config.minibatch_size)
    reference_log_probs = None
    if reference is not None:
        with torch.no_grad():
            reference_log_probs = torch.cat(
                [
                    _log_probs(reference, batch, rows, config.temperature)
                    for rows in np.array_split(np.arange(len(batch)), minibatch_count)
                ]
            )
    policy.train()
    totals: dict[str, list[float]] = {}
    minibatches = [
        order[first : first + config.minibatch_size]
        for order in (
            torch.randperm(len(batch), generator=generator).numpy() for _ in range(config.ppo_epochs)
        )
        for first in range(0, len(batch), config.minibatch_size)
    ]
    for index, rows in enumerate(minibatches):
        mask = batch.mask[rows].to(device)
        log_probs = _log_probs(policy, batch, rows, config.temperature)
        loss, stats = clipped_policy_loss(
            log_probs,
            batch.old_log_probs[rows].to(device),
            batch.advantages[rows].to(device),
            mask,
            config.clip_low,
            config.clip_high,
        )
        if index > 0:  # the first minibatch is on-policy: its KL is 0 and says nothing
            scheduler.observe_kl(stats["approx_kl"])
        if reference_log_probs is not None:
            kl = kl_to_reference(log_probs, reference_log_probs[rows].to(device), mask)
            loss = loss + config.kl_coef * kl
            stats["kl_reference"] = kl.item()
        if replay is not None and len(replay):
            imitation = self_imitation_loss(policy, replay, config, generator)
            loss = loss + config.self_imitation_coef * imitation
            stats["self_imitation_loss"] = imitation.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip))
        stats["loss"] = loss.item()
        optimizer.step()
        stats["learning_rate"] = float(optimizer.param_groups[0]["lr"])
        for name, value in stats.items():
            totals.setdefault(name, []).append(value)
    policy.eval()
    summary = {name: float(np.mean(values)) for name, values in totals.items()}
    summary["learning_rate"] = totals["learning_rate"][-1]
    return summary


def self_imitation_loss(
    policy: VLAPolicy, replay: SelfImitationBuffer, config: GRPOConfig, generator: torch.Generator
) -> torch.Tensor:
    """Weighted token-mean negative log-likelihood of ``self_imitation_batch`` replayed decisions."""
    drawn = replay.sample(config.self_imitation_batch, generator)
    observation: dict[str, object] = dict(drawn.observations)
    observation[TASK] = drawn.tasks
    inputs = policy.processor(observation, policy.device)
    log_probs = policy.log_prob(inputs, drawn.tokens.to(policy.device), config.temperature)
    weights = drawn.mask.to(policy.device).float() * drawn.weights.to(policy.device)[:, None]
    return -(log_probs * weights).sum() / drawn.mask.sum().clamp(min=1).to(policy.device)
