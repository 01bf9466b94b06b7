"""Resumable training state, and the periodic evaluation every training loop logs.

The state is the policy (its own checkpoint format) + optimizer moments + RNG + step, all safetensors or
JSON: nothing is unpickled on resume.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vla_rl.io import write_json_atomic
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.modeling_vla import VLAPolicy


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


def log_evaluation(
    policy: VLAPolicy,
    evaluate: Callable[[VLAPolicy, int], float],
    step: int,
    metrics: MetricsLogger,
    name: str,
) -> None:
    """Log ``evaluate(policy, step)`` (run in eval mode) as metric ``name``; restores the training mode."""
    was_training = policy.training
    policy.eval()
    metrics.log(step, {name: evaluate(policy, step)})
    policy.train(was_training)
