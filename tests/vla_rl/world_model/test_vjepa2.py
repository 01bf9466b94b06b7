import json
import re

import numpy as np
import pytest
import torch
from transformers import VJEPA2Config, VJEPA2Model, VJEPA2VideoProcessor

from vla_rl.world_model import load_clip_encoder
from vla_rl.world_model.vjepa2 import VJEPA2ClipEncoder

TINY = dict(
    crop_size=32,
    patch_size=8,
    frames_per_clip=4,
    tubelet_size=2,
    hidden_size=32,
    num_attention_heads=2,
    num_hidden_layers=2,
    pred_hidden_size=32,
    pred_num_attention_heads=2,
    pred_num_hidden_layers=1,
    num_pooler_layers=1,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(directory, model): a tiny random V-JEPA 2 saved with its video processor."""
    torch.manual_seed(0)
    model = VJEPA2Model(VJEPA2Config(**TINY)).eval()
    directory = tmp_path_factory.mktemp("vjepa2")
    model.save_pretrained(directory)
    VJEPA2VideoProcessor(crop_size=32).save_pretrained(directory)
    return directory, model


def clips(count=3, frames=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, frames, 48, 40, 3), dtype=np.uint8)


def test_round_trip_matches_the_model_on_processed_frames(saved):
    directory, model = saved
    encoder = VJEPA2ClipEncoder(directory, batch_size=2)
    assert encoder.embedding_dim == 32
    videos = clips()
    latents = encoder.embed_clips(videos)
    assert latents.shape == (3, 32) and latents.dtype == np.float32
    # 5 frames -> 6 (the last repeated) for tubelets of 2; then the processor and the encoder, mean-pooled.
    padded = np.concatenate([videos, videos[:, -1:]], axis=1)
    pixels = VJEPA2VideoProcessor(crop_size=32)(list(padded), return_tensors="pt")["pixel_values_videos"]
    assert pixels.shape == (3, 6, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixels, skip_predictor=True).last_hidden_state.mean(dim=1).numpy()
    np.testing.assert_allclose(latents, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(encoder.embed_clips(padded), latents)
    assert encoder.embed_clips(videos[:0]).shape == (0, 32)
    with pytest.raises(ValueError, match=r"uint8 array \[N, F, H, W, 3\]"):
        encoder.embed_clips(videos.astype(np.float32))


def test_without_a_processor_file_the_defaults_for_the_crop_size_apply(saved, tmp_path):
    directory, _ = saved
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    videos = clips(2, 2)
    np.testing.assert_array_equal(
        load_clip_encoder("vjepa2", tmp_path).embed_clips(videos),
        VJEPA2ClipEncoder(directory).embed_clips(videos),
    )


def test_missing_or_wrong_directories_get_clear_errors(saved, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{tmp_path / 'absent'} does not exist: expected a local V-JEPA 2")
    ):
        VJEPA2ClipEncoder(tmp_path / "absent")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{tmp_path} has no config.json: expected a local V-JEPA 2")
    ):
        VJEPA2ClipEncoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32}))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} holds a model of type 'vit', not V-JEPA 2")):
        VJEPA2ClipEncoder(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"is not a JSON object: expected .* model_type 'vjepa2'"):
        VJEPA2ClipEncoder(tmp_path)
    directory, _ = saved
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    for name in ("config.json", "model.safetensors"):
        (mismatched / name).write_bytes((directory / name).read_bytes())
    VJEPA2VideoProcessor(crop_size=64).save_pretrained(mismatched)
    with pytest.raises(ValueError, match="the model expects 32 x 32 frames"):
        VJEPA2ClipEncoder(mismatched)
