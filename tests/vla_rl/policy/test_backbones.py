"""The pretrained backbones: ``small`` (packaged EfficientNet-Lite0 + MiniLM) and ``hf`` (a local model)."""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from vla_rl.policy.configuration_vla import VLAConfig
from vla_rl.policy.modeling_vla import VLAPolicy

os.environ["HF_HUB_OFFLINE"] = "1"  # everything loads from local directories

BATCH = 4
TASKS = ["pick up the red cube", "open the drawer", "pick up the red cube", "open the drawer"]
PRETRAINED = ("encoder.vision.", "encoder.text.")  # parameter names of the pretrained towers


def observation(config: VLAConfig, image_size: int = 48) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    obs: dict[str, Any] = {
        f"observation.images.{camera}": rng.integers(0, 256, (BATCH, image_size, image_size, 3), np.uint8)
        for camera in config.cameras
    }
    obs["observation.state"] = rng.normal(size=(BATCH, config.state_dim)).astype(np.float32)
    obs["task"] = TASKS
    return obs


def small_config(**overrides: Any) -> VLAConfig:
    values: dict[str, Any] = dict(
        backbone="small", image_size=64, hidden_dim=64, num_layers=2, num_heads=2, chunk_size=4
    )
    return VLAConfig(**(values | overrides))


@pytest.fixture(scope="module")
def small_policy() -> VLAPolicy:
    return VLAPolicy(small_config())


# ----------------------------------------------------------------------------------------------------
# small


def test_small_act_shapes(small_policy: VLAPolicy) -> None:
    config = small_policy.config
    actions, tokens, log_probs = small_policy.act(observation(config))
    assert actions.shape == (BATCH, config.chunk_size, config.action_dim)
    assert tokens.shape == log_probs.shape == (BATCH, config.tokens_per_chunk)
    assert torch.isfinite(log_probs).all()
    inputs = small_policy.processor(observation(config))
    tokens_per_camera = config.image_token_grid**2
    assert small_policy.encode(inputs).shape == (
        BATCH,
        len(config.cameras) * tokens_per_camera + 2,
        config.hidden_dim,
    )
    # MiniLM's WordPiece tokenizer: [CLS] ... [SEP] then padding to max_text_tokens.
    assert inputs["text_ids"].shape == (BATCH, config.max_text_tokens)
    assert inputs["text_ids"][0, 0].item() == small_policy.processor.text_tokenizer.cls_token_id


def test_small_without_the_state_has_no_state_token_and_ignores_it() -> None:
    policy = VLAPolicy(small_config(use_state=False)).eval()
    inputs = policy.processor(observation(policy.config))
    with torch.no_grad():
        tokens = policy.encode(inputs)
        assert tokens.shape[1] == len(policy.config.cameras) * policy.config.image_token_grid**2 + 1
        torch.testing.assert_close(
            policy.encode(dict(inputs, state=-inputs["state"])), tokens, rtol=0, atol=0
        )


def test_small_frozen_trains_only_projections_and_decoder(small_policy: VLAPolicy) -> None:
    trainable = {name for name, p in small_policy.named_parameters() if p.requires_grad}
    frozen = {name for name, p in small_policy.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(PRETRAINED) for name in frozen)
    assert not any(name.startswith(PRETRAINED) for name in trainable)
    assert {"encoder.image_projection.weight", "encoder.text_projection.weight", "head.weight"} <= trainable
    # EfficientNet-Lite0 without its classifier (3.37M) + MiniLM-L6 (22.7M) stay fixed.
    assert small_policy.num_parameters() - small_policy.num_parameters(trainable_only=True) > 26_000_000

    inputs = small_policy.processor(observation(small_policy.config))
    small_policy.log_prob(
        inputs, torch.zeros(BATCH, small_policy.config.tokens_per_chunk).long()
    ).sum().backward()
    assert small_policy.encoder.image_projection.weight.grad is not None
    assert small_policy.encoder.text_projection.weight.grad is not None
    small_policy.zero_grad(set_to_none=True)


def test_small_train_mode_keeps_frozen_towers_and_batchnorm_in_eval(small_policy: VLAPolicy) -> None:
    batch_norms = [m for m in small_policy.encoder.vision.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms
    running_mean = batch_norms[0].running_mean.clone()
    small_policy.train()
    try:
        assert small_policy.training and small_policy.blocks[0].training
        assert small_policy.encoder.training and small_policy.encoder.image_projection.training
        assert not small_policy.encoder.vision.training and not small_policy.encoder.text.training
        assert not any(m.training for m in batch_norms)
        small_policy.logits(small_policy.processor(observation(small_policy.config)))
        assert torch.equal(batch_norms[0].running_mean, running_mean)
    finally:
        small_policy.eval()


def test_small_caches_one_embedding_per_instruction(small_policy: VLAPolicy) -> None:
    encoder = small_policy.encoder
    encoder._text_cache.clear()
    inputs = small_policy.processor(observation(small_policy.config))
    cached = encoder._instruction_embedding(inputs["text_ids"], inputs["text_mask"])
    assert len(encoder._text_cache) == len(set(TASKS))
    with torch.no_grad():
        fresh = encoder._embed_text(inputs["text_ids"], inputs["text_mask"])
    torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached[0], cached[2])
    assert not torch.allclose(cached[0], cached[1])
    small_policy.load_state_dict(small_policy.state_dict())  # new weights: stale embeddings are dropped
    assert not encoder._text_cache
    encoder._instruction_embedding(inputs["text_ids"], inputs["text_mask"])
    small_policy.to(torch.float32)  # so is a move to another device or dtype
    assert not encoder._text_cache


def test_small_checkpoint_round_trip_gives_identical_actions(small_policy: VLAPolicy, tmp_path: Path) -> None:
    obs = observation(small_policy.config)
    small_policy.save_pretrained(tmp_path / "policy")
    loaded = VLAPolicy.from_pretrained(tmp_path / "policy").eval()
    expected, expected_tokens, _ = small_policy.act(obs, temperature=0.0)
    actions, tokens, _ = loaded.act(obs, temperature=0.0)
    assert torch.equal(tokens, expected_tokens)
    assert torch.equal(actions, expected)


def test_small_unfrozen_trains_the_towers_but_keeps_batchnorm_statistics() -> None:
    policy = VLAPolicy(small_config(freeze_backbone=False, image_size=32)).train()
    assert all(p.requires_grad for p in policy.parameters())
    assert policy.encoder.text.training
    assert not any(m.training for m in policy.encoder.vision.modules() if isinstance(m, nn.BatchNorm2d))
    inputs = policy.processor(observation(policy.config))
    policy.log_prob(inputs, torch.zeros(BATCH, policy.config.tokens_per_chunk).long()).sum().backward()
    text_grad = policy.encoder.text.embeddings.word_embeddings.weight.grad
    assert text_grad is not None and text_grad.abs().sum() > 0
    assert policy.encoder.vision.model._conv_stem.weight.grad is not None
    assert not policy.encoder._text_cache


# ----------------------------------------------------------------------------------------------------
# hf

WORDS = ["pick", "up", "the", "red", "cube", "open", "drawer"]


def save_tiny_clip(directory: Path) -> None:
    """A randomly initialized CLIP (hidden 32, 2 layers, 32 px images, 8 px patches) and its tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=tower
        | dict(
            vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1
        ),
        vision_config=tower | dict(image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    CLIPImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(directory)


def save_tiny_siglip(directory: Path) -> None:
    """A randomly initialized SigLIP (no class token) with a WordPiece tokenizer; no image processor."""
    from transformers import BertTokenizer, SiglipConfig, SiglipModel

    vocab = {word: index for index, word in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = SiglipConfig(
        text_config=tower
        | dict(
            vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=2, eos_token_id=3, pad_token_id=0
        ),
        vision_config=tower | dict(image_size=32, patch_size=8),
    )
    SiglipModel(config).save_pretrained(directory)
    BertTokenizer(vocab=vocab).save_pretrained(directory)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    save_tiny_clip(root / "clip")
    save_tiny_siglip(root / "siglip")
    return {"clip": root / "clip", "siglip": root / "siglip"}


def hf_config(path: Path, **overrides: Any) -> VLAConfig:
    values: dict[str, Any] = dict(
        backbone="hf", backbone_path=str(path), image_size=48, hidden_dim=32, num_layers=1, num_heads=2
    )
    return VLAConfig(**(values | overrides))


@pytest.mark.parametrize("model", ["clip", "siglip"])
def test_hf_act_shapes(hf_dirs: dict[str, Path], model: str) -> None:
    policy = VLAPolicy(hf_config(hf_dirs[model])).eval()
    config = policy.config
    actions, tokens, log_probs = policy.act(observation(config), temperature=0.0)
    assert actions.shape == (BATCH, config.chunk_size, config.action_dim)
    assert tokens.shape == log_probs.shape == (BATCH, config.tokens_per_chunk)
    inputs = policy.processor(observation(config))
    assert policy.encode(inputs).shape == (BATCH, len(config.cameras) * 4 + 2, config.hidden_dim)
    # 48 px images are resized to the model's 32 px: a 4 x 4 patch grid, pooled to 2 x 2.
    features = policy.encoder.vision(inputs["images"][:, 0])
    assert features.shape == (BATCH, 32, 4, 4)
    assert {name for name, p in policy.named_parameters() if not p.requires_grad} == {
        name for name, _ in policy.named_parameters() if name.startswith(PRETRAINED)
    }


def test_hf_reads_image_normalization_from_the_directory(hf_dirs: dict[str, Path]) -> None:
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    clip = VLAPolicy(hf_config(hf_dirs["clip"])).encoder.vision
    assert clip.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert clip.std.flatten().tolist() == [0.25, 0.25, 0.25]
    # Without a preprocessor_config.json (this SigLIP directory) the CLIP mean / std are the default.
    siglip = VLAPolicy(hf_config(hf_dirs["siglip"])).encoder.vision
    assert torch.allclose(siglip.mean.flatten(), torch.tensor(OPENAI_CLIP_MEAN))
    assert torch.allclose(siglip.std.flatten(), torch.tensor(OPENAI_CLIP_STD))


def test_hf_checkpoint_round_trip_gives_identical_actions(hf_dirs: dict[str, Path], tmp_path: Path) -> None:
    policy = VLAPolicy(hf_config(hf_dirs["clip"], freeze_backbone=False)).eval()
    obs = observation(policy.config)
    policy.save_pretrained(tmp_path / "policy")
    loaded = VLAPolicy.from_pretrained(tmp_path / "policy").eval()
    expected, _, _ = policy.act(obs, temperature=0.0)
    actions, _, _ = loaded.act(obs, temperature=0.0)
    assert torch.equal(actions, expected)


def test_hf_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'} is not a directory"):
        VLAPolicy(hf_config(tmp_path / "absent"))


def test_hf_directory_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no config.json"):
        VLAPolicy(hf_config(tmp_path))


def test_hf_unknown_or_broken_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_model"}))
    with pytest.raises(ValueError, match=f"cannot read the model config in {tmp_path}: .*no_such_model"):
        VLAPolicy(hf_config(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"cannot read the model config in {tmp_path}"):
        VLAPolicy(hf_config(tmp_path))


def test_hf_text_only_model_is_a_clear_error(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"{tmp_path} holds a 'bert' model .*vision and text towers"):
        VLAPolicy(hf_config(tmp_path))


def test_hf_missing_weights_or_tokenizer_is_a_clear_error(hf_dirs: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(hf_dirs["siglip"], local_files_only=True)
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"cannot load the model in {tmp_path}: .*model.safetensors"):
        VLAPolicy(hf_config(tmp_path))
    AutoModel.from_config(config).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no tokenizer"):
        VLAPolicy(hf_config(tmp_path))


def test_hf_text_longer_than_the_text_tower_is_a_clear_error(hf_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="max_text_tokens=64 exceeds the 16 positions"):
        VLAPolicy(hf_config(hf_dirs["siglip"], max_text_tokens=64))
