import numpy as np
import pytest

from vla_rl.rewards.pixel import PixelClipEncoder


def test_constant_clip_embeds_to_its_grey_level() -> None:
    encoder = PixelClipEncoder(size=4)
    clips = np.full((2, 3, 12, 12, 3), 51, dtype=np.uint8)
    latents = encoder.embed_clips(clips)
    assert encoder.embedding_dim == 48
    assert latents.shape == (2, 48)
    assert latents.dtype == np.float32
    np.testing.assert_allclose(latents, 0.2, rtol=1e-6)  # 51 / 255


def test_area_downsampling_and_mean_over_frames() -> None:
    # Frame 0: a one-pixel 0/255 checkerboard; each 2x2 block averages to 127.5 -> 0.5.
    # Frame 1: left half 0, right half 255 -> columns 0-1 of the 4x4 result are 0, columns 2-3 are 1.
    # Mean over the two frames: 0.25 on the left, 0.75 on the right.
    checkerboard = ((np.indices((8, 8)).sum(axis=0) % 2) * 255).astype(np.uint8)
    halves = np.zeros((8, 8), dtype=np.uint8)
    halves[:, 4:] = 255
    clip = np.stack([checkerboard, halves])[None, :, :, :, None].repeat(3, axis=-1)
    latent = PixelClipEncoder(size=4).embed_clips(clip).reshape(4, 4, 3)
    np.testing.assert_allclose(latent[:, :2], 0.25, atol=1e-6)
    np.testing.assert_allclose(latent[:, 2:], 0.75, atol=1e-6)


def test_pixel_encoder_rejects_bad_clips() -> None:
    encoder = PixelClipEncoder()
    with pytest.raises(ValueError, match="uint8"):
        encoder.embed_clips(np.zeros((1, 2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encoder.embed_clips(np.zeros((2, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="F >= 1"):
        encoder.embed_clips(np.zeros((1, 0, 8, 8, 3), dtype=np.uint8))
