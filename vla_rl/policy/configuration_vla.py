"""Configuration of the VLA policy: architecture, decoding and normalization statistics.

Serialized as plain JSON (`to_json` / `from_json`): loading a checkpoint's config only ever builds this
dataclass, with every key and type checked, and never instantiates anything named in the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

BACKBONES = ("tiny", "small", "hf")
DECODINGS = ("parallel", "autoregressive")


@dataclass
class VLAConfig:
    """The VLA policy's configuration.

    Attributes:
        action_dim: D, action dimensions (arm 7, car 2, drone 4); taken from the dataset / env.
        state_dim: proprioceptive state size; taken from the dataset / env.
        chunk_size: K, future actions predicted per forward pass.
        num_bins: action bins per dimension over [-1, 1].
        cameras: camera names, in the order their images are fed to the model.
        image_size: square side the images are resized to, pixels.
        backbone: ``tiny`` (from scratch), ``small`` (packaged pretrained encoders) or ``hf``
            (a `transformers` vision-language model from ``backbone_path``).
        backbone_path: local directory of the ``hf`` backbone.
        freeze_backbone: keep pretrained encoder weights fixed (``small`` and ``hf``).
        image_token_grid: G; the pretrained backbones (``small``, ``hf``) average-pool each camera's
            feature map to G x G image tokens.
        keypoints_per_camera: spatial-softmax keypoint tokens per camera (``tiny`` backbone).
        hidden_dim: width of the action decoder.
        num_layers: transformer blocks in the action decoder.
        num_heads: attention heads.
        dropout: dropout in the decoder.
        decoding: ``parallel`` (all K x D tokens in one pass) or ``autoregressive`` (KV cache).
        value_head: add a value head (PPO).
        use_state: feed the proprioceptive state to the model as one observation token. False: the
            model sees only the cameras and the instruction (the state is still validated). Cloning a
            few demonstrations with the state learns to copy the arm's starting posture instead of
            reading the scene (README, "Session 7"); without it the scene is all there is to go by.
        environment_state_dim: E of the auxiliary head that predicts the simulator's environment state
            (`sim.core`, e.g. a block's pose) from the observation tokens, an SFT target that makes the
            encoder find the objects; 0: no head. Taken from the demonstrations. Never used when acting.
        text_vocab_size: hashed word vocabulary of the tiny text encoder.
        max_text_tokens: instruction tokens kept.
        state_mean: per-dimension mean of the state (normalization), length ``state_dim``.
        state_std: per-dimension std of the state, length ``state_dim``.
        action_low: per-dimension action value mapped to -1, length ``action_dim``.
        action_high: per-dimension action value mapped to +1, length ``action_dim``.

    """

    action_dim: int = 7
    state_dim: int = 8
    chunk_size: int = 8
    num_bins: int = 256
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    image_size: int = 64
    backbone: str = "tiny"
    backbone_path: str | None = None
    freeze_backbone: bool = True
    image_token_grid: int = 2
    keypoints_per_camera: int = 16
    hidden_dim: int = 128
    num_layers: int = 3
    num_heads: int = 4
    dropout: float = 0.0
    decoding: str = "parallel"
    value_head: bool = False
    use_state: bool = True
    environment_state_dim: int = 0
    text_vocab_size: int = 4096
    max_text_tokens: int = 16
    state_mean: list[float] = field(default_factory=list)
    state_std: list[float] = field(default_factory=list)
    action_low: list[float] = field(default_factory=list)
    action_high: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in (
            "action_dim",
            "state_dim",
            "chunk_size",
            "image_size",
            "image_token_grid",
            "keypoints_per_camera",
            "hidden_dim",
            "num_layers",
            "num_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if self.environment_state_dim < 0:
            raise ValueError(f"policy.environment_state_dim must be >= 0, got {self.environment_state_dim}")
        if self.num_bins < 2:
            raise ValueError(f"policy.num_bins must be >= 2, got {self.num_bins}")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"policy.backbone={self.backbone!r} is not valid; choose one of: {', '.join(BACKBONES)}"
            )
        if self.decoding not in DECODINGS:
            raise ValueError(
                f"policy.decoding={self.decoding!r} is not valid; choose one of: {', '.join(DECODINGS)}"
            )
        if self.backbone == "hf" and not self.backbone_path:
            raise ValueError(
                "policy.backbone=hf needs policy.backbone_path=<local transformers model directory>"
            )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"policy.hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if not self.cameras:
            raise ValueError("policy.cameras must name at least one camera")
        if not self.state_mean:
            self.state_mean = [0.0] * self.state_dim
        if not self.state_std:
            self.state_std = [1.0] * self.state_dim
        if not self.action_low:
            self.action_low = [-1.0] * self.action_dim
        if not self.action_high:
            self.action_high = [1.0] * self.action_dim
        for name, size in (
            ("state_mean", self.state_dim),
            ("state_std", self.state_dim),
            ("action_low", self.action_dim),
            ("action_high", self.action_dim),
        ):
            if len(getattr(self, name)) != size:
                raise ValueError(f"policy.{name} must have {size} values, got {len(getattr(self, name))}")
        if any(std <= 0 for std in self.state_std):
            raise ValueError("policy.state_std values must be > 0")
        if any(high <= low for low, high in zip(self.action_low, self.action_high, strict=True)):
            raise ValueError("policy.action_high must exceed action_low in every dimension")

    @property
    def tokens_per_chunk(self) -> int:
        """K x D."""
        return self.chunk_size * self.action_dim

    def to_json(self) -> str:
        """The config as JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VLAConfig:
        """Parse and validate a config written by `to_json`; unknown keys and wrong types are errors."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"policy config is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise ValueError("policy config must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown policy config key(s) {unknown}; known keys: {sorted(fields)}")
        for name, value in values.items():
            _check_type(name, value, fields[name].type)
        return cls(**values)


def _is(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """Check a JSON value against a field annotation: int, float, bool, str, str | None or list[...]."""
    annotation = str(annotation)
    if annotation.startswith("list["):
        ok = isinstance(value, list) and all(_is(item, annotation[5:-1]) for item in value)
    elif annotation == "str | None":
        ok = value is None or _is(value, "str")
    else:
        ok = _is(value, annotation)
    if not ok:
        raise ValueError(f"policy config key {name!r} must be {annotation}, got {value!r}")
