"""LIBERO imports without prompting: `sim.libero.install` writes its config.yaml and links the assets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("libero", reason="LIBERO is an optional extra: pip install -e .[libero]")

from sim.libero.install import CONFIG_KEYS, ensure_libero_ready, libero_package_dir


def test_config_is_written_once_with_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path / "config"))
    changes = ensure_libero_ready()
    config = tmp_path / "config" / "config.yaml"
    assert f"wrote {config}" in changes
    values = dict(line.split(": ", 1) for line in config.read_text().splitlines())
    assert tuple(values) == CONFIG_KEYS
    for key in ("benchmark_root", "bddl_files", "init_states", "assets"):
        assert Path(values[key]).is_dir(), key
    assert (libero_package_dir() / "assets" / "scenes").is_dir()
    assert ensure_libero_ready() == []  # idempotent


def test_libero_imports_with_stdin_closed(tmp_path: Path) -> None:
    code = (
        "from sim.libero.install import ensure_libero_ready; ensure_libero_ready(); "
        "from libero.libero import get_libero_path; print(get_libero_path('bddl_files'))"
    )
    environment = {key: value for key, value in os.environ.items() if key != "LIBERO_CONFIG_PATH"}
    environment["HOME"] = str(tmp_path)  # no ~/.libero to fall back on
    result = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("bddl_files")
    assert not (tmp_path / ".libero").exists()
