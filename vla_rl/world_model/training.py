"""Training the JEPA world model on episodes of camera frames.

Each step samples ``batch_size / pairs_per_episode`` episodes (with replacement, in proportion to their
T - 1 consecutive pairs) and ``pairs_per_episode`` (frame t, frame t + k) pairs from each: k uniform in
[1, min(max_offset, T - 1)], then t uniform in [0, T - k). The loss
(`WorldModel.losses`) is ``prediction + invariance_weight * invariance + variance_weight * variance +
covariance_weight * covariance``, minimized with AdamW under a linear warm-up and cosine decay, with
gradient clipping; after every optimizer step the target encoder takes one EMA step towards the
context encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vla_rl.world_model.jepa import WorldModel


@dataclass
class WorldModelTrainConfig:
    """How to train the world model.

    Attributes:
        steps: optimizer steps.
        batch_size: frame pairs per step; a multiple of ``pairs_per_episode``.
        pairs_per_episode: pairs drawn from each sampled episode (>= 2: the VICReg variance and
            covariance are taken within episodes).
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear learning-rate warm-up before the cosine decay to 0.
        grad_clip: maximum global gradient norm.
        ema_momentum: target encoder EMA momentum per step (0.99: a half-life of ~70 steps).
        invariance_weight: weight of the VICReg invariance term (pooled embeddings of t and t + k).
        variance_weight: weight of the VICReg variance term.
        covariance_weight: weight of the VICReg covariance term (VICReg's 25:1 variance:covariance).
        seed: seed of the pair sampling (the model's initialization is the caller's).

    """

    steps: int = 1000
    batch_size: int = 32
    pairs_per_episode: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_momentum: float = 0.99
    invariance_weight: float = 1.0
    variance_weight: float = 1.0
    covariance_weight: float = 0.04
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"world_model.train.steps must be >= 1, got {self.steps}")
        if self.pairs_per_episode < 2:
            raise ValueError(
                f"world_model.train.pairs_per_episode must be >= 2, got {self.pairs_per_episode}"
            )
        if self.batch_size < 1 or self.batch_size % self.pairs_per_episode:
            raise ValueError(
                f"world_model.train.batch_size ({self.batch_size}) must be a positive multiple of "
                f"pairs_per_episode ({self.pairs_per_episode})"
            )
        for name in ("learning_rate", "grad_clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"world_model.train.{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "weight_decay",
            "warmup_steps",
            "invariance_weight",
            "variance_weight",
            "covariance_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"world_model.train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"world_model.train.ema_momentum must be in [0, 1), got {self.ema_momentum}")


def train_world_model(
    model: WorldModel,
    episodes: Sequence[np.ndarray],
    config: WorldModelTrainConfig,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place on frame pairs from ``episodes``.

    Args:
        model: the world model, on the device to train on.
        episodes: uint8 ``[T, H, W, 3]`` camera frames per episode (T may differ between episodes; at
            least one episode needs T >= 2).
        config: training hyper-parameters.
        progress: show a progress bar.

    Returns:
        The total loss of every step, ``config.steps`` floats.

    """
    for index, episode in enumerate(episodes):
        if episode.dtype != np.uint8 or episode.ndim != 4 or episode.shape[-1] != 3:
            shape = list(episode.shape)
            raise ValueError(
                f"episode {index} must be a uint8 array [T, H, W, 3], got {episode.dtype} {shape}"
            )
    lengths = np.array([len(episode) for episode in episodes], dtype=np.int64)
    if len(lengths) == 0 or lengths.max() < 2:
        raise ValueError("the world model needs at least one episode of 2 or more frames")
    rng = np.random.default_rng(config.seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, config.warmup_steps, config.steps)
    )
    model.train()
    losses = []
    bar = tqdm(range(config.steps), desc="world model", disable=not progress)
    for _ in bar:
        batch = _sample_pairs(
            episodes, lengths, model.config.max_offset, config.batch_size, config.pairs_per_episode, rng
        )
        terms = model.losses(*batch)
        loss = (
            terms["prediction"]
            + config.invariance_weight * terms["invariance"]
            + config.variance_weight * terms["variance"]
            + config.covariance_weight * terms["covariance"]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        scheduler.step()
        model.update_target(config.ema_momentum)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", prediction=f"{terms['prediction'].item():.4f}")
    model.eval()
    return losses


def _sample_pairs(
    episodes: Sequence[np.ndarray],
    lengths: np.ndarray,
    max_offset: int,
    batch_size: int,
    pairs_per_episode: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames t and t + k (uint8 ``[B, H, W, 3]`` each), offsets k ``[B]`` and episode numbers ``[B]``."""
    pairs = np.maximum(lengths - 1, 0)
    chosen = rng.choice(len(episodes), size=batch_size // pairs_per_episode, p=pairs / pairs.sum())
    frames, future_frames, offsets = [], [], []
    for episode in chosen:
        for _ in range(pairs_per_episode):
            offset = int(rng.integers(1, min(max_offset, lengths[episode] - 1) + 1))
            time = int(rng.integers(lengths[episode] - offset))
            frames.append(episodes[episode][time])
            future_frames.append(episodes[episode][time + offset])
            offsets.append(offset)
    numbers = np.repeat(np.arange(len(chosen)), pairs_per_episode)  # 0 .. G - 1, as `losses` wants
    return (
        torch.from_numpy(np.stack(frames)),
        torch.from_numpy(np.stack(future_frames)),
        torch.tensor(offsets),
        torch.from_numpy(numbers),
    )


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay from 1 to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
