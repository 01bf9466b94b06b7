"""The trajectory type that flows from rollouts to reward models and RL updates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Trajectory:
    """One finished rollout of a chunked policy in a batched env.

    T is the number of env steps taken, S the number of policy decisions (one per executed chunk),
    K x D the action tokens of one chunk.

    Attributes:
        task: task name.
        task_id: index of the task in the run's task list (groups trajectories per task).
        init_state_id: index into the split's initial states.
        success: whether the task was solved.
        frames: uint8 ``[T + 1, H, W, 3]``: the main camera before the first step and after every
            step (what world models and progress rewards see).
        actions: float32 ``[T, D]``: the actions executed.
        tokens: int64 ``[S, K * D]``: the action tokens of each decision (empty for scripted rollouts).
        log_probs: float32 ``[S, K * D]``: their log-probs under the behaviour policy.
        executed: int64 ``[S]``: actions of each chunk actually executed (the rest of a chunk is never
            run: re-planning or the episode's end cut it; its tokens carry no credit).
        observations: per decision, the observation the policy saw: ``observation.images.<cam>`` uint8
            ``[S, H, W, 3]`` and ``observation.state`` float32 ``[S, state_dim]``.

    """

    task: str
    task_id: int
    init_state_id: int
    success: bool
    frames: np.ndarray
    actions: np.ndarray
    tokens: np.ndarray
    log_probs: np.ndarray
    executed: np.ndarray
    observations: dict[str, np.ndarray]

    def executed_mask(self, action_dim: int) -> np.ndarray:
        """Bool ``[S, K * D]``: True for the tokens of the chunk actions that were executed."""
        action_index = np.arange(self.tokens.shape[1]) // action_dim  # the chunk action of each token
        return action_index[None, :] < self.executed[:, None]

    @property
    def length(self) -> int:
        """Env steps taken (T)."""
        return len(self.actions)
