"""Action tokenizer: 256 uniform bins per dimension over [-1, 1] (OpenVLA's convention)."""

from __future__ import annotations

import torch


class ActionTokenizer:
    """Maps normalized actions in [-1, 1] to bin indices and back to bin centres.

    Bin ``b`` covers ``[-1 + b w, -1 + (b + 1) w)`` with ``w = 2 / num_bins``; values outside [-1, 1] are
    clipped first. Decoding returns the bin centre, so a round trip is exact to within ``w / 2``.
    """

    def __init__(self, num_bins: int = 256) -> None:
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_bins = num_bins
        self.bin_width = 2.0 / num_bins

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Float actions ``[..., D]`` -> int64 tokens ``[..., D]`` in ``[0, num_bins)``."""
        scaled = (actions.clamp(-1.0, 1.0) + 1.0) / self.bin_width
        return scaled.floor().long().clamp(0, self.num_bins - 1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Int tokens ``[..., D]`` -> float32 bin centres ``[..., D]``."""
        if tokens.min() < 0 or tokens.max() >= self.num_bins:
            raise ValueError(
                f"action tokens must be in [0, {self.num_bins}), got [{tokens.min()}, {tokens.max()}]"
            )
        return -1.0 + (tokens.float() + 0.5) * self.bin_width
