"""Trajectory -> one latent vector: sample a fixed number of frames, encode the clip, cache the result.

Frame sampling follows the SRPO reference implementation (siiRL, ``siirl/utils/embodied/video_emb.py``,
``VideoEmbeddingModel.get_embeddings``): an episode with at least F frames is sampled at F indices evenly
spaced from the first to the last frame, truncated to integers; a shorter episode is padded by tiling its
frame indices cyclically (``0, 1, ..., L-1, 0, 1, ...``). The reference samples F = 64 frames (the
clip length V-JEPA 2 ViT-g/384 was trained on), which is our default too.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from vla_rl.data.trajectory import Trajectory
from vla_rl.world_model.base import ClipEncoder

DEFAULT_NUM_FRAMES = 64


def sample_frame_indices(length: int, num_frames: int) -> np.ndarray:
    """Indices of the frames that represent an episode of ``length`` frames.

    Args:
        length: frames in the episode (L >= 1).
        num_frames: frames to sample (F >= 1).

    Returns:
        int64 ``[F]``: evenly spaced over ``[0, L - 1]`` (first and last included, truncated to integers)
        when L >= F; otherwise ``0, 1, ..., L - 1`` repeated cyclically up to F entries.

    """
    if length < 1:
        raise ValueError(f"an episode needs at least one frame, got length={length}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if length >= num_frames:
        return np.linspace(0, length - 1, num_frames).astype(np.int64)
    return np.arange(num_frames, dtype=np.int64) % length


class TrajectoryEmbedder:
    """Embeds videos (or trajectories' frames) with a `ClipEncoder`, in batches, with an LRU cache.

    The cache key is a BLAKE2b digest of the sampled clip (its shape and bytes), so embedding the same
    frames again, within one call or across calls, does not call the encoder.

    With ``relative_to_start`` a video's embedding is its clip's latent minus the latent of its first
    frame alone: what changed during the episode, with what stays constant in it (the scene's layout)
    largely removed. Rollouts of one GRPO group share their first frame, so that costs one encoded frame
    per group. This is our variant, not part of SRPO's published rule.
    """

    def __init__(
        self,
        encoder: ClipEncoder,
        num_frames: int = DEFAULT_NUM_FRAMES,
        batch_size: int = 8,
        cache_size: int = 1024,
        relative_to_start: bool = False,
    ) -> None:
        """Wrap ``encoder``.

        Args:
            encoder: clips uint8 ``[N, F, H, W, 3]`` -> latents float32 ``[N, D]``.
            num_frames: frames sampled per video (F).
            batch_size: clips per call to the encoder.
            cache_size: embeddings kept (least recently used ones are evicted); 0 disables the cache.
            relative_to_start: subtract each video's first-frame latent from its embedding.

        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.encoder = encoder
        self.num_frames = num_frames
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.relative_to_start = relative_to_start
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    @property
    def embedding_dim(self) -> int:
        """D, the size of one embedding."""
        return self.encoder.embedding_dim

    def embed(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """Trajectories -> float32 ``[N, D]`` (each from its ``frames`` ``[T + 1, H, W, 3]``)."""
        return self.embed_videos([trajectory.frames for trajectory in trajectories])

    def embed_videos(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        """Videos, each uint8 ``[L, H, W, 3]`` (L may differ, H and W may not) -> float32 ``[N, D]``."""
        if not videos:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        clips = [self._sample(i, video) for i, video in enumerate(videos)]
        if any(clip.shape != clips[0].shape for clip in clips):
            shapes = sorted({str(clip.shape[1:]) for clip in clips})
            raise ValueError(f"videos must share one frame size, got {', '.join(shapes)}")
        embeddings = self._embed_clips(clips)
        if self.relative_to_start:
            embeddings -= self._embed_clips([np.ascontiguousarray(clip[:1]) for clip in clips])
        return embeddings

    def _embed_clips(self, clips: list[np.ndarray]) -> np.ndarray:
        """Clips, each uint8 ``[F, H, W, 3]`` of one shape -> float32 ``[N, D]``, through the cache."""
        keys = [self._key(clip) for clip in clips]
        embeddings: dict[bytes, np.ndarray] = {}
        missing: dict[bytes, np.ndarray] = {}
        for key, clip in zip(keys, clips, strict=True):
            if key in self._cache:
                self._cache.move_to_end(key)
                embeddings[key] = self._cache[key]
            else:
                missing[key] = clip
        missing_keys = list(missing)
        for start in range(0, len(missing_keys), self.batch_size):
            batch_keys = missing_keys[start : start + self.batch_size]
            latents = self._encode(np.stack([missing[key] for key in batch_keys]))
            for key, latent in zip(batch_keys, latents, strict=True):
                embeddings[key] = latent
                self._remember(key, latent)
        return np.stack([embeddings[key] for key in keys])

    def _sample(self, index: int, video: np.ndarray) -> np.ndarray:
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(
                f"video {index} must be uint8 [L, H, W, 3], got {video.dtype} {list(video.shape)}"
            )
        return np.ascontiguousarray(video[sample_frame_indices(len(video), self.num_frames)])

    @staticmethod
    def _key(clip: np.ndarray) -> bytes:
        digest = hashlib.blake2b(str(clip.shape).encode(), digest_size=16)
        digest.update(clip.data)
        return digest.digest()

    def _encode(self, clips: np.ndarray) -> np.ndarray:
        latents = np.asarray(self.encoder.embed_clips(clips))
        expected = (len(clips), self.embedding_dim)
        if latents.shape != expected:
            raise ValueError(f"the encoder returned latents of shape {latents.shape}, expected {expected}")
        return latents.astype(np.float32, copy=False)

    def _remember(self, key: bytes, latent: np.ndarray) -> None:
        if self.cache_size == 0:
            return
        self._cache[key] = latent.copy()
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
