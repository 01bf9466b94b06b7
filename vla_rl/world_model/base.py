"""What a reward model needs from a world model: video clips -> one latent vector per clip."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ClipEncoder(Protocol):
    """Encodes short videos into latent vectors (mean-pooled over frames and patches)."""

    @property
    def embedding_dim(self) -> int:
        """D, the size of one clip's latent vector."""
        ...

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips ``[N, F, H, W, 3]`` -> float32 latents ``[N, D]``."""
        ...
