import numpy as np
import pytest

from tests.vla_rl.rewards.fakes import CountingEncoder, constant_frames, make_trajectory
from vla_rl.rewards.embedding import TrajectoryEmbedder, sample_frame_indices


def test_long_episode_is_sampled_evenly_from_first_to_last_frame() -> None:
    # linspace(0, 9, 4) = 0, 3, 6, 9
    assert sample_frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    # linspace(0, 7, 3) = 0, 3.5, 7 -> truncated to 0, 3, 7 (siiRL: np.linspace(..., dtype=int))
    assert sample_frame_indices(8, 3).tolist() == [0, 3, 7]
    assert sample_frame_indices(5, 5).tolist() == [0, 1, 2, 3, 4]


def test_short_episode_is_padded_by_cyclic_repetition() -> None:
    # siiRL: np.resize(np.arange(3), 8)
    assert sample_frame_indices(3, 8).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert sample_frame_indices(1, 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(("length", "num_frames"), [(0, 4), (5, 0)])
def test_sampling_rejects_empty_sizes(length: int, num_frames: int) -> None:
    with pytest.raises(ValueError):
        sample_frame_indices(length, num_frames)


def test_embedder_passes_sampled_clips_in_batches() -> None:
    encoder = CountingEncoder()
    embedder = TrajectoryEmbedder(encoder, num_frames=4, batch_size=2)
    trajectories = [make_trajectory(constant_frames(10 * i, length=3 + i), success=True) for i in range(5)]
    embeddings = embedder.embed(trajectories)
    assert embeddings.shape == (5, 3)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings[:, 0], [10 * i / 255 for i in range(5)], rtol=1e-6)
    assert [len(clips) for clips in encoder.calls] == [2, 2, 1]
    assert all(clips.shape[1:] == (4, 8, 8, 3) for clips in encoder.calls)


def test_cache_hit_does_not_call_the_encoder_again() -> None:
    encoder = CountingEncoder()
    embedder = TrajectoryEmbedder(encoder, num_frames=4)
    first = make_trajectory(constant_frames(10), success=True)
    second = make_trajectory(constant_frames(20), success=False)
    before = embedder.embed([first, second])
    assert encoder.clips_encoded == 2
    # Equal frames in a new Trajectory object hit the cache too (the key is the content).
    again = embedder.embed([second, make_trajectory(constant_frames(10), success=True)])
    assert encoder.clips_encoded == 2
    np.testing.assert_array_equal(again, before[::-1])


def test_identical_videos_in_one_call_are_encoded_once() -> None:
    encoder = CountingEncoder()
    embedder = TrajectoryEmbedder(encoder, num_frames=4)
    embeddings = embedder.embed_videos([constant_frames(7), constant_frames(7), constant_frames(9)])
    assert encoder.clips_encoded == 2
    np.testing.assert_array_equal(embeddings[0], embeddings[1])


def test_cache_evicts_the_least_recently_used() -> None:
    encoder = CountingEncoder()
    embedder = TrajectoryEmbedder(encoder, num_frames=2, cache_size=2)
    a, b, c = constant_frames(1), constant_frames(2), constant_frames(3)
    embedder.embed_videos([a])
    embedder.embed_videos([b])
    embedder.embed_videos([a])  # hit: a becomes the most recent
    embedder.embed_videos([c])  # evicts b
    assert encoder.clips_encoded == 3
    embedder.embed_videos([a])
    assert encoder.clips_encoded == 3
    embedder.embed_videos([b])
    assert encoder.clips_encoded == 4


def test_empty_batch_gives_zero_rows() -> None:
    assert TrajectoryEmbedder(CountingEncoder()).embed([]).shape == (0, 3)


def test_embedder_rejects_bad_videos() -> None:
    embedder = TrajectoryEmbedder(CountingEncoder(), num_frames=2)
    with pytest.raises(ValueError, match="share one frame size"):
        embedder.embed_videos([constant_frames(1, size=8), constant_frames(1, size=16)])
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed_videos([constant_frames(1).astype(np.float32)])
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed_videos([constant_frames(1)[..., :1]])


def test_embedder_checks_the_encoder_output_shape() -> None:
    class WrongEncoder(CountingEncoder):
        def embed_clips(self, clips: np.ndarray) -> np.ndarray:
            return np.zeros((len(clips), 4), dtype=np.float32)

    with pytest.raises(ValueError, match="expected"):
        TrajectoryEmbedder(WrongEncoder()).embed_videos([constant_frames(1)])


def test_relative_to_start_subtracts_the_first_frame_latent() -> None:
    encoder = CountingEncoder()
    embedder = TrajectoryEmbedder(encoder, num_frames=4, relative_to_start=True)
    # Grey levels 40, 60, 80, 100 over 4 frames: clip mean 70, first frame 40 -> (70 - 40) / 255.
    ramp = np.stack([constant_frames(level, length=1)[0] for level in (40, 60, 80, 100)])
    # The same ramp shifted by 100 grey levels (another "layout"): the same change, the same embedding.
    shifted = ramp + np.uint8(100)
    embeddings = embedder.embed_videos([ramp, shifted, ramp + np.uint8(0)])
    np.testing.assert_allclose(embeddings[:, 0], [30 / 255] * 3, rtol=1e-6)
    # Two distinct clips and two distinct first frames; the third video hits the cache for both.
    assert encoder.clips_encoded == 4
    assert sorted(clips.shape[1] for clips in encoder.calls) == [1, 4]
    plain = TrajectoryEmbedder(CountingEncoder(), num_frames=4).embed_videos([ramp, shifted])
    np.testing.assert_allclose(plain[:, 0], [70 / 255, 170 / 255], rtol=1e-6)
