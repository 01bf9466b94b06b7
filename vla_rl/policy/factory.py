"""Building a policy from the Hydra policy config and a dataset's shapes and statistics."""

from __future__ import annotations

from vla_rl.config import PolicyConfig
from vla_rl.data.frames import FrameDataset
from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.modeling_vla import VLAPolicy


def build_policy(config: PolicyConfig, frames: FrameDataset, cameras: list[str]) -> VLAPolicy:
    """A new policy sized for ``frames`` (action and state dims, normalization), or ``config.path`` loaded."""
    if config.path is not None:
        return VLAPolicy.from_pretrained(config.path)
    vla_config = VLAConfig(
        action_dim=frames.action_chunks.shape[-1],
        state_dim=frames.state.shape[-1],
        chunk_size=config.chunk_size,
        cameras=cameras,
        image_size=config.image_size,
        backbone=config.backbone,
        backbone_path=config.backbone_path,
        freeze_backbone=config.freeze_backbone,
        image_token_grid=config.image_token_grid,
        keypoints_per_camera=config.keypoints_per_camera,
        hidden_dim=config.hidden_dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        dropout=config.dropout,
        decoding=config.decoding,
        value_head=config.value_head,
        state_mean=frames.state_mean.tolist(),
        state_std=frames.state_std.tolist(),
        action_low=frames.action_low.tolist(),
        action_high=frames.action_high.tolist(),
    )
    return VLAPolicy(vla_config)
