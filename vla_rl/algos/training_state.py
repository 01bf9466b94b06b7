"""Resumable training state, and the bookkeeping every training loop (SFT, GRPO) does after a step.

The state is the policy (its own checkpoint format) + optimizer moments + RNG + step, all safetensors or
JSON: nothing is unpickled on resume.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from vla_rl.io import write_json_atomic
from vla_rl.metrics import MetricsLogger
from vla_rl.policy.modeling_vla import VLAPolicy

log = logging.getLogger(__name__)


class CheckpointPart(Protocol):
    """More loop state saved with a checkpoint (GRPO's self-imitation buffer), as files in its directory."""

    def save(self, directory: Path) -> None:
        """Write the state into ``directory``."""

    def load(self, directory: Path) -> None:
        """Restore the state from ``directory``."""


def save_training_state(
    directory: Path,
    policy: VLAPolicy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    step: int,
    averaged: VLAPolicy | None = None,
    extra: CheckpointPart | None = None,
) -> None:
    """Write everything needed to resume at ``step``; the previous state is replaced only once complete."""
    staging = directory.with_name(directory.name + ".tmp")
    policy.save_pretrained(staging / "policy")
    if averaged is not None:
        averaged.save_pretrained(staging / "averaged_policy")
    if extra is not None:
        extra.save(staging)
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
    averaged: VLAPolicy | None = None,
    extra: CheckpointPart | None = None,
) -> int:
    """Restore a `save_training_state` directory into the given objects; return the step to resume at."""
    trained = VLAPolicy.from_pretrained(directory / "policy", map_location=policy.device)
    policy.load_state_dict(trained.state_dict())
    if extra is not None:
        extra.load(directory)
    if averaged is not None:
        if not (directory / "averaged_policy").exists():
            raise ValueError(f"{directory} holds no averaged weights; it was saved by a run without them")
        saved = VLAPolicy.from_pretrained(directory / "averaged_policy", map_location=policy.device)
        averaged.load_state_dict(saved.state_dict())
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
    # The fresh optimizer's groups still hold the first step's learning rate; the next step must use the
    # schedule's value at ``step``, as the uninterrupted run would.
    for group, learning_rate in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = learning_rate
    generator.set_state(load_file(str(directory / "generator.safetensors"))["generator"])
    return int(trainer["step"])


@dataclass
class LoopBookkeeping:
    """Resume, periodic evaluation and checkpoints of one training loop over ``total_steps`` steps.

    Attributes:
        name: the loop's name in log messages (``SFT``, ``GRPO``).
        policy: the policy being trained.
        optimizer: its optimizer.
        scheduler: the learning-rate schedule.
        generator: the loop's random generator (saved, so a resumed run draws the same batches).
        directory: the checkpoint directory (replaced atomically at each save).
        metrics: metric sink; evaluations are logged as ``eval_metric`` at the step they follow.
        total_steps: steps of the whole loop.
        checkpoint_every: steps between checkpoints (the last step is always saved).
        evaluate: ``(policy, step) -> success rate``, or None for no evaluation.
        eval_every: steps between evaluations (0: only at the end).
        eval_metric: the metric name of the evaluations.
        averaged: a moving average of ``policy``'s weights, if the loop keeps one: it is what gets
            evaluated, and it is checkpointed with the rest.
        extra: more state checkpointed with the rest, if the loop keeps any.

    """

    name: str
    policy: VLAPolicy
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    directory: Path
    metrics: MetricsLogger
    total_steps: int
    checkpoint_every: int
    evaluate: Callable[[VLAPolicy, int], float] | None
    eval_every: int
    eval_metric: str
    averaged: VLAPolicy | None = None
    extra: CheckpointPart | None = None

    def resume(self) -> int:
        """Restore the last checkpoint if there is one; return the step to start at."""
        if not self.directory.exists():
            return 0
        start = load_training_state(
            self.directory,
            self.policy,
            self.optimizer,
            self.scheduler,
            self.generator,
            self.averaged,
            self.extra,
        )
        log.info("resuming %s from step %d (%s)", self.name, start, self.directory)
        return start

    def after_step(self, done: int) -> None:
        """After step ``done`` (1-based): the periodic evaluation, then a checkpoint when one is due."""
        if (
            self.evaluate is not None
            and self.eval_every
            and done % self.eval_every == 0
            and done != self.total_steps
        ):
            log_evaluation(self.evaluated, self.evaluate, done, self.metrics, self.eval_metric)
        if done % self.checkpoint_every == 0 or done == self.total_steps:
            save_training_state(
                self.directory,
                self.policy,
                self.optimizer,
                self.scheduler,
                self.generator,
                done,
                self.averaged,
                self.extra,
            )

    def finish(self) -> None:
        """The final evaluation (always run, also when resuming a finished loop)."""
        if self.evaluate is not None and self.total_steps > 0:
            log_evaluation(self.evaluated, self.evaluate, self.total_steps, self.metrics, self.eval_metric)

    @property
    def evaluated(self) -> VLAPolicy:
        """The policy evaluations run: the averaged weights when the loop keeps them."""
        return self.averaged if self.averaged is not None else self.policy


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
