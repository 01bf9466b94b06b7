"""Smoke test of benchmarks/libero_throughput.py: a ``--quick`` run finishes and writes well-formed JSON.

Timings are not asserted (they are the benchmark's output, not a test's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("libero", reason="LIBERO is an optional extra: pip install -e .[libero]")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "libero_throughput.py"


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "libero_throughput.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output", str(output)],
        cwd=SCRIPT.parents[1],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| Ratio |" in completed.stdout

    report = json.loads(output.read_text())
    assert {row["key"] for row in report["results"]} == {"libero/1/64", "ours/1/64"}
    for row in report["results"]:
        assert row["best"] > 0 and len(row["env_steps_per_s"]) == 1, row
    (ratio,) = report["ratios"]
    assert ratio["value"] > 0 and ratio["target"] == 1.5 and isinstance(ratio["met"], bool)
