"""Building a policy from the Hydra policy config and a dataset's shapes and statistics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from vla_rl.config import PolicyConfig
from vla_rl.data.frames import FrameDataset
from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.modeling_vla import VLAPolicy


def build_policy(
    config: PolicyConfig, frames: FrameDataset, cameras: list[str], action_space: gym.Space
) -> VLAPolicy:
    """A new policy sized for ``frames`` (action and state dims, normalization), or ``config.path`` loaded.

    ``action_space`` is the env's (per-env) action space: the policy's action bins span its bounds, see
    `action_range`.
    """
    if config.path is not None:
        return VLAPolicy.from_pretrained(config.path)
    action_low, action_high = action_range(frames, action_space)
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
        use_state=config.use_state,
        environment_state_dim=0 if frames.environment_state is None else frames.environment_state.shape[1],
        state_mean=frames.state_mean.tolist(),
        state_std=frames.state_std.tolist(),
        action_low=action_low.tolist(),
        action_high=action_high.tolist(),
    )
    return VLAPolicy(vla_config)


def action_range(frames: FrameDataset, action_space: gym.Space) -> tuple[np.ndarray, np.ndarray]:
    """What the policy's lowest and highest action bins mean, per dimension ``[D]`` each.

    The env's bounds where they are finite, so that the policy can output every valid action (RL must be
    able to explore beyond the demonstrations: one demonstration of ``close_drawer`` never moves in -y,
    and bins spanning only its min/max could not either); the demonstrations' min/max elsewhere.

    Raises:
        ValueError: the env's actions are not a box, or their size is not the demonstrations'.

    """
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"the policy emits continuous actions; the env's action space is {action_space}")
    data_low, data_high = frames.action_low.numpy(), frames.action_high.numpy()
    if action_space.shape != data_low.shape:
        raise ValueError(
            f"the demonstrations have {data_low.shape[0]}-D actions but the env's action space is "
            f"{action_space.shape}: record the demonstrations in this env (and action mode)"
        )
    env_low, env_high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
    return np.where(np.isfinite(env_low), env_low, data_low), np.where(
        np.isfinite(env_high), env_high, data_high
    )
