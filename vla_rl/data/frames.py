"""A LeRobotDataset held in memory as training frames: images at the policy's size, state, action chunks.

Every frame ``t`` of an episode gets the chunk of the next K actions ``a_t .. a_{t+K-1}``; past the
episode's end the chunk is padded with its last action and those positions are masked out of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from sim.core import ACTION, OBS_ENV_STATE, OBS_STATE, TASK, image_key
from vla_rl.data.episodes import Episode


@dataclass
class FrameDataset:
    """Training frames (all tensors on CPU).

    Attributes:
        images: uint8 ``[F, C, 3, s, s]``.
        state: float32 ``[F, S]`` (raw, not normalized).
        action_chunks: float32 ``[F, K, D]`` (raw).
        chunk_mask: bool ``[F, K]``, False where the chunk runs past the episode's end.
        task: the instruction of each frame (F strings).
        episode: int64 ``[F]``, the dataset episode index of each frame.
        state_mean / state_std: ``[S]`` statistics over the loaded frames.
        action_low / action_high: ``[D]`` per-dimension min and max of the loaded actions.
        environment_state: float32 ``[F, E]`` privileged simulator state (`sim.core`), when the
            demonstrations recorded it: a target for SFT's auxiliary loss, never a policy input.

    """

    images: torch.Tensor
    state: torch.Tensor
    action_chunks: torch.Tensor
    chunk_mask: torch.Tensor
    task: list[str]
    episode: torch.Tensor
    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_low: torch.Tensor
    action_high: torch.Tensor
    environment_state: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.state)


def load_frames(
    root: str | Path,
    repo_id: str,
    cameras: list[str],
    image_size: int,
    chunk_size: int,
    episodes_per_task: int | None = None,
) -> FrameDataset:
    """Read a LeRobotDataset into memory, keeping the first ``episodes_per_task`` episodes of each task."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(
            f"no LeRobotDataset at {root} (meta/info.json missing); run vla-rl-collect first"
        )
    dataset = LeRobotDataset(repo_id, root=root)
    features = dataset.meta.features
    for key in (*map(image_key, cameras), OBS_STATE, ACTION):
        if key not in features:
            raise ValueError(f"dataset {root} has no feature {key!r}; it has {sorted(features)}")
    with_environment = OBS_ENV_STATE in features
    selected = _select_episodes(dataset, episodes_per_task)
    dataset = LeRobotDataset(repo_id, root=root, episodes=selected)
    images, states, actions, tasks, episodes, environment = [], [], [], [], [], []
    for index in tqdm(range(len(dataset)), desc="loading demonstrations", unit="frame"):
        frame = dataset[index]
        views = torch.stack([frame[image_key(camera)] for camera in cameras])  # [C, 3, H, W] float in [0, 1]
        if views.shape[-1] != image_size or views.shape[-2] != image_size:
            views = F.interpolate(views, size=(image_size, image_size), mode="bilinear", antialias=True)
        images.append((views * 255).round().clamp(0, 255).to(torch.uint8))
        states.append(frame[OBS_STATE].float())
        actions.append(frame[ACTION].float())
        tasks.append(frame[TASK])
        episodes.append(int(frame["episode_index"]))
        if with_environment:
            environment.append(frame[OBS_ENV_STATE].float())
    return _assemble(
        torch.stack(images),
        torch.stack(states),
        torch.stack(actions),
        tasks,
        episodes,
        chunk_size,
        torch.stack(environment) if with_environment else None,
    )


def frames_from_episodes(
    episodes: Sequence[Episode], cameras: list[str], image_size: int, chunk_size: int
) -> FrameDataset:
    """Training frames from episodes recorded in memory (`run_episodes` with ``record``)."""
    images, states, actions, tasks, indices, environment = [], [], [], [], [], []
    for index, episode in enumerate(episodes):
        if episode.actions is None:
            raise ValueError(f"episode {index} was not recorded (run_episodes(..., record=...))")
        for step, observation in enumerate(episode.observations):
            views = torch.stack(
                [torch.from_numpy(np.asarray(observation[image_key(camera)])) for camera in cameras]
            ).permute(0, 3, 1, 2)  # [C, 3, H, W] uint8
            images.append(_resize_uint8(views, image_size))
            states.append(torch.as_tensor(observation[OBS_STATE], dtype=torch.float32))
            actions.append(torch.as_tensor(episode.actions[step], dtype=torch.float32))
            tasks.append(str(observation[TASK]))
            indices.append(index)
            if OBS_ENV_STATE in observation:
                environment.append(torch.as_tensor(observation[OBS_ENV_STATE], dtype=torch.float32))
    if not images:
        raise ValueError("no frames: every episode is empty")
    if environment and len(environment) != len(images):
        raise ValueError("only some of the episodes recorded observation.environment_state")
    return _assemble(
        torch.stack(images),
        torch.stack(states),
        torch.stack(actions),
        tasks,
        indices,
        chunk_size,
        torch.stack(environment) if environment else None,
    )


def _assemble(
    images: torch.Tensor,
    state: torch.Tensor,
    action: torch.Tensor,
    tasks: list[str],
    episodes: list[int],
    chunk_size: int,
    environment_state: torch.Tensor | None,
) -> FrameDataset:
    """A `FrameDataset` (chunks and statistics computed) from stacked per-frame arrays."""
    episode = torch.tensor(episodes)
    chunks, mask = _action_chunks(action, episode, chunk_size)
    return FrameDataset(
        images=images,
        state=state,
        action_chunks=chunks,
        chunk_mask=mask,
        task=tasks,
        episode=episode,
        state_mean=state.mean(0),
        state_std=state.std(0).clamp(min=1e-3),
        action_low=action.min(0).values,
        action_high=torch.maximum(action.max(0).values, action.min(0).values + 1e-3),
        environment_state=environment_state,
    )


def _select_episodes(dataset: object, episodes_per_task: int | None) -> list[int]:
    """The first ``episodes_per_task`` episode indices of every task (all when None)."""
    episodes = dataset.meta.episodes  # type: ignore[attr-defined]
    chosen: dict[str, list[int]] = {}
    for index, tasks in zip(episodes["episode_index"], episodes["tasks"], strict=True):
        task = tasks[0] if isinstance(tasks, list | tuple | np.ndarray) else tasks
        kept = chosen.setdefault(str(task), [])
        if episodes_per_task is None or len(kept) < episodes_per_task:
            kept.append(int(index))
    return sorted(index for indices in chosen.values() for index in indices)


def _action_chunks(
    actions: torch.Tensor, episode: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunks ``[F, K, D]`` of the next K actions within each episode, and their validity mask ``[F, K]``."""
    frames = len(actions)
    offsets = torch.arange(chunk_size)
    target = torch.arange(frames)[:, None] + offsets[None]
    last_of_episode = torch.zeros(frames, dtype=torch.long)
    for value in episode.unique():
        members = torch.nonzero(episode == value).squeeze(1)
        last_of_episode[members] = members.max()
    valid = target <= last_of_episode[:, None]
    clamped = torch.minimum(target, last_of_episode[:, None])
    return actions[clamped], valid


def resize_video(video: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, image_size, image_size, 3]``, resized as `load_frames` does."""
    if video.shape[1:3] == (image_size, image_size):
        return video
    return _resize_uint8(torch.from_numpy(video).permute(0, 3, 1, 2), image_size).permute(0, 2, 3, 1).numpy()


def _resize_uint8(views: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> uint8 ``[N, 3, image_size, image_size]`` (bilinear, antialiased)."""
    if views.shape[-2:] == (image_size, image_size):
        return views
    scaled = F.interpolate(views.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
    return scaled.round().clamp(0, 255).to(torch.uint8)
