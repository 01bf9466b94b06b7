"""V-JEPA 2 (Meta's self-supervised video encoder) as a `ClipEncoder`, from a local directory.

The directory is what ``VJEPA2Model.save_pretrained`` writes (a copy of e.g.
``facebook/vjepa2-vitl-fpc64-256``): ``config.json`` with ``"model_type": "vjepa2"`` and safetensors
weights, plus, optionally, the ``video_preprocessor_config.json`` of its ``VJEPA2VideoProcessor``
(without one, the processor's defaults for the model's ``crop_size`` are used).

Preprocessing is the video processor's: resize the short side to ``crop_size * 256 / 224``, center-crop
to ``crop_size`` (the model's rotary position grid is ``crop_size / patch_size`` patches a side), scale
to [0, 1] and normalize with the ImageNet mean and std. The model embeds ``tubelet_size`` consecutive
frames per token, so a clip's F frames are padded to a multiple of ``tubelet_size`` by repeating its
last frame (the model itself would drop the remainder). Any number of tubelets works: the rotary
position embeddings extrapolate over time. The embedding is the encoder's last hidden state, without
the predictor, mean-pooled over all tokens (patches and tubelets).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vla_rl.world_model.clips import check_clips

PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


class VJEPA2ClipEncoder:
    """A V-JEPA 2 encoder loaded with `transformers`; implements `ClipEncoder`.

    Args:
        path: local V-JEPA 2 model directory (see the module docstring).
        device: where the model runs.
        dtype: the model's parameter dtype (``torch.bfloat16`` suits GPUs); latents are returned as
            float32.
        batch_size: clips encoded per forward pass.

    Raises:
        FileNotFoundError: ``path`` or its ``config.json`` does not exist.
        ValueError: ``path`` holds something other than a V-JEPA 2 model, or its video processor's
            crop size differs from the model's.

    """

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 8,
    ) -> None:
        directory = Path(path)
        expected = (
            "expected a local V-JEPA 2 model directory (config.json with model_type 'vjepa2' and "
            "model.safetensors, as VJEPA2Model.save_pretrained writes them)"
        )
        if not directory.is_dir():
            raise FileNotFoundError(f"V-JEPA 2 directory {directory} does not exist: {expected}")
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} has no config.json: {expected}")
        try:
            model_type = json.loads((directory / "config.json").read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError):
            raise ValueError(f"{directory / 'config.json'} is not a JSON object: {expected}") from None
        if model_type != "vjepa2":
            raise ValueError(f"{directory} holds a model of type {model_type!r}, not V-JEPA 2: {expected}")

        from transformers import VJEPA2Model, VJEPA2VideoProcessor

        self.model = VJEPA2Model.from_pretrained(
            directory, dtype=dtype, use_safetensors=True, local_files_only=True
        )
        self.model.to(device).eval()  # type: ignore[arg-type]  # mypy misreads the @wraps of Module.to
        crop_size = self.model.config.crop_size
        if any((directory / name).is_file() for name in PROCESSOR_FILES):
            self.processor = VJEPA2VideoProcessor.from_pretrained(directory, local_files_only=True)
        else:
            self.processor = VJEPA2VideoProcessor(crop_size=crop_size)
        if self.processor.crop_size.height != crop_size or self.processor.crop_size.width != crop_size:
            raise ValueError(
                f"{directory}: the video processor crops to {self.processor.crop_size}, but the model "
                f"expects {crop_size} x {crop_size} frames"
            )
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        map_location: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> VJEPA2ClipEncoder:
        """The same as the constructor, named like `WorldModel.from_pretrained` (see `load_clip_encoder`)."""
        return cls(directory, map_location, dtype)

    @property
    def embedding_dim(self) -> int:
        """D, the model's hidden size."""
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """Mean-pooled V-JEPA 2 latents of video clips.

        Args:
            clips: uint8 ``[N, F, H, W, 3]``; F is padded to a multiple of ``tubelet_size`` by
                repeating the last frame.

        Returns:
            float32 ``[N, D]``: the encoder's last hidden state averaged over all tokens.

        """
        check_clips(clips)
        tubelet = self.model.config.tubelet_size
        padding = -clips.shape[1] % tubelet
        if padding:
            clips = np.concatenate([clips, np.repeat(clips[:, -1:], padding, axis=1)], axis=1)
        embeddings = []
        for start in range(0, len(clips), self.batch_size):
            videos = list(clips[start : start + self.batch_size])
            pixels = self.processor(videos, return_tensors="pt", device=self.device)["pixel_values_videos"]
            hidden = self.model.get_vision_features(pixels.to(self.device, self.dtype))  # [B, tokens, D]
            embeddings.append(hidden.float().mean(dim=1).cpu())
        return (torch.cat(embeddings) if embeddings else torch.zeros(0, self.embedding_dim)).numpy()
