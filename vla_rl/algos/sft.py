"""Supervised fine-tuning of the VLA policy on demonstrations (behaviour cloning on action tokens).

One page, top to bottom: config -> data -> model -> loss -> update -> evaluate / checkpoint / log.
The loss is the cross-entropy of the demonstrated action tokens (K x D per frame, 256 bins per
dimension), averaged over the valid tokens of the batch; chunk positions past an episode's end are
masked. Training resumes from ``<run_dir>/checkpoints/sft_last`` when it exists.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vla_rl.config import SFTConfig
from vla_rl.data.frames import FrameDataset
from vla_rl.io import write_json_atomic
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.modeling_vla import VLAPolicy

log = logging.getLogger(__name__)


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
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean cross-entropy and token accuracy.

    Args:
        logits: ``[B, K*D, bins]``.
        tokens: target tokens ``[B, K*D]``.
        mask: bool ``[B, K*D]``, True for tokens that count.

    """
    losses = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)
    weights = mask.float()
    loss = (losses * weights).sum() / weights.sum().clamp(min=1.0)
    accuracy = ((logits.argmax(-1) == tokens).float() * weights).sum() / weights.sum().clamp(min=1.0)
    return loss, accuracy


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

    ``evaluate(policy, step) -> success rate`` runs every ``config.eval_every`` steps and at the end.
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
    checkpoint = run_dir / "checkpoints" / "sft_last"
    start = (
        load_training_state(checkpoint, policy, optimizer, scheduler, generator) if checkpoint.exists() else 0
    )
    if start:
        log.info("resuming SFT from step %d (%s)", start, checkpoint)
    text_ids, text_mask = policy.processor.tokenize(frames.task)
    normalized_chunks = policy.processor.normalize_actions(frames.action_chunks)
    targets = policy.tokenizer.encode(normalized_chunks).flatten(1)  # [F, K*D]
    token_mask = frames.chunk_mask.repeat_interleave(policy.config.action_dim, dim=1)
    state = (frames.state - policy.processor.state_mean) / policy.processor.state_std
    autocast = device.type == "cuda" and config.mixed_precision and torch.cuda.is_bf16_supported()

    policy.train()
    bar = tqdm(range(start, config.steps), desc="sft", unit="step", initial=start, total=config.steps)
    window_start, window_samples = time.perf_counter(), 0
    for step in bar:
        index = torch.randint(len(frames), (config.batch_size,), generator=generator)
        images = frames.images[index].float() / 255.0
        if config.augment:
            images = augment_images(images, generator)
        inputs = {
            "images": images.to(device),
            "state": state[index].to(device),
            "text_ids": text_ids[index].to(device),
            "text_mask": text_mask[index].to(device),
        }
        tokens = targets[index].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = policy.logits(inputs, tokens)
        loss, accuracy = token_loss(logits, tokens, token_mask[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        scheduler.step()
        window_samples += config.batch_size
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            elapsed = time.perf_counter() - window_start
            metrics.log(
                done,
                {
                    "loss/policy": loss.item(),
                    "train/token_accuracy": accuracy.item(),
                    "train/grad_norm": float(grad_norm),
                    "train/learning_rate": float(scheduler.get_last_lr()[0]),
                    "perf/samples_per_s": window_samples / elapsed,
                },
            )
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy.item():.2f}")
            window_start, window_samples = time.perf_counter(), 0
        if (
            evaluate is not None
            and config.eval_every
            and done % config.eval_every == 0
            and done != config.steps
        ):
            _evaluate(policy, evaluate, done, metrics)
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_training_state(checkpoint, policy, optimizer, scheduler, generator, done)
    bar.close()
    if evaluate is not None:
        _evaluate(policy, evaluate, config.steps, metrics)
    return policy


def _evaluate(
    policy: VLAPolicy, evaluate: Callable[[VLAPolicy, int], float], step: int, metrics: MetricsLogger
) -> None:
    policy.eval()
    metrics.log(step, {"eval/success_rate": evaluate(policy, step)})
    policy.train()


# ----------------------------------------------------------------------------------------------------
# Training state: the policy (its own checkpoint format) + optimizer moments as safetensors + JSON.


def save_training_state(
    directory: Path,
    policy: VLAPolicy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    step: int,
) -> None:
    """Write everything needed to resume at ``step``; the previous state is replaced only once complete."""
    staging = directory.with_name(directory.name + ".tmp")
    policy.save_pretrained(staging / "policy")
    moments: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            moments[f"{index}.{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
    save_file(moments, str(staging / "optimizer.safetensors"))
    save_file({"generator": generator.get_state()}, str(staging / "generator.safetensors"))
    write_json_atomic(staging / "trainer.json", {"step": step, "scheduler": scheduler.state_dict()})
    previous = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    if previous.exists():
        shutil.rmtree(previous)


def load_training_state(
    directory: Path,
    policy: VLAPolicy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> int:
    """Restore a `save_training_state` directory into the given objects; return the step to resume at."""
    trained = VLAPolicy.from_pretrained(directory / "policy", map_location=policy.device)
    policy.load_state_dict(trained.state_dict())
    trainer: dict[str, Any] = json.loads((directory / "trainer.json").read_text())
    moments = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in moments.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor.to(policy.device) if key != "step" else tensor
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"] = state
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(trainer["scheduler"])
    generator.set_state(load_file(str(directory / "generator.safetensors"))["generator"])
    return int(trainer["step"])
