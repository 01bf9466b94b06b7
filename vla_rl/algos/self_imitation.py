"""Self-imitation: the rollouts that beat their group are replayed and imitated in later updates.

Self-imitation learning (Oh et al. 2018) adds ``-log pi(a | s) * (R - V)+`` over past transitions to
the policy-gradient loss. With GRPO's group as the baseline, R is a rollout's success (1 / 0) and V its
group's success rate, so only successes of groups that also failed count, each weighted by
``1 - group success rate``: a success where 7 of 8 rollouts from the same initial state failed weighs
7/8. These rare successes are the ones on-policy GRPO sees once and forgets; replayed, they act like
demonstrations the policy found itself, at the states where it is weakest. A minimum weight above 0
replays the successes of groups that always succeed too, to hold on to what the policy already solves
(nothing else in GRPO does: those groups have no advantage).

The buffer keeps the last ``capacity`` such trajectories (their decisions' observations, tokens and
executed-token masks). It is saved with the RL checkpoint, so a resumed run replays what an
uninterrupted one would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from vla_rl.data.trajectory import Trajectory

FILE_NAME = "self_imitation.safetensors"


@dataclass
class ReplayEntry:
    """One replayed trajectory: S decisions with L action tokens each.

    Attributes:
        observations: LeRobot keys -> ``[S, ...]`` (what the policy saw at each decision).
        instruction: the task's language instruction.
        tokens: int64 ``[S, L]``.
        mask: bool ``[S, L]``: tokens of executed actions.
        weight: the loss weight, ``max(1 - group success rate, min_weight)`` (in (0, 1]).

    """

    observations: dict[str, np.ndarray]
    instruction: str
    tokens: np.ndarray
    mask: np.ndarray
    weight: float

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class ReplayMinibatch:
    """Decisions drawn from the buffer.

    ``observations`` ``[B, ...]``, ``tasks`` (B instructions), ``tokens`` int64 ``[B, L]``, ``mask``
    bool ``[B, L]`` and per-decision ``weights`` ``[B]``.
    """

    observations: dict[str, np.ndarray]
    tasks: list[str]
    tokens: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor


class SelfImitationBuffer:
    """FIFO buffer of the last ``capacity`` successful trajectories, weighted by their group's failures.

    A success's weight is ``max(1 - group success rate, min_weight)``: with ``min_weight`` 0 (SIL) only
    successes of groups that also failed are kept; above 0 the successes of groups that always succeed
    are replayed too, at that weight, which holds on to what the policy already solves.
    """

    def __init__(self, capacity: int, min_weight: float = 0.0) -> None:
        if capacity < 1:
            raise ValueError(f"the self-imitation capacity must be >= 1 trajectories, got {capacity}")
        if not 0.0 <= min_weight <= 1.0:
            raise ValueError(f"the self-imitation minimum weight must be within [0, 1], got {min_weight}")
        self.capacity = capacity
        self.min_weight = min_weight
        self.entries: list[ReplayEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def decisions(self) -> int:
        """Decisions held, over all entries."""
        return sum(len(entry) for entry in self.entries)

    def add_groups(
        self,
        trajectories: Sequence[Trajectory],
        success: np.ndarray,
        instructions: dict[str, str],
        action_dim: int,
    ) -> int:
        """Keep the successes with a weight above 0 (class docstring); returns how many were added.

        Args:
            trajectories: ``G * n`` trajectories, group by group.
            success: bool ``[G, n]``, their successes.
            instructions: task name -> instruction.
            action_dim: D, to map each token to its chunk action (tokens of unexecuted actions are masked).

        """
        success = np.asarray(success, bool)
        if success.ndim != 2 or success.size != len(trajectories):
            raise ValueError(
                f"success must be [groups, n] over {len(trajectories)} trajectories, got {success.shape}"
            )
        weights = np.maximum(1.0 - success.mean(axis=1), self.min_weight)
        added = 0
        for index in np.flatnonzero(success.reshape(-1)):
            weight = float(weights[index // success.shape[1]])
            if weight <= 0:
                continue
            trajectory = trajectories[index]
            self.entries.append(
                ReplayEntry(
                    observations={key: value.copy() for key, value in trajectory.observations.items()},
                    instruction=instructions[trajectory.task],
                    tokens=trajectory.tokens.astype(np.int64),
                    mask=trajectory.executed_mask(action_dim),
                    weight=weight,
                )
            )
            added += 1
        del self.entries[: max(0, len(self.entries) - self.capacity)]
        return added

    def sample(self, size: int, generator: torch.Generator) -> ReplayMinibatch:
        """``size`` decisions drawn uniformly (with replacement) over every decision held."""
        if not self.entries:
            raise ValueError("the self-imitation buffer is empty")
        lengths = np.array([len(entry) for entry in self.entries])
        ends = np.cumsum(lengths)
        flat = torch.randint(int(ends[-1]), (size,), generator=generator).numpy()
        entry_index = np.searchsorted(ends, flat, side="right")
        row_index = flat - (ends - lengths)[entry_index]
        picked = [(self.entries[e], r) for e, r in zip(entry_index, row_index, strict=True)]
        keys = list(self.entries[0].observations)
        return ReplayMinibatch(
            observations={
                key: np.stack([entry.observations[key][row] for entry, row in picked]) for key in keys
            },
            tasks=[entry.instruction for entry, _ in picked],
            tokens=torch.from_numpy(np.stack([entry.tokens[row] for entry, row in picked])),
            mask=torch.from_numpy(np.stack([entry.mask[row] for entry, row in picked])),
            weights=torch.tensor([entry.weight for entry, _ in picked], dtype=torch.float32),
        )

    # ------------------------------------------------------------------------------------------------
    # Persistence: one safetensors file, the entries concatenated, their boundaries in the metadata.

    def save(self, directory: Path) -> None:
        """Write the buffer to ``directory / FILE_NAME`` (no pickle)."""
        metadata = {
            "instructions": json.dumps([entry.instruction for entry in self.entries]),
            "weights": json.dumps([entry.weight for entry in self.entries]),
            "lengths": json.dumps([len(entry) for entry in self.entries]),
        }
        tensors: dict[str, np.ndarray] = {}
        if self.entries:
            tensors = {
                "tokens": np.concatenate([entry.tokens for entry in self.entries]),
                "mask": np.concatenate([entry.mask for entry in self.entries]),
                **{
                    f"observations/{key}": np.concatenate([entry.observations[key] for entry in self.entries])
                    for key in self.entries[0].observations
                },
            }
        save_file(tensors, str(directory / FILE_NAME), metadata=metadata)

    def load(self, directory: Path) -> None:
        """Replace the entries with those saved by `save` in ``directory``."""
        path = directory / FILE_NAME
        if not path.exists():
            raise ValueError(
                f"{directory} holds no self-imitation buffer: it was saved by a run without "
                "rl.self_imitation_coef; resume with the settings the run started with"
            )
        with safe_open(str(path), "np") as handle:
            metadata = handle.metadata() or {}
        try:
            instructions = json.loads(metadata["instructions"])
            weights = json.loads(metadata["weights"])
            lengths = json.loads(metadata["lengths"])
        except (KeyError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{path} is not a self-imitation buffer ({error}); delete {directory} to restart the RL stage"
            ) from error
        tensors = load_file(str(path))
        ends = np.cumsum(lengths) if isinstance(lengths, list) else np.zeros(0)
        if (
            not all(isinstance(value, list) for value in (instructions, weights, lengths))
            or not len(instructions) == len(weights) == len(lengths)
            or (lengths and not {"tokens", "mask"} <= set(tensors))
            or (lengths and any(len(value) != ends[-1] for value in tensors.values()))
        ):
            raise ValueError(
                f"{path} is inconsistent (entry counts or lengths disagree); delete {directory} to restart "
                "the RL stage"
            )
        starts = ends - np.asarray(lengths, int)
        prefix = "observations/"
        self.entries = [
            ReplayEntry(
                observations={
                    key[len(prefix) :]: value[start:end]
                    for key, value in tensors.items()
                    if key.startswith(prefix)
                },
                instruction=str(instruction),
                tokens=tensors["tokens"][start:end],
                mask=tensors["mask"][start:end],
                weight=float(weight),
            )
            for instruction, weight, start, end in zip(instructions, weights, starts, ends, strict=True)
        ]
