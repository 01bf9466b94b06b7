"""Training the JEPA world model on episodes of camera frames.

Each step samples a batch of (frame t, frame t + k) pairs: k uniform in [1, max_offset] (capped by the
longest episode), then (episode, t) uniform over the pairs with that offset. The loss is
``prediction + variance_weight * variance + covariance_weight * covariance`` (`WorldModel.losses`),
minimized with AdamW under a linear warm-up and cosine decay, with gradient clipping; after every
optimizer step the target encoder takes one EMA step towards the context encoder.
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
        batch_size: frame pairs per step.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear learning-rate warm-up before the cosine decay to 0.
        grad_clip: maximum global gradient norm.
        ema_momentum: target encoder EMA momentum per step (0.99: a half-life of ~70 steps).
        invariance_weight: weight of the temporal invariance term (pooled embeddings of t and t + k).
        variance_weight: weight of the VICReg variance term.
        covariance_weight: weight of the VICReg covariance term.
        seed: seed of the pair sampling (the model's initialization is the caller's).

    """

    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_momentum: float = 0.99
    invariance_weight: float = 10.0
    variance_weight: float = 1.0
    covariance_weight: float = 0.04
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"world_model.train.steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise ValueError(
                f"world_model.train.batch_size must be >= 2 (batch statistics), got {self.batch_size}"
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
    max_offset = int(min(model.config.max_offset, lengths.max() - 1))
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
        frames, future_frames, offsets = _sample_pairs(episodes, lengths, max_offset, config.batch_size, rng)
        terms = model.losses(frames, future_frames, offsets)
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
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 frames t ``[B, H, W, 3]``, frames t + k ``[B, H, W, 3]`` and offsets k ``[B]``."""
    offsets = rng.integers(1, max_offset + 1, size=batch_size)
    frames, future_frames = [], []
    for offset in offsets:
        counts = np.maximum(lengths - offset, 0)  # pairs with this offset in each episode
        ends = np.cumsum(counts)
        pair = rng.integers(ends[-1])
        episode = int(np.searchsorted(ends, pair, side="right"))
        time = int(pair - (ends[episode] - counts[episode]))
        frames.append(episodes[episode][time])
        future_frames.append(episodes[episode][time + offset])
    return (
        torch.from_numpy(np.stack(frames)),
        torch.from_numpy(np.stack(future_frames)),
        torch.from_numpy(offsets),
    )


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay from 1 to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
