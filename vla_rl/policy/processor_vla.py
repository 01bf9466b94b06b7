"""Turns env / dataset observations into model inputs, and model actions back into env actions.

Inputs (batched, LeRobot keys): ``observation.images.<camera>`` uint8 ``[B, H, W, 3]`` (or float
``[B, 3, H, W]`` in [0, 1] as LeRobotDataset returns them), ``observation.state`` ``[B, S]``, ``task``
(B strings). Outputs: ``images`` float ``[B, C, 3, s, s]`` in [0, 1], ``state`` normalized ``[B, S]``,
``text_ids`` int64 ``[B, L]`` and ``text_mask`` bool ``[B, L]`` (True for real tokens).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from sim.core import OBS_STATE, TASK, image_key
from vla_rl.policy.configuration_vla import VLAConfig

PAD_ID = 0


def hash_words(texts: Sequence[str], vocab_size: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-level hashing tokenizer (the tiny backbone's): ids ``[B, L]`` in [1, vocab), mask ``[B, L]``."""
    ids = torch.zeros((len(texts), max_tokens), dtype=torch.long)
    for row, text in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", text.lower())[:max_tokens]
        for column, word in enumerate(words):
            ids[row, column] = 1 + zlib.crc32(word.encode()) % (vocab_size - 1)
    return ids, ids != PAD_ID


class VLAProcessor:
    """Normalization and tokenization for one `VLAConfig` (stateless apart from the config)."""

    def __init__(self, config: VLAConfig, text_tokenizer: Any = None) -> None:
        self.config = config
        self.text_tokenizer = text_tokenizer  # a `transformers` tokenizer for pretrained text encoders
        self.state_mean = torch.tensor(config.state_mean, dtype=torch.float32)
        self.state_std = torch.tensor(config.state_std, dtype=torch.float32)
        self.action_low = torch.tensor(config.action_low, dtype=torch.float32)
        self.action_high = torch.tensor(config.action_high, dtype=torch.float32)

    def __call__(
        self, observation: dict[str, Any], device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Model inputs for a batched observation (see the module docstring)."""
        missing = [
            key for key in (*map(image_key, self.config.cameras), OBS_STATE, TASK) if key not in observation
        ]
        if missing:
            raise KeyError(f"observation lacks {missing}; the policy expects cameras {self.config.cameras}")
        images = torch.stack([self._image(observation[image_key(c)]) for c in self.config.cameras], dim=1)
        state = torch.as_tensor(np.asarray(observation[OBS_STATE]), dtype=torch.float32)
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise ValueError(
                f"observation.state must be [B, {self.config.state_dim}], got {tuple(state.shape)}"
            )
        if not torch.isfinite(state).all():
            raise ValueError("observation.state contains NaN or infinite values")
        tasks = [observation[TASK]] if isinstance(observation[TASK], str) else list(observation[TASK])
        text_ids, text_mask = self.tokenize(tasks)
        return {
            "images": images.to(device),
            "state": ((state - self.state_mean) / self.state_std).to(device),
            "text_ids": text_ids.to(device),
            "text_mask": text_mask.to(device),
        }

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Instruction token ids and mask, ``[B, L]`` each."""
        if self.text_tokenizer is None:
            return hash_words(texts, self.config.text_vocab_size, self.config.max_text_tokens)
        encoded = self.text_tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
        )
        return encoded["input_ids"], encoded["attention_mask"].bool()

    def _image(self, frames: Any) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` or float ``[B, 3, H, W]`` -> float ``[B, 3, s, s]`` in [0, 1]."""
        tensor = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        if tensor.ndim != 4:
            raise ValueError(
                f"images must be batched [B, H, W, 3] or [B, 3, H, W], got {tuple(tensor.shape)}"
            )
        if tensor.dtype == torch.uint8:
            tensor = tensor.permute(0, 3, 1, 2).float() / 255.0
        size = self.config.image_size
        if tensor.shape[-2:] != (size, size):
            tensor = F.interpolate(
                tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        return tensor

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Env / dataset actions ``[..., D]`` -> [-1, 1] per dimension (clipped)."""
        scaled = 2.0 * (actions - self.action_low) / (self.action_high - self.action_low) - 1.0
        return scaled.clamp(-1.0, 1.0)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """[-1, 1] actions ``[..., D]`` -> env units."""
        return self.action_low + (actions + 1.0) * (self.action_high - self.action_low) / 2.0
