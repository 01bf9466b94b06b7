"""Validation of the clips every `ClipEncoder` takes."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_clips(clips: Any) -> None:
    """Raise a `ValueError` naming the expected shape unless ``clips`` is uint8 ``[N, F, H, W, 3]``."""
    if not isinstance(clips, np.ndarray):
        raise ValueError(f"clips must be a uint8 numpy array [N, F, H, W, 3], got {type(clips).__name__}")
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[1] == 0:
        raise ValueError(
            f"clips must be a uint8 array [N, F, H, W, 3] with F >= 1, got {clips.dtype} {list(clips.shape)}"
        )
