"""Smoke test of benchmarks/env_throughput.py: a ``--quick`` run finishes and writes well-formed JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "env_throughput.py"


def test_quick_run_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "env_throughput.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output", str(output)],
        cwd=SCRIPT.parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| Ratio |" in completed.stdout

    report = json.loads(output.read_text())
    keys = {row["key"] for row in report["results"]}
    assert {"raw", "batched/4/default", "batched/4/1", "sync/2", "async/2"} <= keys
    assert {"render/64/env", "render/64/bare1", "render/64/bare2"} <= keys
    assert {"disabled/64/0", "disabled/64/1"} <= keys
    for row in report["results"]:
        rates = [
            row[k]["best"] for k in ("env_steps_per_s", "physics_steps_per_s", "frames_per_s") if k in row
        ]
        assert rates and all(rate > 0 for rate in rates), row
    targets = [ratio for ratio in report["ratios"] if ratio["target"] is not None]
    assert len(targets) == 3  # vs raw mj_step, vs AsyncVectorEnv, vs the bare render loop
    for ratio in report["ratios"]:
        assert ratio["value"] > 0
    for ratio in targets:
        assert ratio["target"] > 0 and isinstance(ratio["met"], bool)
