"""Running a `VLAPolicy` in a batched env: one action chunk per env, executed open-loop, then re-plan."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vla_rl.policy.modeling_vla import VLAPolicy


class ChunkActor:
    """Calls the policy every ``execute_steps`` env steps and feeds the chunk's actions one by one.

    All N envs re-plan together, which holds when they start together (``reset`` after each env
    reset; `vla_rl.data.episodes.run_episodes` does that through its ``on_reset`` hook).
    With ``temperature`` > 0 the chunks are sampled; a ``seed`` makes the samples reproducible (its own
    generator, so torch's global one is neither used nor advanced).
    """

    def __init__(
        self,
        policy: VLAPolicy,
        temperature: float = 0.0,
        execute_steps: int | None = None,
        seed: int | None = None,
    ) -> None:
        chunk_size = policy.config.chunk_size
        self.policy = policy
        self.temperature = temperature
        self.generator = None if seed is None else torch.Generator(policy.device).manual_seed(seed)
        self.execute_steps = execute_steps or chunk_size
        if not 1 <= self.execute_steps <= chunk_size:
            raise ValueError(f"execute_steps must be within [1, {chunk_size}], got {execute_steps}")
        self._step = 0
        self._chunk: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the current chunks (call after the env is reset)."""
        self._step = 0
        self._chunk = None

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """Actions ``[N, D]`` for the current step."""
        offset = self._step % self.execute_steps
        if offset == 0 or self._chunk is None:
            actions, _, _ = self.policy.act(observation, self.temperature, self.generator)
            self._chunk = actions.numpy()
            offset = 0
        self._step += 1
        return self._chunk[:, offset]
