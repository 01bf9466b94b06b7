"""Test doubles for the reward tests: trajectories from frames, and a ClipEncoder that counts its calls."""

from __future__ import annotations

import numpy as np

from vla_rl.data.trajectory import Trajectory


def make_trajectory(frames: np.ndarray, success: bool, task_id: int = 0) -> Trajectory:
    """A trajectory with ``frames`` uint8 [T + 1, H, W, 3] and empty actions / tokens."""
    steps = len(frames) - 1
    return Trajectory(
        task=f"task_{task_id}",
        task_id=task_id,
        init_state_id=0,
        success=success,
        frames=frames,
        actions=np.zeros((steps, 7), dtype=np.float32),
        tokens=np.zeros((0, 56), dtype=np.int64),
        log_probs=np.zeros((0, 56), dtype=np.float32),
        executed=np.zeros(0, dtype=np.int64),
        observations={},
    )


def constant_frames(value: int, length: int = 5, size: int = 8) -> np.ndarray:
    """``length`` frames of one grey level, uint8 [length, size, size, 3]."""
    return np.full((length, size, size, 3), value, dtype=np.uint8)


class CountingEncoder:
    """Latent = per-channel mean of a clip in [0, 1] (D = 3); records every clip it is given."""

    embedding_dim = 3

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        self.calls.append(clips)
        return (clips.mean(axis=(1, 2, 3)) / 255.0).astype(np.float32)

    @property
    def clips_encoded(self) -> int:
        return sum(len(clips) for clips in self.calls)
