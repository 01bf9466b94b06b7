"""benchmarks/srpo_vs_binary.py on the smoke experiment: arms as parallel processes, read back into JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "srpo_vs_binary.py"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,  # the smoke demonstrations go to data/ under it
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_parallel_arms_run_as_processes_and_are_reported(tmp_path: Path) -> None:
    results = tmp_path / "results"
    completed = run(
        tmp_path,
        "--seeds",
        "0",
        "--parallel",
        "2",
        "--work-dir",
        str(tmp_path / "work"),
        "--results",
        str(results),
        "experiment=smoke",
        "rl.steps=2",
        "eval.videos=0",
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    assert "arm srpo/seed0 started" in completed.stdout and "arm binary/seed0 started" in completed.stdout

    report = json.loads((results / "srpo_vs_binary.json").read_text())
    assert set(report["arms"]) == {"srpo/seed0", "binary/seed0"}
    assert report["settings"]["parallel"] == 2
    for name, arm in report["arms"].items():
        reward, seed = name.split("/")
        assert list(arm["curve"]) == ["0", "1", "2"]  # the SFT start, then eval_every=1
        assert arm["curve"]["0"] == report["sft_success"]  # the shared start's evaluation, copied in
        assert arm["wall_s"] > 0 and arm["time_s"]["rollout"] > 0
        console = (tmp_path / "work" / reward / seed / "console.log").read_text()
        assert f"reward {reward}" in console  # the arm's own process ran with its reward
    assert (results / "srpo_vs_binary.png").stat().st_size > 0


def test_parallel_must_be_positive(tmp_path: Path) -> None:
    completed = run(tmp_path, "--parallel", "0")
    assert completed.returncode == 2
    assert "--parallel must be >= 1, got 0" in completed.stderr
