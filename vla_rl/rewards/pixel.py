"""The pixel baseline: SRPO's clustering and shaping on downsampled raw frames instead of world-model latents.

It answers "does the world model's latent space matter?": same reward rule, an embedding with no learning.
"""

from __future__ import annotations

import cv2
import numpy as np

from vla_rl.rewards.srpo import SRPOReward, SRPORewardConfig, reward_embedder
from vla_rl.world_model.base import ClipEncoder


class PixelClipEncoder:
    """A `ClipEncoder` on raw pixels: frames area-averaged to ``size x size``, then averaged over time."""

    def __init__(self, size: int = 16) -> None:
        """Downsample frames to ``size x size`` pixels (D = size * size * 3)."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size

    @property
    def embedding_dim(self) -> int:
        """D = size * size * 3."""
        return self.size * self.size * 3

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips ``[N, F, H, W, 3]`` -> float32 ``[N, size * size * 3]``, values in [0, 1].

        Each frame is resized with area interpolation (``cv2.INTER_AREA``), scaled to [0, 1] and
        flattened (row-major, channels last); a clip's latent is the mean over its F frames.
        """
        if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"clips must be uint8 [N, F, H, W, 3], got {clips.dtype} {list(clips.shape)}")
        count, num_frames = clips.shape[:2]
        if num_frames == 0:
            raise ValueError("clips must have at least one frame (F >= 1)")
        small = np.zeros((count * num_frames, self.size, self.size, 3), dtype=np.float32)
        for i, frame in enumerate(clips.reshape(count * num_frames, *clips.shape[2:])):
            small[i] = cv2.resize(
                frame.astype(np.float32), (self.size, self.size), interpolation=cv2.INTER_AREA
            )
        return (small / 255.0).reshape(count, num_frames, self.embedding_dim).mean(axis=1)


def build_pixel_reward(encoder: ClipEncoder | None, config: SRPORewardConfig) -> SRPOReward:
    """The ``pixel`` registry entry: `SRPOReward` over a `PixelClipEncoder` (``encoder`` is not used)."""
    return SRPOReward(reward_embedder(PixelClipEncoder(config.pixel_size), config), config)
