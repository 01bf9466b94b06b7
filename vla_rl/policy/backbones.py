"""Observation encoders: camera images + instruction + state -> observation tokens ``[B, T_obs, H]``.

- ``tiny``: a from-scratch CNN (one token per 16x16 pixels after pooling) per camera, hashed word
  embeddings pooled into one instruction token, and one state token. A few million parameters;
  trains on a CPU in minutes.
- ``small``: pretrained encoders that ship inside PyPI packages and load offline (EfficientNet-Lite0 for
  images, all-MiniLM-L6-v2 for the instruction), frozen or fine-tuned.
- ``hf``: a `transformers` vision-language model loaded from a local directory.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vla_rl.policy.configuration_vla import VLAConfig


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal position table ``[length, dim]``."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class TinyEncoder(nn.Module):
    """From-scratch encoder: per-camera CNN patch tokens, one instruction token, one state token."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        if config.image_size % 16:
            raise ValueError(
                f"the tiny backbone needs policy.image_size divisible by 16, got {config.image_size}"
            )
        hidden = config.hidden_dim
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2),
            nn.GroupNorm(8, 32),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GroupNorm(8, 64),
            nn.GELU(),
            nn.Conv2d(64, hidden, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AvgPool2d(2),
        )
        patches = (config.image_size // 16) ** 2
        self.patch_position = nn.Parameter(torch.randn(patches, hidden) * 0.02)
        self.camera_embedding = nn.Parameter(torch.randn(len(config.cameras), hidden) * 0.02)
        self.word_embedding = nn.Embedding(config.text_vocab_size, hidden, padding_idx=0)
        self.register_buffer(
            "word_position", sinusoidal_positions(config.max_text_tokens, hidden), persistent=False
        )
        self.state_projection = nn.Sequential(
            nn.Linear(config.state_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.type_embedding = nn.Parameter(torch.randn(3, hidden) * 0.02)  # image, text, state

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Processor outputs -> tokens ``[B, C * (s/16)^2 + 2, H]``."""
        images = inputs["images"]
        batch, cameras = images.shape[:2]
        features = self.cnn(images.flatten(0, 1))  # [B*C, H, s/16, s/16]
        patches = features.flatten(2).transpose(1, 2) + self.patch_position
        patches = patches.view(batch, cameras, -1, patches.shape[-1]) + self.camera_embedding[None, :, None]
        image_tokens = patches.flatten(1, 2) + self.type_embedding[0]
        mask = inputs["text_mask"].unsqueeze(-1).float()
        words = (self.word_embedding(inputs["text_ids"]) + self.word_position) * mask
        text_token = (
            words.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1.0) + self.type_embedding[1]
        )
        state_token = self.state_projection(inputs["state"]).unsqueeze(1) + self.type_embedding[2]
        return torch.cat([image_tokens, text_token, state_token], dim=1)


def build_encoder(config: VLAConfig) -> tuple[nn.Module, Any]:
    """The encoder for ``config.backbone`` and its text tokenizer (None: the processor hashes words)."""
    if config.backbone == "tiny":
        return TinyEncoder(config), None
    raise NotImplementedError(f"backbone {config.backbone!r} is not available yet")
