"""The checkpoint format of every model: ``model.safetensors``, its SHA-256 and a JSON ``config.json``.

A checkpoint directory is written to a staging folder and swapped in whole, so a crash leaves either
the old checkpoint or the new one. Loading checks the checksum before reading any tensor and never
unpickles anything: weights are safetensors and the config is returned as text for the caller's
checked JSON parser.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vla_rl.io import write_text_atomic

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKSUM_FILE = "model.safetensors.sha256"


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], config_json: str) -> None:
    """Write ``config.json``, ``model.safetensors`` and its SHA-256; replaces ``directory`` atomically.

    Args:
        directory: the checkpoint folder; an existing one is replaced whole.
        state_dict: the tensors to save (moved to CPU and made contiguous here).
        config_json: the model's configuration as JSON text.

    """
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    save_file(state, str(staging / WEIGHTS_FILE))
    write_text_atomic(staging / CHECKSUM_FILE, _sha256(staging / WEIGHTS_FILE) + "\n")
    write_text_atomic(staging / CONFIG_FILE, config_json + "\n")
    previous = directory.with_name(directory.name + ".old")
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    shutil.rmtree(previous, ignore_errors=True)


def load_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu", kind: str = "model"
) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a `save_checkpoint` directory; a missing, truncated or altered file is a clear error.

    Args:
        directory: the checkpoint folder.
        map_location: device the tensors are loaded to.
        kind: what the checkpoint holds, for error messages (``policy``, ``world model``).

    Returns:
        The text of ``config.json`` and the state dict.

    Raises:
        FileNotFoundError: a checkpoint file is missing.
        ValueError: the weights do not match their SHA-256 or are not readable safetensors.

    """
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE, CHECKSUM_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a vla-rl {kind} checkpoint: {name} is missing")
    config_text = (directory / CONFIG_FILE).read_text()
    expected = (directory / CHECKSUM_FILE).read_text().strip()
    if _sha256(directory / WEIGHTS_FILE) != expected:
        raise ValueError(
            f"{directory / WEIGHTS_FILE} does not match its SHA-256: the file is truncated or altered"
        )
    try:
        state = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {directory / WEIGHTS_FILE}: {error}") from None
    return config_text, state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
