"""Supervised fine-tuning of the VLA policy on demonstrations (behaviour cloning on action tokens).

One page, top to bottom: config -> data -> model -> loss -> update -> evaluate / checkpoint / log.
The loss is the cross-entropy of the demonstrated action tokens (K x D per frame, 256 bins per
dimension), averaged over the valid tokens of the batch; chunk positions past an episode's end are
masked. Training resumes from ``<run_dir>/checkpoints/sft_last`` when it exists.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from vla_rl.algos.training_state import LoopBookkeeping
from vla_rl.data.frames import FrameDataset
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.modeling_vla import VLAPolicy

EVAL_METRIC = "sft/eval_success_rate"
"""Metric name of the periodic evaluations (x axis: SFT step)."""


@dataclass
class SFTConfig:
    """Supervised fine-tuning.

    Attributes:
        steps: optimizer steps.
        batch_size: frames per step.
        learning_rate: peak AdamW learning rate (after warm-up, then cosine decay to 10%).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        grad_clip: max global gradient norm.
        episodes_per_task: demonstrations used per task (null: all); 1 gives ``sft_one_demo``.
        bin_sigma: soft targets: a Gaussian of this many bins around each demonstrated token (0: one-hot).
        augment: random shifts (+-4 px) and brightness/contrast jitter on training images.
        mixed_precision: bf16 autocast where the device supports it (CUDA); ignored on CPU.
        eval_every: steps between evaluations in the sim on ``eval`` initial states (0: only at the end).
        eval_episodes_per_task: eval initial states per task for the periodic evaluations.
        checkpoint_every: steps between checkpoints (the last step is always saved).
        log_every: steps between metric rows.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        seed: sampling and initialization seed.
        ema_decay: keep an exponential moving average of the weights with this decay per step and
            return (and evaluate) it instead of the last iterate (0: off). Averaging the last ~1 / (1 -
            decay) steps smooths out the step-to-step swings of a short run's success rate.
        environment_state_weight: weight of the auxiliary loss (mean squared error on standardized
            targets) of the policy's environment-state head, when the demonstrations recorded the
            simulator's environment state (0: off).
        state_dropout: probability that a training frame's state is replaced by the demonstrations'
            mean state (zero after standardization). Joint angles along a demonstration predict its
            next actions without looking at the scene (the "copycat" shortcut of behaviour cloning
            with proprioception, de Haan et al. 2019; Wen et al. 2020), so a policy can learn them
            instead of where the object is; dropping the state makes the images carry the prediction.

    """

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    episodes_per_task: int | None = None
    bin_sigma: float = 2.0
    augment: bool = True
    mixed_precision: bool = True
    eval_every: int = 0
    eval_episodes_per_task: int = 10
    checkpoint_every: int = 500
    log_every: int = 50
    device: str = "auto"
    seed: int = 0
    ema_decay: float = 0.0
    environment_state_weight: float = 1.0
    state_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.state_dropout <= 1.0:
            raise ValueError(f"sft.state_dropout must be within [0, 1], got {self.state_dropout}")
        if self.environment_state_weight < 0:
            raise ValueError(
                f"sft.environment_state_weight must be >= 0, got {self.environment_state_weight}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"sft.ema_decay must be within [0, 1), got {self.ema_decay}")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "eval_episodes_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"sft.{name} must be >= 1, got {getattr(self, name)}")
        if self.episodes_per_task is not None and self.episodes_per_task < 1:
            raise ValueError(f"sft.episodes_per_task must be >= 1 or null, got {self.episodes_per_task}")
        if self.bin_sigma < 0:
            raise ValueError(f"sft.bin_sigma must be >= 0, got {self.bin_sigma}")
        if self.learning_rate <= 0:
            raise ValueError(f"sft.learning_rate must be > 0, got {self.learning_rate}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"sft.device={self.device!r} is not valid; choose one of: auto, cpu, cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("algo.device=cuda but no CUDA device is available; use algo.device=auto or cpu")
    return torch.device(name)


def augment_images(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random +-4 px shifts (replicate padding) and brightness/contrast jitter, float ``[B, C, 3, s, s]``."""
    batch, cameras, channels, size, _ = images.shape
    flat = images.reshape(batch * cameras, channels, size, size)
    padded = F.pad(flat, (4, 4, 4, 4), mode="replicate")
    shifts = torch.randint(0, 9, (batch * cameras, 2), generator=generator)
    rows = (torch.arange(size)[None, :] + shifts[:, :1]).clamp(max=size + 7)
    columns = (torch.arange(size)[None, :] + shifts[:, 1:]).clamp(max=size + 7)
    shifted = padded[torch.arange(batch * cameras)[:, None, None], :, rows[:, :, None], columns[:, None, :]]
    shifted = shifted.permute(0, 3, 1, 2)
    brightness = 1.0 + 0.2 * (torch.rand(batch * cameras, 1, 1, 1, generator=generator) - 0.5)
    contrast = 1.0 + 0.2 * (torch.rand(batch * cameras, 1, 1, 1, generator=generator) - 0.5)
    mean = shifted.mean(dim=(1, 2, 3), keepdim=True)
    jittered = ((shifted - mean) * contrast + mean) * brightness
    return jittered.clamp(0, 1).reshape(batch, cameras, channels, size, size)


def token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, bin_sigma: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean cross-entropy and token accuracy.

    With ``bin_sigma > 0`` the target of each token is a Gaussian over the bins centred on the
    demonstrated one (sigma in bins, renormalized; HL-Gauss style): neighbouring bins are neighbouring
    action values, and the soft target lets the model learn that ordering instead of 256 unrelated
    classes. The argmax of the target stays the demonstrated bin.

    Args:
        logits: ``[B, K*D, bins]``.
        tokens: target tokens ``[B, K*D]``.
        mask: bool ``[B, K*D]``, True for tokens that count.
        bin_sigma: standard deviation of the soft target in bins (0: one-hot).

    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    if bin_sigma > 0:
        bins = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
        target = torch.exp(-0.5 * ((bins - tokens.unsqueeze(-1).float()) / bin_sigma) ** 2)
        target = target / target.sum(-1, keepdim=True)
        losses = -(target * log_probs).sum(-1)
    else:
        losses = -log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    weights = mask.float()
    loss = (losses * weights).sum() / weights.sum().clamp(min=1.0)
    accuracy = ((logits.argmax(-1) == tokens).float() * weights).sum() / weights.sum().clamp(min=1.0)
    return loss, accuracy


def environment_targets(policy: VLAPolicy, frames: FrameDataset, weight: float) -> torch.Tensor | None:
    """Standardized environment-state targets ``[F, E]`` of the auxiliary loss; None when it is off.

    It is on when ``weight > 0``, the demonstrations recorded the environment state and the policy has
    the head for it.
    """
    if weight == 0 or frames.environment_state is None or policy.environment_head is None:
        return None
    state = frames.environment_state
    if state.shape[1] != policy.config.environment_state_dim:
        raise ValueError(
            f"the demonstrations' environment state has {state.shape[1]} values but the policy's head "
            f"predicts {policy.config.environment_state_dim}: train a new policy on these demonstrations"
        )
    return (state - state.mean(0)) / state.std(0).clamp(min=1e-3)


def cosine_schedule(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up, then cosine decay from 1 to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


def train_sft(
    policy: VLAPolicy,
    frames: FrameDataset,
    config: SFTConfig,
    run_dir: Path,
    metrics: MetricsLogger,
    evaluate: Callable[[VLAPolicy, int], float] | None = None,
) -> VLAPolicy:
    """Fine-tune ``policy`` on ``frames``; checkpoints in ``run_dir/checkpoints``; returns the trained policy.

    ``evaluate(policy, step) -> success rate`` runs every ``config.eval_every`` steps and at the end. With
    ``config.ema_decay`` the returned policy holds the moving average of the weights.
    """
    device = resolve_device(config.device)
    policy.to(device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    parameters = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_schedule(step, config.warmup_steps, config.steps)
    )
    averaged = copy.deepcopy(policy).eval().requires_grad_(False) if config.ema_decay > 0 else None
    bookkeeping = LoopBookkeeping(
        name="SFT",
        policy=policy,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        directory=run_dir / "checkpoints" / "sft_last",
        metrics=metrics,
        total_steps=config.steps,
        checkpoint_every=config.checkpoint_every,
        evaluate=evaluate,
        eval_every=config.eval_every,
        eval_metric=EVAL_METRIC,
        averaged=averaged,
    )
    start = bookkeeping.resume()
    text_ids, text_mask = policy.processor.tokenize(frames.task)
    normalized_chunks = policy.processor.normalize_actions(frames.action_chunks)
    targets = policy.tokenizer.encode(normalized_chunks).flatten(1)  # [F, K*D]
    token_mask = frames.chunk_mask.repeat_interleave(policy.config.action_dim, dim=1)
    state = (frames.state - policy.processor.state_mean) / policy.processor.state_std
    environment = environment_targets(policy, frames, config.environment_state_weight)
    autocast = device.type == "cuda" and config.mixed_precision and torch.cuda.is_bf16_supported()

    policy.train()
    bar = tqdm(range(start, config.steps), desc="sft", unit="step", initial=start, total=config.steps)
    window_start, window_samples = time.perf_counter(), 0
    for step in bar:
        index = torch.randint(len(frames), (config.batch_size,), generator=generator)
        images = frames.images[index].float() / 255.0
        if config.augment:
            images = augment_images(images, generator)
        batch_state = state[index]
        if config.state_dropout > 0:
            kept = torch.rand(len(index), 1, generator=generator) >= config.state_dropout
            batch_state = batch_state * kept
        inputs = {
            "images": images.to(device),
            "state": batch_state.to(device),
            "text_ids": text_ids[index].to(device),
            "text_mask": text_mask[index].to(device),
        }
        tokens = targets[index].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if environment is None:
                logits = policy.logits(inputs, tokens)
            else:
                logits, predicted = policy.logits_and_environment_state(inputs, tokens)
        action_loss, accuracy = token_loss(logits, tokens, token_mask[index].to(device), config.bin_sigma)
        loss, losses = action_loss, {"loss/policy": action_loss}
        if environment is not None:
            environment_loss = F.mse_loss(predicted.float(), environment[index].to(device))
            loss = loss + config.environment_state_weight * environment_loss
            losses["loss/environment_state"] = environment_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        scheduler.step()
        if averaged is not None:
            update_moving_average(averaged, policy, config.ema_decay)
        window_samples += config.batch_size
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            elapsed = time.perf_counter() - window_start
            metrics.log(
                done,
                {
                    **{name: value.item() for name, value in losses.items()},
                    "train/token_accuracy": accuracy.item(),
                    "train/grad_norm": float(grad_norm),
                    "train/learning_rate": float(scheduler.get_last_lr()[0]),
                    "perf/samples_per_s": window_samples / elapsed,
                },
            )
            bar.set_postfix(loss=f"{action_loss.item():.3f}", acc=f"{accuracy.item():.2f}")
            window_start, window_samples = time.perf_counter(), 0
        bookkeeping.after_step(done)
    bar.close()
    bookkeeping.finish()
    if averaged is not None:
        policy.load_state_dict(averaged.state_dict())
    return policy


@torch.no_grad()
def update_moving_average(averaged: torch.nn.Module, current: torch.nn.Module, decay: float) -> None:
    """``averaged <- decay * averaged + (1 - decay) * current`` for float tensors; others are copied."""
    for mean, value in zip(averaged.state_dict().values(), current.state_dict().values(), strict=True):
        if mean.is_floating_point():
            mean.lerp_(value, 1.0 - decay)
        else:
            mean.copy_(value)
