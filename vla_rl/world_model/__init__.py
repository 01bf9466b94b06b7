"""Latent world models that embed video clips for reward models (`ClipEncoder`).

- ``jepa``: our own JEPA world model (`vla_rl.world_model.jepa`), trained on our rollouts with
  `vla_rl.world_model.training.train_world_model`;
- ``vjepa2``: Meta's V-JEPA 2 from a local `transformers` directory (`vla_rl.world_model.vjepa2`).

Both load with ``from_pretrained(directory, map_location)``; `load_clip_encoder` picks one by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sim.registry import Registry
from vla_rl.world_model.base import ClipEncoder

if TYPE_CHECKING:
    import torch

CLIP_ENCODERS = Registry("clip encoder")
CLIP_ENCODERS.register("jepa", "vla_rl.world_model.jepa:WorldModel")
CLIP_ENCODERS.register("vjepa2", "vla_rl.world_model.vjepa2:VJEPA2ClipEncoder")


def load_clip_encoder(kind: str, path: str | Path, device: str | torch.device = "cpu") -> ClipEncoder:
    """Load the ``kind`` clip encoder (``jepa`` or ``vjepa2``) saved in ``path`` onto ``device``."""
    encoder: ClipEncoder = CLIP_ENCODERS.get(kind).from_pretrained(path, map_location=device)
    return encoder
