import hashlib

import pytest
import torch

from vla_rl.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_and_replacement(tmp_path):
    state = {"weight": torch.arange(6.0).view(2, 3).T, "step": torch.tensor(3)}  # a non-contiguous tensor
    save_checkpoint(tmp_path / "model", state, '{"width": 3}')
    config_text, loaded = load_checkpoint(tmp_path / "model")
    assert config_text == '{"width": 3}\n'
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    save_checkpoint(tmp_path / "model", {"weight": torch.zeros(1)}, "{}")
    assert load_checkpoint(tmp_path / "model")[1]["weight"].shape == (1,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or old copy left behind


def test_damaged_or_foreign_files_are_rejected_without_unpickling(tmp_path):
    save_checkpoint(tmp_path / "model", {"weight": torch.ones(4)}, "{}")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(ValueError, match="does not match its SHA-256: the file is truncated or altered"):
        load_checkpoint(tmp_path / "model")
    # A pickle with a matching checksum is still not loaded: only safetensors are read.
    torch.save({"weight": torch.ones(4)}, weights)
    (tmp_path / "model" / "model.safetensors.sha256").write_text(
        hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    with pytest.raises(ValueError, match=r"cannot read .*model\.safetensors"):
        load_checkpoint(tmp_path / "model")
    weights.unlink()
    with pytest.raises(
        FileNotFoundError, match=r"not a vla-rl world model checkpoint: model\.safetensors is missing"
    ):
        load_checkpoint(tmp_path / "model", kind="world model")
